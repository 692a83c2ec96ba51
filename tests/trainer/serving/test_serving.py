"""Serving export: every model as a torch-only artefact that a process without denoisrec, TorchRec or FBGEMM
loads and that scores the test split as ``denoisrec predict`` does: TorchScript for every model, the
torch.export program for DeepFM (FM + DNN; its export costs ~12 s of CPU per model, so one model here).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from denoisrec.models import ModelSpec, save_model_file
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.serving.export import FORMATS, export_serving
from denoisrec.trainer.serving.predict import predict_file

MODELS = {
    "dlrm": {"dense_arch": [8], "over_arch": [8, 1]},
    "dcnv2": {"low_rank": 4, "mlp": [8]},
    "deepfm": {"mlp": [8], "first_order": "fused"},
    "fm": {},  # the first-order weights in their own tables (the default); deepfm, widedeep: in the embedding tables
    "widedeep": {"mlp": [8], "first_order": "fused"},
}


def _dirty_test_split(tiny_data: Path, out: Path) -> Path:
    """The test split with ids outside their tables (negative and huge, single and multi-hot) and NaN/inf
    dense values, so the artefacts' OOV hashing and imputation are exercised.
    """
    t = pq.read_table(next((tiny_data / "test").glob("*.parquet")))
    n = t.num_rows
    item = t.column("item_id").to_numpy().copy()
    item[::7] = np.arange(len(item[::7])) * 1_000_003 + 200  # past the 200-row table
    item[3::11] = -5
    dur = t.column("duration").to_numpy().copy()
    dur[::13] = np.nan
    dur[5::17] = np.inf
    tags = t.column("item_tags").combine_chunks()
    vals = tags.values.to_numpy().copy()
    vals[::5] = 64 + np.arange(len(vals[::5]))
    tags = pa.ListArray.from_arrays(tags.offsets, pa.array(vals))
    t = t.set_column(t.schema.get_field_index("item_id"), "item_id", pa.array(item))
    t = t.set_column(t.schema.get_field_index("duration"), "duration", pa.array(dur, pa.float32()))
    t = t.set_column(t.schema.get_field_index("item_tags"), "item_tags", tags)
    assert pc.sum(pc.is_nan(t.column("duration"))).as_py() > 0 and n == 1500
    path = out / "test.parquet"
    pq.write_table(t, path, row_group_size=400)
    return path


def test_every_model_exports_and_serves_with_torch_alone(tiny_data: Path, tmp_path: Path) -> None:
    schema = DataSchema.load(str(tiny_data)).with_policies("hash", "impute").to_dict()
    schema["impute_value"] = 0.25
    data = _dirty_test_split(tiny_data, tmp_path)
    dirty, sizes = pq.read_table(data), {f["name"]: f["num_embeddings"] for f in schema["sparse"]}
    oov = {}  # ids outside their tables, counted here from the file: what predict must report as hashed
    for f, size in sizes.items():
        col = dirty.column(f).combine_chunks()
        ids = (col.values if pa.types.is_list(col.type) else col).to_numpy(zero_copy_only=False)
        if ((ids < 0) | (ids >= size)).any():
            oov[f] = int(((ids < 0) | (ids >= size)).sum())
    assert set(oov) == {"item_id", "item_tags"} and oov["item_id"] == 215 + 137 - 20  # i % 7 == 0 or i % 11 == 3
    want, artefacts = {}, []
    for name, params in MODELS.items():
        spec = ModelSpec(
            name, [(f["name"], f["num_embeddings"]) for f in schema["sparse"]], len(schema["dense"]), 8, params=params
        )
        torch.manual_seed(1)
        state = spec.build(torch.device("cpu")).state_dict()
        for k, v in state.items():
            if ".w_" in k:  # the first-order tables start at zero: give them values to check
                v.uniform_(-0.2, 0.2)
            elif ".t_" in k and name in ("deepfm", "widedeep"):  # fused: the first-order rows, columns 8-11
                v[:, 8:].uniform_(-0.2, 0.2)
        model_file = tmp_path / name / "model.pt"
        save_model_file(str(model_file), spec, state, schema)
        report = predict_file(str(model_file), str(data), str(tmp_path / name / "scores.parquet"))
        assert report["oov_hashed"] == oov, (report["oov_hashed"], oov)
        want[name] = pq.read_table(tmp_path / name / "scores.parquet")
        for fmt in FORMATS if name == "deepfm" else ("torchscript",):
            r = export_serving(str(model_file.parent), fmt, out=str(tmp_path / name / fmt))
            assert r["probe_max_abs_diff"] <= 1e-5
            artefacts.append((name, r["artefact"]))

    # Online serving: one row, and bags of 0 or 1 ids, are not specialised away by torch.export.
    from denoisrec.trainer.serving.export import load_artefact

    ts, ep = (load_artefact(a) for n, a in artefacts if n == "deepfm")
    multi = {f["name"]: f["multi_hot"] for f in schema["sparse"]}
    for lengths in (0, 1):
        values = {f: torch.arange(lengths if multi[f] else 1) for f in multi}
        offsets = {f: torch.tensor([0, lengths if multi[f] else 1]) for f in multi}
        one = (torch.randn(1, len(schema["dense"])), values, offsets)
        assert torch.allclose(ep(*one)["logit"], ts(*one)["logit"], atol=1e-6)

    out = tmp_path / "served.npz"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parents[2] / "serving_client.py"), str(out), str(data)]
        + [a for _, a in artefacts],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    for i, (name, path) in enumerate(artefacts):
        for col in ("logit", "score"):
            ref = want[name].column(col).to_numpy()
            diff = np.abs(got[f"{i}/{col}"] - ref).max()
            assert diff <= 1e-5, f"{name} {Path(path).name} {col}: max |diff| {diff}"


def test_error_policies_stop_the_call_and_hash_matches_the_reader() -> None:
    from denoisrec.models.serving import Preprocess, splitmix64_mod
    from denoisrec.trainer.data.checks import hash_ids

    ids = np.array([-1, -(2**63), 2**63 - 1, 50, 51, 10**12, -7, 123456789], dtype=np.int64)
    for n in (50, 7, 1_000_003, 2**31 - 1):
        assert np.array_equal(splitmix64_mod(torch.from_numpy(ids), n).numpy(), hash_ids(ids, n))
    pre = torch.jit.script(Preprocess(["a"], [10], [False], False, 0.0))
    ok = pre(torch.zeros(2, 1), {"a": torch.tensor([1, 9])}, {"a": torch.arange(3)})
    assert ok[1][0].tolist() == [1, 9]
    with pytest.raises(Exception, match="sparse feature 'a' has ids outside its table"):
        pre(torch.zeros(2, 1), {"a": torch.tensor([1, 10])}, {"a": torch.arange(3)})
    with pytest.raises(Exception, match="NaN or infinite"):
        pre(torch.full((2, 1), float("nan")), {"a": torch.tensor([1, 2])}, {"a": torch.arange(3)})

"""Round two of the runs that survive (issue 26), one part at a time and without training: checkpoints that
verify their own ``meta.json``, older formats with their note, what a resume continues (data, options), the
per-table plan a resume keeps, saves on a full disk, ``--out`` that cannot hold a run, lock files of other
shapes, and the one-line errors of schema values, noise files, Parquet inputs and model files.
Whole runs (``run.nonfinite=skip``, a resume on other data, a full disk mid-run) are in
tests/trainer/test_robust_round2_runs.py.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict

import pyarrow.parquet as pq
import pytest
import torch

from denoisrec.denoisers.noise_file import NoiseModel
from denoisrec.models import ModelSpec, save_model_file
from denoisrec.trainer.checkpoint.checkpointer import Checkpointer
from denoisrec.trainer.checkpoint.files import META_SHA, note, problem, seal_meta
from denoisrec.trainer.checkpoint.identity import check_same_run, data_fingerprint
from denoisrec.trainer.checkpoint.out_policy import check_out_dir
from denoisrec.trainer.checkpoint.run_lock import RunLock, RunLockError
from denoisrec.trainer.cli import main
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.distributed.env import DistEnv
from denoisrec.trainer.distributed.sharding import checkpoint_constraints
from denoisrec.trainer.errors import CheckpointError

ENV = DistEnv(0, 1, 0, 1, torch.device("cpu"), "gloo")
ROOT = Path(__file__).resolve().parents[2]


def _saved(tmp_path: Path, steps=(9, 10)) -> Path:
    """A run folder with real (model-only) checkpoints at ``steps``; returns its checkpoints folder."""
    ck = Checkpointer(str(tmp_path / "run"), 5, ENV)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    for s in steps:
        ck.save(s, model, None, {"step": s, "plan": {}})
    return tmp_path / "run" / "checkpoints"


def _meta(path: Path) -> Dict[str, Any]:
    return json.loads((path / "meta.json").read_text())


# ------------------------------------------------------------------------------------ self-verifying meta.json
def test_a_changed_digit_in_meta_json_is_found_and_resume_falls_back(tmp_path: Path) -> None:
    root = _saved(tmp_path)
    newest = root / "step_00000010"
    meta = _meta(newest)
    assert meta["format_version"] == 3 and META_SHA in meta and problem(str(newest)) is None
    text = (newest / "meta.json").read_text()
    assert '"step": 10,' in text
    (newest / "meta.json").write_text(text.replace('"step": 10,', '"step": 12,'))  # valid JSON, every key there
    assert problem(str(newest)) == (
        f"{newest / 'meta.json'}: content differs from its own checksum (meta_sha256; damaged: a changed digit, "
        "a partial write or a hand edit)"
    )
    ck = Checkpointer(str(tmp_path / "run"), 5, ENV)
    assert ck.resolve("auto") == os.path.realpath(root / "step_00000009") and len(ck.skipped) == 1
    with pytest.raises(CheckpointError, match="not a complete, intact checkpoint: .*own checksum"):
        Checkpointer(str(tmp_path / "run"), 5, ENV).resolve(str(root / "damaged-step_00000010"))


def test_meta_json_without_files_is_damaged_and_older_formats_get_their_note(tmp_path: Path) -> None:
    root = _saved(tmp_path, steps=(10,))
    step = root / "step_00000010"
    good = _meta(step)
    shard = step / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01
    shard.write_bytes(bytes(data))  # a flipped bit that only "files" can show

    edited = {k: v for k, v in good.items() if k != "files"}
    (step / "meta.json").write_text(json.dumps(edited))  # the key removed, the seal left: the seal shows it
    assert "own checksum" in problem(str(step))
    (step / "meta.json").write_text(json.dumps(seal_meta(edited)))  # removed and sealed again
    assert problem(str(step)) == (
        f"{step / 'meta.json'}: format_version 3 lists every file's checksum, but has no 'files' key, damaged or edited"
    )
    fmt3 = {k: v for k, v in good.items() if k != META_SHA}
    (step / "meta.json").write_text(json.dumps(fmt3))
    assert "missing its own checksum ('meta_sha256'; format_version 3)" in problem(str(step))

    # format 2 (files, no seal): its files are still verified; with an intact shard it loads with the note
    (step / "meta.json").write_text(json.dumps({**fmt3, "format_version": 2}))
    assert "content differs from its checksum" in problem(str(step))
    shard.write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 0x01]))
    assert problem(str(step)) is None
    ck = Checkpointer(str(tmp_path / "run"), 5, ENV)
    assert ck.resolve("auto") is not None
    assert ck.note == (
        f"note: {os.path.realpath(step)}: written before meta.json carried its own checksum (format_version 2): "
        "its files are verified, meta.json itself is not"
    )
    # format 1 (no checksums at all): accepted, said
    (step / "meta.json").write_text(
        json.dumps({**{k: v for k, v in fmt3.items() if k != "files"}, "format_version": 1})
    )
    ck = Checkpointer(str(tmp_path / "run"), 5, ENV)
    assert ck.resolve("auto") is not None
    assert ck.note == f"note: {os.path.realpath(step)}: written without checksums (format_version 1): loaded unverified"
    assert note(str(root)) is None  # not a checkpoint: no note (problem() says what is wrong)


def test_a_step_damaged_again_beside_its_damaged_copy_still_falls_back(tmp_path: Path) -> None:
    root = _saved(tmp_path, steps=(9, 10))
    shutil.copytree(root / "step_00000010", root / "damaged-step_00000010")  # an earlier damage of step 10
    os.remove(root / "step_00000010" / "meta.json")
    ck = Checkpointer(str(tmp_path / "run"), 5, ENV)
    assert ck.resolve("auto") == os.path.realpath(root / "step_00000009")
    assert sorted(os.listdir(root)) == [
        "damaged-step_00000010",
        "damaged-step_00000010.2",
        "latest",
        "step_00000009",
    ]


# ------------------------------------------------------------------------------------ what a resume continues
def test_resume_refuses_other_data_other_denoiser_options_and_another_sparse_optimizer(
    tiny_data: Path, tmp_path: Path
) -> None:
    schema = DataSchema.load(str(tiny_data))
    fp = data_fingerprint(ParquetBatchReader(str(tiny_data / "train"), schema, 256))
    assert fp["rows"] == 6000 and [f[0] for f in fp["files"]][0] == "part-00000.parquet"
    assert all(isinstance(size, int) and size > 0 for _, size, _ in fp["files"])
    moved = tmp_path / "moved"
    shutil.copytree(tiny_data, moved)
    assert data_fingerprint(ParquetBatchReader(str(moved / "train"), schema, 256))["sha256"] == fp["sha256"]
    os.remove(moved / "train" / "part-00002.parquet")  # another dataset: a file fewer
    other = data_fingerprint(ParquetBatchReader(str(moved / "train"), schema, 256))

    meta = {"data": fp, "denoiser": {"name": "tce", "params": {"eps_max": 0.2}}, "sparse_optimizer": "rowwise_adagrad"}
    check_same_run("ck", meta, fp, "tce", {"eps_max": 0.2}, "rowwise_adagrad")
    with pytest.raises(CheckpointError) as e:
        check_same_run("ck", meta, other, "tce", {"eps_max": 0.2})
    assert str(e.value).startswith(
        f"ck: trained on {tiny_data / 'train'} (3 file(s), 6,000 rows), this run reads {moved / 'train'} "
        "(2 file(s), 5,000 rows): another dataset"
    )
    assert "run.resume=never run.overwrite=true" in str(e.value)
    with pytest.raises(CheckpointError, match=r"options differ .*eps_max=0.2 in the checkpoint, 0.1 now"):
        check_same_run("ck", meta, fp, "tce", {"eps_max": 0.1})
    with pytest.raises(CheckpointError, match=r"denoiser 'tce', this run uses 'bce'"):
        check_same_run("ck", meta, fp, "bce", {})
    with pytest.raises(CheckpointError, match=r"optim.sparse=rowwise_adagrad, this run uses optim.sparse=sgd"):
        check_same_run("ck", meta, fp, "tce", {"eps_max": 0.2}, "sgd")
    check_same_run("ck", {"denoiser": {"name": "tce"}}, other, "tce", {"eps_max": 0.1})  # older: no record, no check


def test_a_resume_plans_each_table_as_the_checkpoint_did() -> None:
    saved = {
        "model.sparse_arch.embedding_bags.t_user_id": {"sharding_type": "table_wise"},
        "model.sparse_arch.embedding_bags.t_hour": {"sharding_type": "data_parallel"},
        "gone.t_old": {"sharding_type": "table_wise"},
    }
    got = checkpoint_constraints(saved, ["t_user_id", "t_hour", "t_new"])
    assert {t: c.sharding_types for t, c in got.items()} == {"t_user_id": ["table_wise"], "t_hour": ["data_parallel"]}
    assert checkpoint_constraints({}, ["t_user_id"]) is None and checkpoint_constraints(None, ["t"]) is None


# --------------------------------------------------------------------------------- full disk, --out, lock files
_FULL_DISK = textwrap.dedent(
    """
    import os, resource, signal, sys, torch
    from denoisrec.trainer.checkpoint.checkpointer import Checkpointer
    from denoisrec.trainer.distributed.env import DistEnv
    from denoisrec.models import ModelSpec
    out, what = sys.argv[1], sys.argv[2]
    ck = Checkpointer(out, 5, DistEnv(0, 1, 0, 1, torch.device("cpu"), "gloo"))
    ck.save(1, torch.nn.Linear(3, 1), None, {"step": 1})          # a small one fits
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)                # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
    big = torch.nn.ModuleDict({"model": torch.nn.Linear(1000, 100)})   # 400 KB of weights, exported as model.*
    try:
        if what == "save":
            ck.save(2, big, None, {"step": 2})
        else:
            spec = ModelSpec("dlrm", [("a", 10)], 1, 4)
            ck.export_model(big, os.path.join(out, "model.pt"), spec, {}, None)
    except Exception as e:
        print(type(e).__name__ + ": " + str(e))
    """
)


@pytest.mark.parametrize("what", ["save", "export"])
def test_a_full_disk_is_one_line_and_leaves_nothing_partial(tmp_path: Path, what: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path), what], capture_output=True, text=True, timeout=120
    )
    line = proc.stdout.strip()
    root = tmp_path / "checkpoints"
    if what == "save":
        assert line.startswith(f"StorageError: {root / 'step_00000002'}: could not save the checkpoint ("), line
        assert "the earlier checkpoints are intact" in line  # EFBIG, or torch's inline_container failure
    else:
        assert line.startswith(f"StorageError: {tmp_path / 'model.pt'}: could not write the model file ("), line
        assert not (tmp_path / "model.pt").exists()
    assert "\n" not in line and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(os.listdir(root)) == ["latest", "step_00000001"] and problem(str(root / "step_00000001")) is None
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_out_that_cannot_hold_a_run_is_one_line_before_training(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "file").write_text("x")
    args = ["train", "--data", str(tiny_data), "--epochs", "1", "--out"]
    assert main(args + [str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"denoisrec train: error: --out {tmp_path / 'file'}: a regular file, not a directory; give a directory, "
        "or another --out"
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("x")
    assert main(args + [str(tmp_path / "run")]) == 2
    assert "run/checkpoints: a regular file where the run keeps its checkpoints" in capsys.readouterr().err
    assert os.listdir(tmp_path / "run") == ["checkpoints"]  # nothing written


def test_a_read_only_out_is_one_line(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)]).returncode != 0:
            pytest.skip("root, but no tmpfs to mount read-only")
    else:
        ro.chmod(0o555)
    try:
        with pytest.raises(OSError, match=rf"--out {ro / 'run'}: not writable \((Read-only file system|Permission)"):
            check_out_dir(str(ro / "run"))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)])
        else:
            ro.chmod(0o755)


def test_lock_files_of_other_shapes_are_named(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    lock.write_text("[1, 2]")
    with pytest.raises(RunLockError, match=rf"^{lock}: not a denoisrec run lock \(a JSON list; expected"):
        RunLock(str(tmp_path)).acquire()
    lock.write_text(json.dumps({"pid": "abc", "host": "h"}))
    with pytest.raises(RunLockError, match=rf"^{lock}: not a denoisrec run lock \(\"pid\": 'abc'; .*delete the file"):
        RunLock(str(tmp_path)).acquire()
    lock.unlink()
    lock.mkdir()
    with pytest.raises(RunLockError, match=rf"^{lock}: a directory, not a run lock file; remove it"):
        RunLock(str(tmp_path)).acquire()


# ------------------------------------------------------------------------------------------ one-line errors
def _schema_doc(tiny_data: Path) -> Dict[str, Any]:
    return json.loads((tiny_data / "schema.json").read_text())


@pytest.mark.parametrize(
    "value, shown", [("8", "num_embeddings='8' (str)"), (8.7, "num_embeddings=8.7 (float)"), (True, "=True (bool)")]
)
def test_schema_table_sizes_are_integers(tiny_data: Path, tmp_path: Path, value: Any, shown: str) -> None:
    doc = _schema_doc(tiny_data)
    doc["sparse"][0]["num_embeddings"] = value
    (tmp_path / "schema.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError) as e:
        DataSchema.load(str(tmp_path))
    name = doc["sparse"][0]["name"]
    assert str(e.value).startswith(f"{tmp_path / 'schema.json'}: invalid schema: schema: sparse feature {name!r} ")
    assert f"sparse feature {name!r} has num_embeddings" in str(e.value) and shown in str(e.value)
    assert "expected a positive integer" in str(e.value)


def test_schema_dense_entries_are_names_and_data_is_no_parquet_file(tiny_data: Path, tmp_path: Path) -> None:
    doc = _schema_doc(tiny_data)
    doc["dense"][0] = {"name": doc["dense"][0]}
    with pytest.raises(ValueError, match=r"schema key 'dense': \{'name': .*\} is not a column name"):
        DataSchema.from_dict(doc)
    part = tiny_data / "train" / "part-00000.parquet"
    with pytest.raises(ValueError, match=rf"^{part}: a Parquet file, not a dataset; --data takes the dataset's dir"):
        DataSchema.load(str(part))


@pytest.mark.parametrize(
    "text, want",
    [
        ('"q1": "0.5"', "q1='0.5' (str); expected a finite number (a JSON number, not a string)"),
        ('"bias": Infinity', "bias=inf (float); expected a finite number"),
        ('"q0": true', "q0=True (bool); expected a finite number"),
    ],
)
def test_noise_file_values_are_finite_numbers(tmp_path: Path, text: str, want: str) -> None:
    values = {"bias": "0.5", "q0": "0.2", "q1": "0.3"}
    key, value = text.split(": ")
    values[key.strip('"')] = value
    body = "{" + ", ".join(f'"{k}": {v}' for k, v in values.items()) + ', "attention": {}}'
    path = tmp_path / "noise.json"
    path.write_text(body)
    with pytest.raises(ValueError) as e:
        NoiseModel.read(str(path), {})
    assert str(e.value) == f"noise_file {path}: {want}"


@pytest.fixture()
def run_dir(tiny_data: Path, tmp_path: Path) -> Path:
    schema = DataSchema.load(str(tiny_data))
    spec = ModelSpec("dlrm", [(f.name, f.num_embeddings) for f in schema.sparse], len(schema.dense), 4)
    out = tmp_path / "run"
    out.mkdir()
    save_model_file(str(out / "model.pt"), spec, spec.build(torch.device("cpu")).state_dict(), schema.to_dict())
    return out


def test_predict_names_the_bad_file_and_never_advises_weights_only_false(
    tiny_data: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    args = ["predict", "--data", str(tiny_data / "test"), "--out", str(tmp_path / "s.parquet"), "--model-file"]
    assert main(args + [str(junk)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"denoisrec predict: error: {junk}: not a denoisrec model file (not a torch.save archive")
    assert "weights_only" not in err and "\n" not in err

    cut = tmp_path / "cut.parquet"
    cut.write_bytes((tiny_data / "test" / "part-00000.parquet").read_bytes()[:3000])
    base = ["predict", "--model-file", str(run_dir / "model.pt"), "--out", str(tmp_path / "s.parquet"), "--data"]
    assert main(base + [str(cut)]) == 2
    assert f"error: {cut}: not a readable Parquet file, corrupt or truncated" in capsys.readouterr().err

    twice = tmp_path / "twice.parquet"
    t = pq.read_table(tiny_data / "test" / "part-00000.parquet")
    pq.write_table(t.append_column("item_id", t.column("item_id")), twice)
    assert main(base + [str(twice)]) == 2
    assert f"error: {twice}: column(s) ['item_id'] appear more than once" in capsys.readouterr().err


def test_training_names_a_duplicated_column(tiny_data: Path, tmp_path: Path) -> None:
    from denoisrec.trainer.data.checks import schema_problems

    t = pq.read_table(tiny_data / "train" / "part-00000.parquet")
    twice = t.append_column("item_id", t.column("item_id")).schema
    assert "column 'item_id' appears 2 times; write each column once" in schema_problems(
        twice, DataSchema.load(str(tiny_data)), True
    )


def test_export_calibrate_on_a_split_missing_a_column_is_one_line(
    tiny_data: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    split = tmp_path / "valid"
    split.mkdir()
    t = pq.read_table(tiny_data / "valid" / "part-00000.parquet").drop_columns(["hour"])
    pq.write_table(t, split / "part-00000.parquet")
    assert main(["export", str(run_dir), "--calibrate", "platt", "--valid", str(split)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"denoisrec export: error: export --calibrate platt --valid {split}: {split / 'part-00000.parquet'} has no "
        "column(s) ['hour']"
    ), err


def test_the_torchelastic_error_file_holds_the_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    file = tmp_path / "error.json"
    env = {**os.environ, "TORCHELASTIC_ERROR_FILE": str(file), "RANK": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "denoisrec.trainer", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=str(ROOT),
    )
    assert proc.returncode != 0
    msg = json.loads(file.read_text())["message"]
    assert msg["message"] == msg["extraInfo"]["py_callstack"] and msg["message"].startswith("denoisrec train: error: ")
    assert "Traceback" not in msg["message"] and "\n" not in msg["message"]

"""``denoisrec export``: a trained run's model as a self-contained serving artefact that needs only torch.

The artefact is the clean model ``f`` of ``<run>/model.pt`` (the file holds only the model: a denoiser's
auxiliary models, such as DeCA's MF tables, are never in it), converted to plain torch by
:func:`denoisrec.models.serving.serving_model` with its input preprocessing (feature order, OOV hashing,
dense imputation) and, with ``--calibrate platt``, a Platt calibrator fitted on the validation split
(:mod:`denoisrec.trainer.serving.calibration`). Two formats:

- ``torchscript``: ``<out>/serving.pt``, ``torch.jit.load(path)``;
- ``exported-program``: ``<out>/serving.pt2``, ``torch.export.load(path).module()`` (batch size and bag
  lengths dynamic).

Both carry ``serving.json`` (the input and output description) inside (TorchScript ``_extra_files``, the
``.pt2`` archive's extra files) and beside the artefact. The export checks the saved artefact: reloaded, it
must reproduce the TorchRec model's logits to 1e-5 on a probe batch, or the export fails.

Each format has a folder of its own (default ``<run>/serving/<format>/``: the artefact, its ``serving.json``
and, when calibrated, ``calibrator.json``), written whole into a temporary folder beside it, fsynced and
renamed into place (:func:`publish`): a re-export, finished or killed at any point, leaves either the previous
folder or the new one, never a sidecar that describes another file.

Example::

    denoisrec export runs/deepfm --format torchscript --calibrate platt
    # python, torch only:
    m = torch.jit.load("runs/deepfm/serving/torchscript/serving.pt")
    m(dense, {"user_id": ids, ...}, {"user_id": offsets, ...})["score"]
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from denoisrec.models import LoadedModel, load_model_file
from denoisrec.models.serving import serving_model
from denoisrec.trainer.checkpoint.out_policy import check_out_dir

FORMATS = ("torchscript", "exported-program")
FILES = {"torchscript": "serving.pt", "exported-program": "serving.pt2"}
SPEC_FILE = "serving.json"
CALIBRATOR_FILE = "calibrator.json"
# what an artefact folder may hold: a re-export replaces such a folder whole, and refuses any other
ARTEFACT_FILES = {SPEC_FILE, CALIBRATOR_FILE, *FILES.values()}


def model_file_of(run: str) -> str:
    """``run`` is a run directory (its ``model.pt``) or a model file."""
    return os.path.join(run, "model.pt") if os.path.isdir(run) else run


def serving_spec(loaded: LoadedModel, fmt: str, platt: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The artefact's description: inputs (feature order, tables, policies), outputs, provenance."""
    schema = loaded.schema
    feats = {f["name"]: f for f in schema["sparse"]}
    return {
        "format": "denoisrec-serving",
        "version": 1,
        "artefact": fmt,
        "model": loaded.spec.name,
        "inputs": {
            "dense": {
                "columns": list(schema.get("dense", [])),
                "dtype": "float32",
                "shape": "[B, n_dense]",
                "nan_policy": schema.get("nan_policy", "error"),
                "impute_value": schema.get("impute_value", 0.0),
            },
            "values": "Dict[feature, int64 [N_f]]: the ids of all rows of feature f, concatenated",
            "offsets": "Dict[feature, int64 [B + 1]]: row b's ids are values[f][offsets[f][b]:offsets[f][b+1]]",
            "sparse": [
                {
                    "name": n,
                    "num_embeddings": k,
                    "multi_hot": bool(feats[n].get("multi_hot", False)),
                    "oov_policy": feats[n].get("oov_policy") or schema.get("oov_policy", "error"),
                }
                for n, k in loaded.spec.features
            ],
        },
        "outputs": ["logit", "score"] + (["score_calibrated"] if platt else []),
        "calibrator": platt,
        "sample_id": schema.get("sample_id"),
        "trained": {k: loaded.extra.get(k) for k in ("step", "denoiser", "restored_best_step")},
    }


def probe_inputs(
    loaded: LoadedModel, rows: int = 3, seed: int = 0
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """A small batch of valid serving input (multi-hot bags of 0-2 ids), for tracing and the self-check."""
    g = torch.Generator().manual_seed(seed)
    multi = {f["name"]: bool(f.get("multi_hot", False)) for f in loaded.schema["sparse"]}
    values: Dict[str, torch.Tensor] = {}
    offsets: Dict[str, torch.Tensor] = {}
    for name, n in loaded.spec.features:
        lengths = torch.tensor([2, 0, 1] * rows)[:rows] if multi[name] else torch.ones(rows, dtype=torch.int64)
        offsets[name] = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        values[name] = torch.randint(0, n, (int(lengths.sum()),), generator=g)
    dense = torch.randn(rows, loaded.spec.dense_in_features, generator=g)
    return dense, values, offsets


def _reference_logits(
    loaded: LoadedModel, dense: torch.Tensor, values: Dict[str, torch.Tensor], offsets: Dict[str, torch.Tensor]
) -> torch.Tensor:
    from torchrec import KeyedJaggedTensor

    names = [n for n, _ in loaded.spec.features]
    kjt = KeyedJaggedTensor(
        keys=names,
        values=torch.cat([values[n] for n in names]),
        lengths=torch.cat([offsets[n].diff() for n in names]).int(),
        stride=dense.shape[0],
    )
    with torch.no_grad():
        return loaded.model.eval()(dense, kjt).squeeze(-1)


def _save(
    module: torch.nn.Module,
    fmt: str,
    path: str,
    spec_json: str,
    probe: Tuple[torch.Tensor, Dict[str, torch.Tensor], Dict[str, torch.Tensor]],
) -> None:
    if fmt == "torchscript":
        torch.jit.save(torch.jit.script(module), path, _extra_files={SPEC_FILE: spec_json})
        return
    from torch.export import Dim

    dense, values, offsets = probe
    batch = Dim("batch", min=1)
    dynamic = {
        "dense": {0: batch},
        "values": {n: {0: Dim(f"ids_{i}", min=0)} for i, n in enumerate(values)},
        "offsets": {n: {0: batch + 1} for n in offsets},
    }
    # backed_size_oblivious: a batch of 1 and bags of 0 or 1 ids must not be specialised away (online serving
    # scores one row at a time)
    import torch.fx.experimental._config as fx_config

    # patch() is added to torch's config modules at import (torch.utils._config_module.install_config_module)
    with fx_config.patch(backed_size_oblivious=True):  # type: ignore[attr-defined]
        ep = torch.export.export(module, (dense, values, offsets), dynamic_shapes=dynamic)
    torch.export.save(ep, path, extra_files={SPEC_FILE: spec_json})


def load_artefact(path: str) -> Any:
    """Load a serving artefact with torch alone (what a serving process does)."""
    if path.endswith(".pt2"):
        return torch.export.load(path).module()
    return torch.jit.load(path)


def export_serving(
    run: str,
    fmt: str,
    out: Optional[str] = None,
    calibrate: Optional[str] = None,
    valid: Optional[str] = None,
    batch_size: int = 8192,
) -> Dict[str, Any]:
    """Write the serving artefact of ``run`` into its own folder (see the module docstring); return a report.

    Args:
        run: a run directory (its ``model.pt``) or a model file.
        fmt: ``torchscript`` or ``exported-program``.
        out: the artefact's folder (default ``<run>/serving/<fmt>``), replaced whole.
        calibrate: ``platt`` to fit and include a Platt calibrator on the validation split.
        valid: the validation split for ``calibrate`` (default the run's ``data.path/valid``).
        batch_size: rows per scoring batch for the calibration.

    Returns:
        ``artefact``, ``spec``, ``calibrator`` (paths), sizes, times and the probe difference.
    """
    if fmt not in FORMATS:
        raise ValueError(f"export --format {fmt!r}: expected one of {list(FORMATS)}")
    if calibrate not in (None, "none", "platt"):
        raise ValueError(f"export --calibrate {calibrate!r}: expected platt or none")
    model_file = model_file_of(run)
    loaded = load_model_file(model_file)
    default_root = os.path.join(os.path.dirname(os.path.abspath(model_file)), "serving")
    out = out or os.path.join(default_root, fmt)
    check_artefact_folder(out)
    check_out_dir(os.path.dirname(os.path.abspath(out)), "export --out (its parent)")
    report: Dict[str, Any] = {"model_file": model_file, "format": fmt, "model": loaded.spec.name}

    platt = None
    if calibrate == "platt":
        platt, report["calibration"] = _fit_on_valid(loaded, model_file, valid, batch_size)
    module = serving_model(loaded.model, loaded.spec, loaded.schema, [platt.a, platt.b] if platt else None)
    spec = serving_spec(loaded, fmt, {"method": "platt", "a": platt.a, "b": platt.b, **platt.info} if platt else None)
    spec_json = json.dumps(spec, indent=2)

    tmp = _temp_folder(out)
    try:
        if platt is not None:
            platt.save(os.path.join(tmp, CALIBRATOR_FILE))
        with open(os.path.join(tmp, SPEC_FILE), "w") as f:
            f.write(spec_json)
        probe = probe_inputs(loaded)
        t = time.perf_counter()
        _save(module, fmt, os.path.join(tmp, FILES[fmt]), spec_json, probe)
        report["export_seconds"] = round(time.perf_counter() - t, 3)
        # Self-check: the reloaded artefact reproduces the TorchRec model on a probe batch of other rows.
        t = time.perf_counter()
        served = load_artefact(os.path.join(tmp, FILES[fmt]))
        report["load_seconds"] = round(time.perf_counter() - t, 3)
        check = probe_inputs(loaded, rows=5, seed=1)
        got = served(*check)["logit"]
        want = _reference_logits(loaded, *check)
        err = float((got - want).abs().max())
        if not err <= 1e-5:
            raise RuntimeError(
                f"export: the {fmt} artefact's logits differ from the model's by {err:.3g} on a probe batch "
                "(limit 1e-5)"
            )
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after publish; a failed export leaves nothing behind
    if out == os.path.join(default_root, fmt):
        report["removed_legacy"] = _remove_legacy_flat_export(default_root)
    path = os.path.join(out, FILES[fmt])
    report.update(
        {
            "artefact": path,
            "artefact_bytes": os.path.getsize(path),
            "probe_max_abs_diff": err,
            "table_bytes": sum(
                int(w.numel()) * w.element_size() for k, w in loaded.model.state_dict().items() if "embedding_bags" in k
            ),
            "spec": os.path.join(out, SPEC_FILE),
        }
    )
    if platt is not None:
        report["calibrator"] = os.path.join(out, CALIBRATOR_FILE)
    return report


def check_artefact_folder(out: str) -> None:
    """Refuse an ``--out`` that a re-export must not replace: a file, or a folder holding anything but one
    previous artefact (the files of :data:`ARTEFACT_FILES`).
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"export --out {out}: is a file; give a folder for the artefact (default RUN/serving/FORMAT)")
    if os.path.isdir(out):
        other = sorted(set(os.listdir(out)) - ARTEFACT_FILES)
        if other:
            raise ValueError(
                f"export --out {out}: holds other files ({', '.join(other[:3])}{' ...' if len(other) > 3 else ''}), "
                "and an export replaces its folder whole; give an empty or new folder"
            )


def _temp_folder(out: str) -> str:
    """A fresh temporary folder beside ``out`` (same file system, so the rename is atomic); leftovers of
    killed exports of ``out`` are removed first.
    """
    parent, name = os.path.split(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    for entry in os.listdir(parent):
        if entry.startswith((f".tmp-{name}-", f".old-{name}-")):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
    tmp = os.path.join(parent, f".tmp-{name}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    return tmp


def publish(tmp: str, out: str) -> None:
    """Make the finished folder ``tmp`` the folder ``out``: fsync its files, then rename it into place (the
    previous ``out`` is renamed aside first and deleted after). A kill at any point leaves ``out`` whole: the
    previous folder, the new one, or (between the two renames) none, never a mix.
    """
    for name in os.listdir(tmp):
        with open(os.path.join(tmp, name), "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(tmp)
    parent, name = os.path.split(os.path.abspath(out))
    old = None
    if os.path.isdir(out):
        old = os.path.join(parent, f".old-{name}-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
    os.rename(tmp, out)
    _fsync_dir(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_legacy_flat_export(root: str) -> List[str]:
    """Files of an export made before the per-format folders (``serving/serving.pt`` beside
    ``serving/serving.json``): they would contradict the new folder, so they go (the caller reports them).
    """
    gone = []
    for name in sorted(ARTEFACT_FILES):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            os.remove(path)
            gone.append(path)
    return gone


def _fit_on_valid(
    loaded: LoadedModel, model_file: str, valid: Optional[str], batch_size: int
) -> Tuple[Any, Dict[str, Any]]:
    """Score the validation split with the model file and fit a Platt calibrator on its observed labels."""
    from denoisrec.trainer.data.block import Where
    from denoisrec.trainer.errors import DataError
    from denoisrec.trainer.evaluation.metrics import logloss
    from denoisrec.trainer.serving.calibration import fit_platt
    from denoisrec.trainer.serving.predict import Scorer, input_files, parquet_file, rank_share, table_batches

    if valid is None:
        data = (loaded.extra.get("config") or {}).get("data", {}).get("path")
        if not data:
            raise ValueError(
                f"{model_file}: no training config in the model file; give the validation split with --valid PATH"
            )
        valid = os.path.join(data, "valid")
    scorer = Scorer(loaded, torch.device("cpu"))
    label = scorer.schema.label
    files = input_files(valid)
    for path in files:  # every column the calibration reads, before any is scored
        names = parquet_file(path).schema_arrow.names
        missing = [c for c in scorer.features + [label] if c not in names]
        if missing:
            raise DataError(
                f"export --calibrate platt --valid {valid}: {path} has no column(s) {missing} (model "
                f"{loaded.spec.name!r} reads its features, the calibration the label {label!r}); give a split "
                "of the model's dataset with --valid"
            )
    pieces, _ = rank_share(files, 0, 1)
    logits: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    for piece in pieces:
        for first, table in table_batches(piece, scorer.features + [label], batch_size):
            logits.append(scorer(table, Where(piece.path, piece.row_group, first)))
            labels.append(table.column(label).to_numpy(zero_copy_only=False))
    z, y = np.concatenate(logits), np.concatenate(labels).astype(np.float64)
    platt = fit_platt(z, y)
    platt.info["fitted_on"] = valid
    from scipy.special import expit

    before = logloss(y, expit(z.astype(np.float64)))
    after = logloss(y, expit(platt.apply(z.astype(np.float64))))
    return platt, {
        "a": platt.a,
        "b": platt.b,
        "valid": valid,
        "rows": int(z.size),
        "valid_logloss_before": before,
        "valid_logloss_after": after,
    }

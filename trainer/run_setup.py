"""The training job's set-up helpers: seeding, tables, batch size, baseline, resume position and checks.

Seeding, ``model.tables`` overrides, the per-rank batch size, the baseline run, the data position of a resumed
run, and the checks of a checkpoint against this run.

Example::

    seed_everything(0)
    rank_batch_size(cfg, world_size=2)                       # data.global_batch_size / 2, or data.batch_size
    resume_step(meta, steps_per_epoch=98, global_batch=4096)  # the step a resumed run continues from
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from typing import Any, Dict, Generator, List, Optional, cast

import numpy as np
import torch
import torch.distributed as dist

from denoisrec.models import ModelSpec
from denoisrec.trainer.checkpoint.checkpointer import CheckpointError, read_meta
from denoisrec.trainer.checkpoint.identity import check_same_run
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.epochs import epoch_batches
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.evaluation.metrics import real_imp


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def apply_table_overrides(schema: DataSchema, tables: Dict[str, Dict[str, int]]) -> DataSchema:
    """``model.tables`` row counts replace the schema's (the reader then checks ids against them)."""
    names = set(schema.sparse_names)
    for feature, opts in tables.items():
        if feature not in names:
            raise ValueError(f"model.tables.{feature}: unknown sparse feature; the data has {sorted(names)}")
        bad = set(opts) - {"num_embeddings", "embedding_dim"}
        if bad:
            raise ValueError(
                f"model.tables.{feature}: unknown key(s) {sorted(bad)}; expected num_embeddings, embedding_dim"
            )
    sparse = [
        dataclasses.replace(f, num_embeddings=int(tables.get(f.name, {}).get("num_embeddings", f.num_embeddings)))
        for f in schema.sparse
    ]
    return DataSchema.from_dict({**schema.to_dict(), "sparse": [vars(f) for f in sparse]})


def rank_batch_size(cfg: Config, world_size: int) -> int:
    """Rows per rank per step: ``data.global_batch_size / world_size`` when set, else ``data.batch_size``.

    Args:
        cfg: a checked config (:func:`~denoisrec.trainer.config.check.check_config` refused a global batch
            that the world size, read from ``WORLD_SIZE`` or ``-j``, does not divide, before any rank started).
        world_size: the number of ranks.

    Returns:
        The per-rank batch size.
    """
    g = cfg.data.global_batch_size
    if g is None:
        return cfg.data.batch_size
    assert g > 0 and g % world_size == 0, f"data.global_batch_size={g} with {world_size} ranks: check_config it"
    return g // world_size


def load_baseline(path: Optional[str]) -> Optional[Dict[str, Any]]:
    """The ``summary.json`` of the baseline run named by ``run.baseline`` (a run directory or the file)."""
    if not path:
        return None
    file = os.path.join(path, "summary.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"run.baseline={path!r}: no summary.json there (train the baseline run first)")
    with open(file) as f:
        s = json.load(f)
    if "metrics" not in s:
        raise ValueError(f"{file}: not a denoisrec run summary (no 'metrics')")
    return {"path": file, "metrics": s["metrics"]}


def realimp_against(metrics: Dict[str, Any], baseline: Dict[str, Any]) -> Dict[str, Any]:
    """RealImp of this run's AUC over the baseline's, split by split (the splits both runs evaluated)."""
    out: Dict[str, Any] = {"baseline": baseline["path"]}
    for split, m in metrics.items():
        b = baseline["metrics"].get(split)
        if b and b.get("auc") is not None:
            out[split] = real_imp(m["auc"], float(b["auc"]))
    return out


def train_batches(
    reader: ParquetBatchReader, start_step: int, total_steps: int, reports: Optional[List[Any]] = None
) -> Generator[Any, None, None]:
    """The batches of steps ``[start_step, total_steps)``: epoch ``step // steps_per_epoch``, skipping the
    batches of that epoch already consumed (the reader is deterministic given the epoch and the seed).

    Each epoch's row accounting (:meth:`ParquetBatchReader.epoch_report`) is appended to ``reports`` when the
    epoch ends, when the budget ends it, or when the generator is closed (early stop, end of session). The
    next epoch is read ahead during the last steps of each (:mod:`denoisrec.trainer.data.epochs`).
    """
    return cast(Generator[Any, None, None], epoch_batches(reader, start_step, total_steps, reports))


def resume_step(meta: Dict[str, Any], steps_per_epoch: int, global_batch: int) -> int:
    """The step to continue from. Same world size and batch: the checkpoint's step. Otherwise the epoch in
    progress continues after the rows it had consumed, rounded down to a whole batch of the new layout.
    """
    if meta["steps_per_epoch"] == steps_per_epoch and meta["global_batch"] == global_batch:
        return int(meta["step"])
    rows = int(meta["batches_in_epoch"]) * int(meta["global_batch"])
    return int(meta["epoch"]) * steps_per_epoch + min(rows // global_batch, steps_per_epoch)


def read_meta_checked(path: str, spec: ModelSpec, cfg: Config, data: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint's ``meta.json``, checked against this run: the model, the train data (``data``: its
    :func:`~denoisrec.trainer.checkpoint.identity.data_fingerprint`) and the denoiser with its options.
    """
    meta = read_meta(path)
    saved, now = meta.get("spec") or {}, json.loads(json.dumps(spec.to_dict()))
    if saved != now:
        diff = ", ".join(
            f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now"
            for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)
        )
        raise CheckpointError(
            f"{path}: the checkpoint's model differs from this run's ({diff}); resume with the "
            "same model and data, or use --set run.resume=never / another --out"
        )
    check_same_run(path, meta, data, cfg.denoiser.name, cfg.denoiser.params, cfg.optim.sparse)
    return meta


def global_sum(x: float, device: torch.device) -> float:
    t = torch.tensor([x], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return float(t.item())

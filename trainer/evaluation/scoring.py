"""Distributed evaluation: every rank scores its share of a split into one metric state.

The state (:class:`~denoisrec.trainer.evaluation.metric_state.MetricState`) gathers the rows to rank 0 only,
computes the metrics there and broadcasts the scalars.

The metrics are identical to a single process scoring the whole split. The test split is scored against
``clean_label`` when the data has ground truth: that is the number that tells whether a denoiser learned the
users' real preferences. The target ``trusted`` scores the rows that carry a trusted label (the schema's
``trusted_label``; the others are left out) against it; :func:`evaluate_targets` scores several targets in one
pass and adds DeLong's interval of the AUC (:mod:`~denoisrec.trainer.evaluation.auc_interval`) to the ones asked.

Example::

    m = evaluate_targets(model, readers["valid"], device, ("observed", "trusted"), interval=("trusted",))
    m["trusted"]["auc"], m["trusted"]["auc_lo"], m["trusted"]["rows"]
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Dict, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.evaluation.auc_interval import auc_interval
from denoisrec.trainer.evaluation.metric_state import MetricState, Rows
from denoisrec.trainer.evaluation.metrics import all_metrics

TARGETS = ("observed", "clean", "trusted")
LABELS = {"observed": "labels", "clean": "clean_labels", "trusted": "trusted_labels"}  # the Batch field of each


def all_gather_varlen(t: torch.Tensor) -> torch.Tensor:
    """Concatenate 1-D/2-D tensors of different lengths from every rank, in rank order, on every rank (for
    values every rank needs, e.g. DeCA(p)'s cached prior scores; metrics use :class:`MetricState`).
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return t
    n = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    max_n = int(max(s.item() for s in sizes))
    padded = torch.zeros((max_n,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    out = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)])


@torch.no_grad()
def score(
    model: nn.Module,
    reader: ParquetBatchReader,
    device: torch.device,
    state: MetricState,
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
) -> MetricState:
    """Score this rank's share of ``reader`` with ``model`` (eval mode) into ``state``, batch by batch:
    targets ``observed`` (the batch's labels), ``clean`` (its clean labels) and/or ``trusted`` (its trusted
    labels, NaN where a row has none); ``autocast`` wraps the forward (the run's precision).
    """
    was_training = model.training
    model.eval()
    try:
        for batch in reader:
            batch = batch.to(device, non_blocking=True)
            with autocast():
                _, (_, logits, _) = model(batch)
            state.update(logits, {t: getattr(batch, LABELS[t]) for t in state.targets}, batch.group_ids)
    finally:
        model.train(was_training)
    return state


def masked_metrics(
    rows: Rows, interval: Sequence[str] = (), level: float = 0.95, keep: Optional[Callable[[Rows], None]] = None
) -> Dict[str, Dict[str, Any]]:
    """Every target's :func:`~denoisrec.trainer.evaluation.metrics.all_metrics` on the rows whose label is not NaN (the
    trusted target's labelled rows; every row for the others), with ``positives``; the targets in
    ``interval`` also get ``auc_se``, ``auc_lo``, ``auc_hi`` and ``ci_level`` (DeLong). ``keep`` receives the
    interval target's labelled rows (on the rank that computes: the run saves the selection's scores).
    """
    out: Dict[str, Dict[str, Any]] = {}
    for t, y in rows.labels.items():
        has = ~np.isnan(y)
        sub = Rows(rows.logits, {t: y}, rows.groups)
        if not has.all():
            sub = Rows(rows.logits[has], {t: y[has]}, rows.groups[has])
        m: Dict[str, Any] = all_metrics(sub.labels[t], sub.logits, sub.groups)
        m["positives"] = int((sub.labels[t] > 0.5).sum())
        if t in interval:
            iv = auc_interval(sub.labels[t], sub.logits, level)
            m.update(auc_se=iv["se"], auc_lo=iv["lo"], auc_hi=iv["hi"], ci_level=level)
            if keep is not None:
                keep(sub)
        out[t] = m
    return out


def evaluate_targets(
    model: nn.Module,
    reader: ParquetBatchReader,
    device: torch.device,
    targets: Sequence[str],
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    interval: Sequence[str] = (),
    level: float = 0.95,
    keep: Optional[Callable[[Rows], None]] = None,
) -> Dict[str, Dict[str, Any]]:
    """The metrics of every target in ``targets`` (``observed``, ``clean``, ``trusted``) from one scoring pass
    of ``reader``'s split over all ranks (:func:`masked_metrics`; the same dict on every rank, ``target`` set).
    """
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise ValueError(f"evaluate targets {bad}: expected some of {TARGETS}")
    if "clean" in targets and not reader.with_ground_truth:
        raise ValueError(f"{reader.path}: clean-label evaluation needs the schema's clean_label column")
    if "trusted" in targets and not reader.layout.with_trusted:
        raise ValueError(f"{reader.path}: trusted-label evaluation needs the schema's trusted_label column")
    state = score(model, reader, device, MetricState(tuple(targets), device=device), autocast)
    result = state.compute(lambda rows: masked_metrics(rows, interval, level, keep))
    for t, m in result.items():
        m["target"] = t
    return result


def evaluate(
    model: nn.Module,
    reader: ParquetBatchReader,
    device: torch.device,
    target: str = "observed",
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
) -> Dict[str, float]:
    """AUC, GAUC, logloss, calibration, NE and ECE of ``model`` on ``reader``'s split over all ranks (the
    same dict on every rank). ``target`` is ``observed`` or ``clean``.
    """
    if target not in ("observed", "clean"):
        raise ValueError(f"evaluate target={target!r}: expected observed or clean")
    if target == "clean" and not reader.with_ground_truth:
        raise ValueError(f"{reader.path}: clean-label evaluation needs the schema's clean_label column")
    state = score(model, reader, device, MetricState((target,), device=device), autocast)
    m = state.compute()[target]
    m["target"] = target  # type: ignore[assignment]
    return m

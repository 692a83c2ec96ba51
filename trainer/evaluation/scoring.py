"""Distributed evaluation: every rank scores its share into a metric state
(:class:`~denoisrec.trainer.evaluation.metric_state.MetricState`), which gathers the rows
to rank 0 only, computes the metrics there and broadcasts the scalars.

The metrics are identical to a single process scoring the whole split. The test split is scored against
``clean_label`` when the data has ground truth: that is the number that tells whether a denoiser learned the
users' real preferences.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Dict

import torch
import torch.distributed as dist
from torch import nn

from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.evaluation.metric_state import MetricState


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
    targets ``observed`` (the batch's labels) and/or ``clean`` (its clean labels); ``autocast`` wraps the
    forward (the run's precision).
    """
    was_training = model.training
    model.eval()
    try:
        for batch in reader:
            batch = batch.to(device, non_blocking=True)
            with autocast():
                _, (_, logits, _) = model(batch)
            labels = {"observed": batch.labels, "clean": batch.clean_labels}
            state.update(logits, {t: labels[t] for t in state.targets}, batch.group_ids)
    finally:
        model.train(was_training)
    return state


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

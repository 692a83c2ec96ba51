"""Distributed evaluation: every rank scores its share, predictions are gathered, metrics computed once.

Gathering the (logit, label, group) triples makes the metrics identical to a single process scoring the
whole split. The test split is scored against ``clean_label`` when the data has ground truth: that is the
number that tells whether a denoiser learned the users' real preferences.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Dict, List

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.metrics import all_metrics


def all_gather_varlen(t: torch.Tensor) -> torch.Tensor:
    """Concatenate 1-D/2-D tensors of different lengths from every rank, in rank order."""
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
def predict(model: nn.Module, reader: ParquetBatchReader, device: torch.device, target: str,
            autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> torch.Tensor:
    """``[N, 3]`` float64 (logit, target label, group id) of this rank's share. ``target`` is ``observed``
    or ``clean``; ``autocast`` wraps the forward (the run's precision)."""
    rows: List[torch.Tensor] = []
    for batch in reader:
        batch = batch.to(device, non_blocking=True)
        with autocast():
            _, (_, logits, _) = model(batch)
        labels = batch.clean_labels if target == "clean" else batch.labels
        groups = batch.group_ids if batch.group_ids is not None else torch.zeros_like(batch.labels)
        rows.append(torch.stack([logits.double(), labels.double(), groups.double()], dim=1).cpu())
    return torch.cat(rows) if rows else torch.zeros((0, 3), dtype=torch.float64)


def evaluate(model: nn.Module, reader: ParquetBatchReader, device: torch.device, target: str = "observed",
             autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> Dict[str, float]:
    """AUC, GAUC and logloss of ``model`` on ``reader``'s split, over all ranks (same result on every rank)."""
    if target == "clean" and not reader.with_ground_truth:
        raise ValueError(f"{reader.path}: clean-label evaluation needs the schema's clean_label column")
    was_training = model.training
    model.eval()
    try:
        local = predict(model, reader, device, target, autocast)
    finally:
        model.train(was_training)
    rows = all_gather_varlen(local.to(device)).cpu().numpy()
    m = all_metrics(rows[:, 1], rows[:, 0], rows[:, 2].astype(np.int64))
    m["target"] = target  # type: ignore[assignment]
    return m

"""Distributed evaluation: every rank scores its share of a split into one metric state.

The state (:class:`~denoisrec.trainer.evaluation.metric_state.MetricState`) gathers the rows to rank 0 only,
computes the metrics there and broadcasts the scalars.

The metrics are identical to a single process scoring the whole split. The test split is scored against
``clean_label`` when the data has ground truth: that is the number that tells whether a denoiser learned the
users' real preferences. The target ``trusted`` scores the rows that carry a trusted label (the schema's
``trusted_label``; the others are left out) against it; :func:`evaluate_targets` scores several targets in one
pass and adds DeLong's interval of the AUC (:mod:`~denoisrec.trainer.evaluation.auc_interval`) to the ones asked.

**Context unknown at serving** (:class:`Marginal`, ``eval.marginalise``): under a ranker the logged list
position carries preference (the old ranker put liked items on top), so a model that reads it would score the
logged rows with the old ranker's knowledge; at serving the position is what the ranking decides. The named
context features are then marginalised over their training distribution, every row scored as the mean served
probability ``f̄(x) = Σ_v P_train(c = v) · σ(z(x, c = v))`` (several features: their product distribution),
reported as ``logit(f̄)``. A model that does not read the feature scores the same as without it.

Example::

    m = evaluate_targets(model, readers["valid"], device, ("observed", "trusted"), interval=("trusted",))
    m["trusted"]["auc"], m["trusted"]["auc_lo"], m["trusted"]["rows"]
    marginal = Marginal.from_reader(readers["train"], ["position"])   # 31 values and their shares
    m = evaluate_targets(model, readers["test"], device, ("clean",), marginal=marginal)
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from typing import Any, Callable, ContextManager, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.trainer.data.fs import open_parquet
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.errors import UsageError
from denoisrec.trainer.evaluation.auc_interval import auc_interval
from denoisrec.trainer.evaluation.metric_state import MetricState, Rows
from denoisrec.trainer.evaluation.metrics import all_metrics

TARGETS = ("observed", "clean", "trusted")
LABELS = {"observed": "labels", "clean": "clean_labels", "trusted": "trusted_labels"}  # the Batch field of each


#: the most value combinations scored per row (each is one forward pass of the batch).
MAX_COMBINATIONS = 256
_EPS = 1e-7


def value_shares(reader: Any, feature: str) -> Tuple[np.ndarray, np.ndarray]:
    """The values of ``feature`` in the split of ``reader`` and their shares of its rows.

    Args:
        reader: a :class:`~denoisrec.trainer.data.reader.ParquetBatchReader` (every file of its split is read).
        feature: a single-valued sparse column.

    Returns:
        ``(values, shares)``: the distinct ids (int64, ascending) and their row shares (float64, sum 1).
    """
    counts: dict = {}
    for f in reader.files:
        col = open_parquet(reader.dp, f).read(columns=[feature]).column(0).to_numpy(zero_copy_only=False)
        v, c = np.unique(col.astype(np.int64), return_counts=True)
        for a, b in zip(v.tolist(), c.tolist()):
            counts[a] = counts.get(a, 0) + b
    values = np.array(sorted(counts), dtype=np.int64)
    n = np.array([counts[v] for v in values.tolist()], dtype=np.float64)
    return values, n / n.sum()


@dataclasses.dataclass(frozen=True)
class Marginal:
    """The value combinations of the marginalised features and their weights (product of the shares)."""

    features: Tuple[str, ...]
    combos: Tuple[Tuple[Tuple[int, ...], float], ...]

    @classmethod
    def from_reader(cls, train: Any, features: Sequence[str]) -> "Marginal":
        """The training distribution of ``features`` (``eval.marginalise``).

        Args:
            train: the training split's reader (its schema names the features).
            features: context features of the schema, single-valued.

        Returns:
            The marginal; a :class:`UsageError` naming the option for a feature that is not a single-valued
            context feature, or for more than :data:`MAX_COMBINATIONS` value combinations.
        """
        schema = train.schema
        sparse = {f.name: f for f in schema.sparse}
        # readers without context features: the run withholds them (model.context=withhold), nothing reads them
        withheld = not schema.context_names
        features = [name for name in dict.fromkeys(features) if name in sparse or not withheld]
        for name in features:
            if name not in schema.context_names or sparse[name].multi_hot:  # typos: also the config check
                raise UsageError(
                    f"eval.marginalise={list(features)}: {name!r} is not a single-valued context feature of the "
                    f"schema (role: context); its context features are {', '.join(schema.context_names) or 'none'}"
                )
        shares = [value_shares(train, name) for name in features]
        total = int(np.prod([len(v) for v, _ in shares])) if shares else 0
        if total > MAX_COMBINATIONS:
            raise UsageError(
                f"eval.marginalise={list(features)}: {total} value combinations to score per row; "
                f"at most {MAX_COMBINATIONS} (name fewer features)"
            )
        combos = []
        for pick in itertools.product(*[list(zip(v.tolist(), s.tolist())) for v, s in shares]):
            combos.append((tuple(int(v) for v, _ in pick), float(np.prod([s for _, s in pick]))))
        return cls(tuple(features), tuple(combos))

    def logits(self, model: nn.Module, batch: Any, forward: Callable[[nn.Module, Any], torch.Tensor]) -> torch.Tensor:
        """``logit(f̄)`` of ``batch``: one forward pass per value combination.

        Args:
            model: the scored model.
            batch: a :class:`~denoisrec.trainer.data.batch.Batch`.
            forward: ``(model, batch) → logits [B, 1]``.

        Returns:
            float32 logits ``[B, 1]`` of the mean served probability.
        """
        kjt = batch.sparse_features
        keys = kjt.keys()
        bounds = kjt.offset_per_key()
        where = [(bounds[keys.index(f)], bounds[keys.index(f) + 1]) for f in self.features]
        mean: torch.Tensor = torch.zeros(())
        for values, weight in self.combos:
            ids = kjt.values().clone()
            for (lo, hi), v in zip(where, values):
                ids[lo:hi] = v
            fixed = KeyedJaggedTensor(
                keys=keys, values=ids, lengths=kjt.lengths(), weights=kjt.weights_or_none(), stride=kjt.stride()
            )
            logits = forward(model, dataclasses.replace(batch, sparse_features=fixed))
            mean = mean + weight * torch.sigmoid(logits.float())
        return torch.logit(mean.clamp(_EPS, 1 - _EPS))


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
    marginal: Optional[Marginal] = None,
) -> MetricState:
    """Score this rank's share of ``reader`` with ``model`` (eval mode) into ``state``, batch by batch:
    targets ``observed`` (the batch's labels), ``clean`` (its clean labels) and/or ``trusted`` (its trusted
    labels, NaN where a row has none); ``autocast`` wraps the forward (the run's precision); ``marginal``
    (``eval.marginalise``) scores each row marginalised over the training distribution of those context features.
    """
    was_training = model.training
    model.eval()
    try:
        for batch in reader:
            batch = batch.to(device, non_blocking=True)
            with autocast():
                logits = _forward(model, batch) if marginal is None else marginal.logits(model, batch, _forward)
            state.update(logits, {t: getattr(batch, LABELS[t]) for t in state.targets}, batch.group_ids)
    finally:
        model.train(was_training)
    return state


def _forward(model: nn.Module, batch: Any) -> torch.Tensor:
    _, (_, logits, _) = model(batch)
    return logits


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
    marginal: Optional[Marginal] = None,
) -> Dict[str, Dict[str, Any]]:
    """The metrics of every target in ``targets`` (``observed``, ``clean``, ``trusted``) from one scoring pass
    of ``reader``'s split over all ranks (:func:`masked_metrics`; the same dict on every rank, ``target`` set;
    ``marginal`` as in :func:`score`).
    """
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise ValueError(f"evaluate targets {bad}: expected some of {TARGETS}")
    if "clean" in targets and not reader.with_ground_truth:
        raise ValueError(f"{reader.path}: clean-label evaluation needs the schema's clean_label column")
    if "trusted" in targets and not reader.layout.with_trusted:
        raise ValueError(f"{reader.path}: trusted-label evaluation needs the schema's trusted_label column")
    state = score(model, reader, device, MetricState(tuple(targets), device=device), autocast, marginal)
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
    marginal: Optional[Marginal] = None,
) -> Dict[str, float]:
    """AUC, GAUC, logloss, calibration, NE and ECE of ``model`` on ``reader``'s split over all ranks (the
    same dict on every rank). ``target`` is ``observed`` or ``clean``; ``marginal`` as in :func:`score`.
    """
    if target not in ("observed", "clean"):
        raise ValueError(f"evaluate target={target!r}: expected observed or clean")
    if target == "clean" and not reader.with_ground_truth:
        raise ValueError(f"{reader.path}: clean-label evaluation needs the schema's clean_label column")
    state = score(model, reader, device, MetricState((target,), device=device), autocast, marginal)
    m = state.compute()[target]
    m["target"] = target  # type: ignore[assignment]
    return m

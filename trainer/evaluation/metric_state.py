"""Evaluation as metric state: per-batch ``update``, a gather to rank 0 in ``compute``, scalars broadcast.

The exact ranking metrics (AUC with average ranks for ties, GAUC; :mod:`denoisrec.trainer.evaluation.metrics`) need
every row's score at once, so the state keeps this rank's rows and ``compute`` gathers them to rank 0 only, which
computes the metrics and broadcasts the scalars; the other ranks never hold more than their own share. Per
row it keeps the logit (float32, the model's output precision), one float32 label per target (the batch's
label dtype; ``label_dtype=torch.float64`` for labels read from arbitrary input) and the int64 group id:
16 bytes a row for one target.

The gather receives each rank's rows straight into one exact-size buffer on rank 0 (``send``/``recv`` in rank
order: no padding, no concatenation copy), so the rows arrive in the same order as a one-process scoring of
the split, and the metrics equal those of a single process bit for bit.

Example::

    state = MetricState(targets=("observed", "clean"))
    for batch in reader:                                # every rank, its own share
        state.update(logits, {"observed": batch.labels, "clean": batch.clean_labels}, batch.group_ids)
    m = state.compute()                                 # the same dict on every rank; the state is empty again
    m["clean"]["auc"], m["observed"]["logloss"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist

from denoisrec.trainer.evaluation.metrics import all_metrics

ArrayLike = Union[torch.Tensor, np.ndarray]


@dataclass
class Rows:
    """Every rank's rows in rank order (on rank 0 after the gather): ``logits`` ``[N]``, ``labels[target]``
    ``[N]``, ``groups`` ``[N]`` int64 (zeros when the data has no group column).
    """

    logits: np.ndarray
    labels: Dict[str, np.ndarray]
    groups: np.ndarray


def metrics_per_target(rows: Rows) -> Dict[str, Dict[str, float]]:
    """:func:`~denoisrec.trainer.evaluation.metrics.all_metrics` of every target: the default reduction of
    :meth:`MetricState.compute`.
    """
    return {t: all_metrics(y, rows.logits, rows.groups) for t, y in rows.labels.items()}


def _tensor(x: ArrayLike) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _group(pg: Optional[Any]) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(pg) > 1


class MetricState:
    """This rank's scored rows of one evaluation, and their exact global metrics.

    Args:
        targets: the label sets scored against the same logits (e.g. ``observed``, ``clean``).
        label_dtype: how labels are kept; float32 (the batch's dtype) by default.
        device: where the gather's buffers live (the process group's device: CUDA under NCCL); the rows
            themselves are kept on the CPU between batches.
        process_group: the group to gather over (default: the world).
        sync: ``False`` computes on this rank's rows alone, without collectives (one rank of a group that scores
            on its own, e.g. ``predict_file(..., world_size=1)`` called on rank 0 of a job).
    """

    def __init__(
        self,
        targets: Sequence[str] = ("observed",),
        label_dtype: torch.dtype = torch.float32,
        device: Union[str, torch.device] = "cpu",
        process_group: Optional[Any] = None,
        sync: bool = True,
    ) -> None:
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f"MetricState targets={list(targets)!r}: expected distinct target names")
        self.targets = list(targets)
        self.label_dtype = label_dtype
        self.device = torch.device(device)
        self.pg = process_group
        self.sync = sync
        self._logits: List[torch.Tensor] = []
        self._labels: Dict[str, List[torch.Tensor]] = {t: [] for t in self.targets}
        self._groups: List[torch.Tensor] = []

    @property
    def rows(self) -> int:
        """Rows updated on this rank."""
        return sum(int(x.shape[0]) for x in self._logits)

    def update(self, logits: ArrayLike, labels: Mapping[str, ArrayLike], groups: Optional[ArrayLike] = None) -> None:
        """Add one batch: ``logits`` ``[B]`` (float32 or narrower: float16/bfloat16 widen exactly),
        ``labels[target]`` ``[B]`` for every target, ``groups`` ``[B]`` integer ids or ``None``.
        """
        z = _tensor(logits).detach().reshape(-1)
        if z.dtype == torch.float64:
            raise ValueError(
                "MetricState.update: float64 logits would be rounded to float32; pass the model's float32 output"
            )
        n = int(z.shape[0])
        missing = [t for t in self.targets if labels.get(t) is None]
        if missing:
            raise ValueError(f"MetricState.update: no labels for target(s) {missing}")
        self._logits.append(z.to("cpu", torch.float32))
        for t in self.targets:
            y = _tensor(labels[t]).detach().reshape(-1)
            if int(y.shape[0]) != n:
                raise ValueError(f"MetricState.update: {n} logits but {int(y.shape[0])} {t} labels")
            self._labels[t].append(y.to("cpu", self.label_dtype))
        g = torch.zeros(n, dtype=torch.int64) if groups is None else _tensor(groups).detach().reshape(-1)
        self._groups.append(g.to("cpu", torch.int64))

    def reset(self) -> None:
        """Forget the rows (``compute`` does it; the state can then score another pass)."""
        self.__init__(self.targets, self.label_dtype, self.device, self.pg, self.sync)  # type: ignore[misc]

    def local_rows(self) -> Rows:
        """This rank's rows, concatenated."""
        cat = lambda xs, dt: torch.cat(xs).numpy() if xs else np.zeros(0, dt)  # noqa: E731
        return Rows(
            cat(self._logits, np.float32),
            {t: cat(v, torch.empty(0, dtype=self.label_dtype).numpy().dtype) for t, v in self._labels.items()},
            cat(self._groups, np.int64),
        )

    def compute(self, reduce: Callable[[Rows], Any] = metrics_per_target) -> Any:
        """``reduce`` of every rank's rows, computed on rank 0 and broadcast (the same value on every rank).

        Every rank of the group calls it. ``reduce`` returns something picklable and small (scalars).
        ``compute`` ends the pass: the rows are released as they are gathered (the state is empty after it),
        so the gather never holds the per-batch pieces and their concatenation at once.
        """
        if not self.sync or not _group(self.pg):
            rows = self.local_rows()
            self.reset()
            return reduce(rows)
        gathered = self._gather_to_root()
        result = [reduce(gathered) if gathered is not None else None]
        del gathered
        dist.broadcast_object_list(
            result, src=dist.get_global_rank(self.pg, 0) if self.pg is not None else 0, group=self.pg
        )
        return result[0]

    def _gather_to_root(self) -> Optional[Rows]:
        """Every rank's rows on group rank 0 in rank order (``None`` elsewhere). Each field is received
        straight into its slice of one exact-size buffer.
        """
        pg, me, world = self.pg, dist.get_rank(self.pg), dist.get_world_size(self.pg)
        n = torch.tensor([self.rows], dtype=torch.int64, device=self.device)
        sizes_t = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes_t, n, group=pg)
        sizes = [int(s.item()) for s in sizes_t]
        fields: List[List[torch.Tensor]] = [self._logits] + [self._labels[t] for t in self.targets] + [self._groups]
        dtypes = [torch.float32] + [self.label_dtype] * len(self.targets) + [torch.int64]
        out: List[np.ndarray] = []
        for chunks, dtype in zip(fields, dtypes):
            local = torch.cat(chunks) if chunks else torch.zeros(0, dtype=dtype)
            chunks.clear()  # the concatenated copy replaces the per-batch pieces
            out.append(_gather_field(local, sizes, me, pg, self.device))
            del local
        if me != 0:
            return None
        return Rows(out[0], dict(zip(self.targets, out[1:-1])), out[-1])


def _gather_field(
    local: torch.Tensor, sizes: List[int], me: int, pg: Optional[Any], device: torch.device
) -> np.ndarray:
    """One 1-D field of every rank, concatenated in rank order on group rank 0 (empty elsewhere)."""
    peer = (lambda r: dist.get_global_rank(pg, r)) if pg is not None else (lambda r: r)  # noqa: E731
    if me != 0:
        if sizes[me]:
            dist.send(local.to(device), dst=peer(0), group=pg)
        return np.zeros(0, local.numpy().dtype)
    full = torch.empty(sum(sizes), dtype=local.dtype, device=device)
    full[: sizes[0]] = local.to(device)
    at = sizes[0]
    for r in range(1, len(sizes)):
        if sizes[r]:
            dist.recv(full[at : at + sizes[r]], src=peer(r), group=pg)
        at += sizes[r]
    return full.cpu().numpy()

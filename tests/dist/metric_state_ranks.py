"""Driver for tests/trainer/evaluation/test_metric_state.py: ``evaluate`` and ``MetricState`` on 3 gloo ranks (and a
2-rank subgroup) with uneven shares, against the all-gather-to-every-rank evaluation they replace and against one
process scoring all rows. The test also calls the checks in-process as one rank.

Every rank builds the same global rows (seeded), takes its own uneven share (weights 1, 0, 3: rank 1 scores
nothing; 1, 3 on two ranks) in batches of 97 and 256 rows, and checks; a failed check raises (torchrun then
fails).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from denoisrec.trainer.evaluation.metric_state import MetricState, Rows
from denoisrec.trainer.evaluation.metrics import all_metrics
from denoisrec.trainer.evaluation.scoring import all_gather_varlen, evaluate

N = 5003


def global_rows(seed: int) -> Dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    groups = r.integers(0, 40, N)
    clean = (r.random(N) < 0.3).astype(np.float32)
    observed = np.where(r.random(N) < 0.1, 1.0 - clean, clean).astype(np.float32)
    # logits rounded to a coarse grid: many ties, within and across ranks
    logits = np.round(r.normal(0, 1.5, N) + 1.2 * clean, 1).astype(np.float32)
    return {"logits": logits, "observed": observed, "clean": clean, "groups": groups.astype(np.int64)}


def share(rank: int, world: int) -> Tuple[int, int]:
    """Uneven contiguous shares: weights 1, 0, 3, 2, ... (rank 1 scores nothing when W = 3)."""
    w = [1, 0, 3, 2][:world] if world <= 4 else [1] * world
    if world == 2:
        w = [1, 3]
    if world == 1:
        w = [1]
    cuts = [0] + [N * sum(w[: i + 1]) // sum(w) for i in range(world)]
    return cuts[rank], cuts[rank + 1]


@dataclass
class FakeBatch:
    logits: torch.Tensor
    labels: torch.Tensor
    clean_labels: Optional[torch.Tensor]
    group_ids: Optional[torch.Tensor]

    def to(self, device: torch.device, non_blocking: bool = False) -> "FakeBatch":
        return self


class FakeReader:
    """This rank's rows in batches of 97, 256, 97, 256, ... rows (the model returns the stored logits)."""

    def __init__(self, rows: Dict[str, np.ndarray], lo: int, hi: int, groups: bool = True) -> None:
        self.rows, self.lo, self.hi, self.groups = rows, lo, hi, groups
        self.with_ground_truth, self.path = True, "fake"

    def __iter__(self):
        at, i = self.lo, 0
        while at < self.hi:
            b = min(self.hi, at + (97 if i % 2 == 0 else 256))
            t = {k: torch.from_numpy(v[at:b]) for k, v in self.rows.items()}
            yield FakeBatch(t["logits"], t["observed"], t["clean"], t["groups"] if self.groups else None)
            at, i = b, i + 1


class FakeModel(nn.Module):
    def forward(self, batch: FakeBatch) -> Any:
        return torch.zeros(()), (None, batch.logits, None)


def old_evaluate(reader: FakeReader, target: str) -> Dict[str, Any]:
    """The evaluation this replaces: [n, 3] float64 rows all-gathered to every rank, metrics on every rank."""
    rows: List[torch.Tensor] = []
    for batch in reader:
        labels = batch.clean_labels if target == "clean" else batch.labels
        groups = batch.group_ids if batch.group_ids is not None else torch.zeros_like(batch.labels)
        rows.append(torch.stack([batch.logits.double(), labels.double(), groups.double()], dim=1))
    local = torch.cat(rows) if rows else torch.zeros((0, 3), dtype=torch.float64)
    g = all_gather_varlen(local).numpy()
    m = all_metrics(g[:, 1], g[:, 0], g[:, 2].astype(np.int64))
    m["target"] = target
    return m


def same(a: Dict[str, Any], b: Dict[str, Any], what: str) -> None:
    assert a.keys() == b.keys(), (what, sorted(a), sorted(b))
    for k in a:
        x, y = a[k], b[k]
        ok = x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        assert ok, f"{what}: {k} {x!r} != {y!r}"


def check_evaluate(rank: int, world: int) -> None:
    """``evaluate`` over the default group (or one process) equals the all-gather evaluation and one process."""
    lo, hi = share(rank, world)
    for seed in (0, 1):
        rows = global_rows(seed)
        one_process = {t: all_metrics(rows[t], rows["logits"], rows["groups"]) for t in ("observed", "clean")}
        for groups in (True, False):
            reader = FakeReader(rows, lo, hi, groups)
            for target in ("observed", "clean"):
                new = evaluate(FakeModel(), reader, torch.device("cpu"), target)
                same(new, old_evaluate(reader, target), f"seed {seed} {target} groups={groups} vs all-gather")
                if groups:
                    same(
                        {k: v for k, v in new.items() if k != "target"},
                        one_process[target],
                        f"seed {seed} {target} vs one process",
                    )


def check_state(rank: int, world: int, pg: Any = None) -> None:
    """Two targets in one state over ``pg``, batch by batch, equal one process; the reduction runs on the
    group's rank 0 only, on every row in order.
    """
    lo, hi = share(rank, world)
    rows = global_rows(2)
    one_process = {t: all_metrics(rows[t], rows["logits"], rows["groups"]) for t in ("observed", "clean")}
    state = MetricState(("observed", "clean"), process_group=pg)
    for b in FakeReader(rows, lo, hi):
        state.update(b.logits, {"observed": b.labels, "clean": b.clean_labels}, b.group_ids)
    assert state.rows == hi - lo
    both = state.compute()
    for t in ("observed", "clean"):
        same(both[t], one_process[t], f"{world}-rank state {t}")
    for b in FakeReader(rows, lo, hi):
        state.update(b.logits, {"observed": b.labels, "clean": b.clean_labels}, b.group_ids)

    def where(g: Rows) -> Tuple[int, int]:
        assert np.array_equal(g.logits, rows["logits"]) and np.array_equal(g.groups, rows["groups"])
        assert np.array_equal(g.labels["clean"], rows["clean"])
        return rank, int(g.logits.size)

    assert state.compute(where) == (0, N)  # computed by rank 0 on every row, the result on every rank
    if rank == world - 1:  # one rank alone (sync=False): its own rows, no collective the others would wait for
        alone = MetricState(("observed",), sync=False)
        for b in FakeReader(rows, lo, hi):
            alone.update(b.logits, {"observed": b.labels}, b.group_ids)
        mine = slice(lo, hi)
        same(
            alone.compute()["observed"],
            all_metrics(rows["observed"][mine], rows["logits"][mine], rows["groups"][mine]),
            "sync=False",
        )


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    check_evaluate(rank, world)
    check_state(rank, world)
    pair = dist.new_group([0, 2])  # a 2-rank subgroup (ranks 0 and 2 of 3): the gather over a process group
    if rank in (0, 2):
        check_state(dist.get_rank(pair), 2, pair)
    dist.barrier()
    if rank == 0:
        print(f"metric state OK on {world} rank(s) and a 2-rank subgroup")
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

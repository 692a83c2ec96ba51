"""Peak memory per rank of one evaluation pass on the ``product`` test split: all-gather (before) vs metric state.

The evaluation's own memory is what it keeps per row of the split: the scored rows until the metrics are
computed, the gather's buffers, and the exact metrics' work arrays. A batch's features are read, scored and
dropped the same way by both implementations, so this benchmark feeds ``evaluate`` batches that carry only
what it reads (float32 logit, label and clean label, int64 group id; seeded, generated batch by batch, never
stored) through a pass-through model. The row count defaults to the ``product`` preset's test split
(10,960,000 rows); ``--rows`` takes a fraction, and the numbers scale linearly with it.

Each implementation runs in its own torchrun launch of ``--nproc`` gloo ranks (the two interleaved
``--repeat`` times): ``before`` is the evaluation of commit bad11c2 (``[n, 3]`` float64 rows of each rank,
all-gathered to every rank, metrics on every rank, with that commit's ``gauc``), ``after`` is
:func:`denoisrec.trainer.evaluation.scoring.evaluate`
(:class:`~denoisrec.trainer.evaluation.metric_state.MetricState`: gather to rank 0, scalars broadcast). Memory is the
Linux peak resident set (``VmHWM`` of ``/proc/self/status``), reset just before the pass through
``/proc/self/clear_refs`` (``5``), minus the resident set at that moment: the pass's own high-water mark
on each rank. Both must give the same metrics (checked).

Example::

    python benchmarks/eval_memory.py --nproc 3                    # the full product test split
    python benchmarks/eval_memory.py --nproc 3 --rows 2000000     # a fraction
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

PRODUCT_TEST_ROWS = 10_960_000


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> int:
    """Reset this process's peak RSS to its current RSS; return that RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


@dataclass
class Batch:
    """What evaluation reads from a batch (see denoisrec.trainer.data.batch.Batch)."""

    logits: torch.Tensor
    labels: torch.Tensor
    clean_labels: torch.Tensor
    group_ids: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        return self


class Reader:
    """This rank's rows ``[r·N/W, (r+1)·N/W)`` in batches, generated batch by batch from a seed."""

    def __init__(self, rows: int, batch_size: int, rank: int, world: int) -> None:
        self.lo, self.hi = rank * rows // world, (rank + 1) * rows // world
        self.batch_size, self.with_ground_truth, self.path = batch_size, True, "synthetic-product-test"

    def __iter__(self):
        for at in range(self.lo, self.hi, self.batch_size):
            n = min(self.batch_size, self.hi - at)
            r = np.random.default_rng(at)
            clean = (r.random(n) < 0.3).astype(np.float32)
            labels = np.where(r.random(n) < 0.1, 1 - clean, clean).astype(np.float32)
            logits = (r.normal(0, 1.5, n) + 1.2 * clean).astype(np.float32)
            groups = r.integers(0, 3_640_000, n)
            yield Batch(*(torch.from_numpy(x) for x in (logits, labels, clean, groups)))


class PassThrough(nn.Module):
    def forward(self, batch: Batch) -> Any:
        return torch.zeros(()), (None, batch.logits, None)


def gauc_before(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """``metrics.gauc`` of commit bad11c2 (the same values; its work arrays all live until it returns)."""
    labels = np.asarray(labels) > 0.5
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups)
    if labels.size == 0:
        return float("nan")
    order = np.lexsort((scores, groups))
    g, s, y = groups[order], scores[order], labels[order]
    n = g.size
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_idx = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    pos_in_group = np.arange(n) - group_start[group_idx] + 1.0
    new_tie = new_group | np.r_[True, s[1:] != s[:-1]]
    tie_idx = np.cumsum(new_tie) - 1
    tie_sum = np.bincount(tie_idx, weights=pos_in_group)
    tie_cnt = np.bincount(tie_idx)
    ranks = (tie_sum / tie_cnt)[tie_idx]
    n_groups = group_start.size
    n_pos = np.bincount(group_idx, weights=y, minlength=n_groups)
    n_all = np.bincount(group_idx, minlength=n_groups).astype(np.float64)
    n_neg = n_all - n_pos
    rank_pos = np.bincount(group_idx, weights=ranks * y, minlength=n_groups)
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return float("nan")
    per_group = (rank_pos[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2.0) / (n_pos[ok] * n_neg[ok])
    return float(np.sum(per_group * n_all[ok]) / np.sum(n_all[ok]))


@torch.no_grad()
def evaluate_before(model: nn.Module, reader: Reader, device: torch.device, target: str) -> Dict[str, Any]:
    """The evaluation of commit bad11c2 (trainer/evaluation/scoring.py and its gauc), kept here as the baseline."""
    from denoisrec.trainer.evaluation import metrics
    from denoisrec.trainer.evaluation.metrics import all_metrics
    from denoisrec.trainer.evaluation.scoring import all_gather_varlen

    metrics.gauc = gauc_before  # this process runs the baseline only

    rows: List[torch.Tensor] = []
    for batch in reader:
        _, (_, logits, _) = model(batch)
        labels = batch.clean_labels if target == "clean" else batch.labels
        rows.append(torch.stack([logits.double(), labels.double(), batch.group_ids.double()], dim=1).cpu())
    local = torch.cat(rows) if rows else torch.zeros((0, 3), dtype=torch.float64)
    del rows
    g = all_gather_varlen(local.to(device)).cpu().numpy()
    m = all_metrics(g[:, 1], g[:, 0], g[:, 2].astype(np.int64))
    m["target"] = target  # type: ignore[assignment]
    return m


def rank_main(impl: str, rows: int, batch_size: int, target: str) -> None:
    from denoisrec.trainer.evaluation.scoring import evaluate

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    reader, model, cpu = Reader(rows, batch_size, rank, world), PassThrough(), torch.device("cpu")
    dist.barrier()
    base = reset_peak()
    t0 = time.perf_counter()
    m = (evaluate_before if impl == "before" else evaluate)(model, reader, cpu, target)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM") * 1024
    out: List[Optional[Dict[str, Any]]] = [None] * world
    dist.all_gather_object(
        out,
        {
            "rank": rank,
            "rows": reader.hi - reader.lo,
            "base_rss": base,
            "peak_rss": peak,
            "eval_peak": peak - base,
            "seconds": seconds,
        },
    )
    if rank == 0:
        print(
            "RESULT "
            + json.dumps({"impl": impl, "world": world, "rows": rows, "target": target, "metrics": m, "ranks": out})
        )
    dist.destroy_process_group()


def launch(impl: str, a: argparse.Namespace) -> Dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={a.nproc}",
        os.path.abspath(__file__),
        "--rank-main",
        impl,
        "--rows",
        str(a.rows),
        "--batch-size",
        str(a.batch_size),
        "--target",
        a.target,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nproc", type=int, default=3)
    ap.add_argument("--rows", type=int, default=PRODUCT_TEST_ROWS, help="rows of the split (all ranks)")
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--target", choices=("observed", "clean"), default="clean")
    ap.add_argument("--repeat", type=int, default=1, help="before/after pairs, interleaved")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--rank-main", choices=("before", "after"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rank_main:
        return rank_main(a.rank_main, a.rows, a.batch_size, a.target)
    mib = 2**20
    results = []
    for i in range(a.repeat):
        pair = {impl: launch(impl, a) for impl in ("before", "after")}
        same = {k: (pair["before"]["metrics"][k], pair["after"]["metrics"][k]) for k in pair["after"]["metrics"]}
        diff = {k: v for k, v in same.items() if not (v[0] == v[1] or (v[0] != v[0] and v[1] != v[1]))}
        if diff:
            raise SystemExit(f"metrics differ between before and after: {diff}")
        results.append(pair)
        print(
            f"pair {i + 1}/{a.repeat}: {a.rows:,} rows on {a.nproc} ranks, batch {a.batch_size}; "
            f"metrics identical (AUC {pair['after']['metrics']['auc']:.6f}, GAUC "
            f"{pair['after']['metrics']['gauc']:.6f})"
        )
        for r in range(a.nproc):
            b, n = pair["before"]["ranks"][r], pair["after"]["ranks"][r]
            print(
                f"  rank {r} ({n['rows']:,} rows): eval peak {b['eval_peak'] / mib:8.1f} MiB -> "
                f"{n['eval_peak'] / mib:8.1f} MiB ({n['eval_peak'] / max(b['eval_peak'], 1):.2f}x); "
                f"peak RSS {b['peak_rss'] / mib:8.1f} -> {n['peak_rss'] / mib:8.1f} MiB; "
                f"{b['seconds']:.1f} s -> {n['seconds']:.1f} s"
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

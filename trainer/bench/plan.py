"""``denoisrec bench plan``: TorchRec's sharding plan for GPU clusters this machine is not, by simulation.

For each table scale (every table ``k`` times the rows) and world size it plans the training module's
tables the way training does (:mod:`~denoisrec.trainer.bench.plan_sim`), over H100 hosts of 8 GPUs by
default, and prints what the planner chose (tables per sharding type), the peak HBM/DDR per rank, the
planner's estimated step time of the embedding part at ``--batch-size`` per rank, the pooled-embedding
bytes the all-to-alls move per step, and the reader cores each GPU needs to feed that step rate at
``--reader-us-per-row`` CPU µs per row.

Example::

    denoisrec bench plan --preset product --scales 1,10,100 --world-sizes 8,64,512 --out runs/bench-plan
    denoisrec bench plan --quick          # the tiny preset on 2 and 8 GPUs, seconds

Writes ``plan.json``, ``plan.md`` and ``plan.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any, Dict, List

from denoisrec.trainer.bench.report import BenchReport, Column, apply_quick, markdown_table
from denoisrec.trainer.errors import UsageError

# CPU µs per row of the reader's default path (262,144-row shuffle buffer) on product-shaped data:
# benchmarks/README.md, "Ingest with the default 262,144-row shuffle buffer", product-2m.
READER_US_PER_ROW = 5.99
# Samples/s per H100 of MLPerf's DLRM-DCNv2 (HugeCTR): a GPU step rate that includes the dense part, which the
# planner's estimate leaves out.
REFERENCE_RATE = 1.6e6
ABBR = {
    "data_parallel": "DP",
    "table_wise": "TW",
    "column_wise": "CW",
    "row_wise": "RW",
    "table_row_wise": "TWRW",
    "table_column_wise": "TWCW",
    "grid_shard": "GRID",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="product", help="the gen-data preset whose schema is planned")
    p.add_argument("--scales", default="1,10,100", help="comma-separated: every table this many times the rows")
    p.add_argument("--world-sizes", default="8,64,512", help="comma-separated GPU counts")
    p.add_argument("--batch-size", type=int, default=8192, help="samples per GPU per step")
    p.add_argument("--model", default="dlrm", help="model.name")
    p.add_argument("--embedding-dim", type=int, default=16, help="model.embedding_dim (the project's default)")
    p.add_argument("--denoiser", default="bce", help="denoiser.name (its tables and constraints are planned too)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    p.add_argument("--gpus-per-host", type=int, default=8, help="GPUs per host (NVLink within, the network between)")
    p.add_argument("--hbm-gib", type=float, default=80.0, help="HBM per GPU, GiB (H100: 80)")
    p.add_argument("--intra-host-gbs", type=float, default=450.0, help="NVLink GB/s per GPU and direction")
    p.add_argument("--inter-host-gbs", type=float, default=50.0, help="network GB/s per GPU and direction")
    p.add_argument("--reader-us-per-row", type=float, default=READER_US_PER_ROW, help="the reader's CPU µs per row")
    p.add_argument(
        "--reference-rate",
        type=float,
        default=REFERENCE_RATE,
        help="samples/s per GPU the reader is also sized for (default: MLPerf DLRM-DCNv2 on an H100)",
    )
    p.add_argument(
        "--planner-timeout",
        type=int,
        default=None,
        help="seconds each plan may search (TorchRec's timeout_seconds; default: the full search)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="PLAN_JSON",
        help="no planning: one table and figure from the rows of earlier plan.json files (runs split by scale)",
    )
    p.add_argument("--out", default="runs/bench-plan", help="report directory (plan.{json,md,png})")
    p.add_argument("--quick", action="store_true", help="the tiny preset on 2 and 8 GPUs at batch 64 (CI smoke)")


def _ints(raw: str, option: str) -> List[int]:
    try:
        values = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{option} {raw!r}: expected comma-separated integers, e.g. 8,64,512") from None
    if not values or min(values) < 1:
        raise UsageError(f"{option} {raw!r}: expected positive integers, e.g. 8,64,512")
    return values


def _check(a: argparse.Namespace) -> None:
    """Every option error in one line, before the planner starts."""
    from denoisrec.trainer.datasets.synthetic import PRESETS

    if a.preset not in PRESETS:
        raise UsageError(f"--preset {a.preset!r}: expected one of {sorted(PRESETS)}")
    for w in _ints(a.world_sizes, "--world-sizes"):
        if w > a.gpus_per_host and w % a.gpus_per_host:
            raise UsageError(f"--world-sizes {w}: not a whole number of {a.gpus_per_host}-GPU hosts (--gpus-per-host)")
    _ints(a.scales, "--scales")
    for name in ("batch_size", "embedding_dim", "gpus_per_host"):
        if getattr(a, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(a, name)}: must be positive")
    for name in ("hbm_gib", "intra_host_gbs", "inter_host_gbs", "reader_us_per_row", "reference_rate"):
        if getattr(a, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(a, name)}: must be positive")


def _config(a: argparse.Namespace) -> Any:
    from denoisrec.trainer.config.tree import Config, apply_overrides

    cfg = Config()
    cfg.model.name = a.model
    cfg.model.embedding_dim = a.embedding_dim
    cfg.denoiser.name = a.denoiser
    return apply_overrides(cfg, list(a.set))


def plan_row(
    sim: Any, scale: int, table_rows: int, cluster: Any, reader_us_per_row: float, reference_rate: float
) -> Dict[str, Any]:
    """One line of the table (and of ``plan.json``'s ``rows``) from a :class:`~.plan_sim.SimPlan`.

    Reader cores per GPU: the GPU's samples/s × the reader's CPU µs per row, at the planner's step rate
    (its embedding part only: an upper bound on the rate) and at ``reference_rate``.
    """
    from denoisrec.trainer.bench.plan_sim import a2a_bytes, sharding_counts

    W, B = sim.world_size, sim.batch_size
    a2a = a2a_bytes(sim.tables, W, cluster.gpus_per_host, B)
    moved = a2a["forward"] + a2a["backward"]
    step_s = sim.step_ms / 1000
    per_gpu_rate = B / step_s if step_s > 0 else float("inf")
    slow = sim.slowest_rank()
    return {
        "scale": scale,
        "table_rows": table_rows,
        "world_size": W,
        "hosts": max(1, W // cluster.gpus_per_host),
        "batch_size": B,
        "sharding": sharding_counts(sim.tables),
        "types": " ".join(f"{ABBR.get(k, k)} {n}" for k, n in sharding_counts(sim.tables).items()),
        "hbm_max_gib": max(sim.hbm_per_rank) / 1024**3,
        "hbm_mean_gib": sum(sim.hbm_per_rank) / W / 1024**3,
        "hbm_usable_gib": sim.hbm_usable / 1024**3,
        "ddr_max_gib": max(sim.ddr_per_rank) / 1024**3,
        "step_ms": sim.step_ms,
        "slowest_rank": slow,
        "step_parts_ms": sim.perf_per_rank[slow],
        "samples_per_s": W * per_gpu_rate,
        "a2a_bytes": a2a,
        "a2a_mb_per_rank": moved / W / 1e6,
        "a2a_bytes_per_sample": moved / (W * B),
        "inter_host_share": a2a["inter_host"] / moved if moved else 0.0,
        "reader_cores_per_gpu": per_gpu_rate * reader_us_per_row / 1e6,
        "reader_cores_at_reference": reference_rate * reader_us_per_row / 1e6,
        "proposals": sim.proposals,
        "tables": {t.name: t.sharding_type for t in sim.tables},
    }


COLUMNS: List[Column] = [
    ("table rows", lambda r: f"{r['scale']}× ({r['table_rows'] / 1e6:.1f}M)", "{}"),
    ("GPUs", "world_size", "{:d}"),
    ("tables per type", "types", "{}"),
    ("HBM/rank max GiB", "hbm_max_gib", "{:.2f}"),
    ("DDR/rank GiB", "ddr_max_gib", "{:.2f}"),
    ("est. step ms", "step_ms", "{:.3f}"),
    ("samples/s", "samples_per_s", "{:,.0f}"),
    ("a2a MB/rank/step", "a2a_mb_per_rank", "{:.1f}"),
    ("a2a B/sample", "a2a_bytes_per_sample", "{:,.0f}"),
    ("inter-host share", "inter_host_share", "{:.0%}"),
    ("reader cores/GPU at est. step", "reader_cores_per_gpu", "{:.1f}"),
]


def _plot(rows: List[Dict[str, Any]], hbm_gib: float, reference_cores: float) -> Any:
    def draw(fig: Any) -> None:
        panels = [
            ("est. step ms (embedding part)", "step_ms"),
            ("HBM per rank, GiB (max)", "hbm_max_gib"),
            ("a2a MB per rank per step", "a2a_mb_per_rank"),
            ("reader cores per GPU", "reader_cores_per_gpu"),
        ]
        for i, (title, key) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            for scale in sorted({r["scale"] for r in rows}):
                rs = [r for r in rows if r["scale"] == scale]
                ax.plot([r["world_size"] for r in rs], [r[key] for r in rs], marker="o", label=f"{scale}× rows")
            if key == "hbm_max_gib":
                ax.axhline(hbm_gib, color="grey", linestyle="--", linewidth=1, label="HBM")
                ax.set_yscale("log")
            if key == "reader_cores_per_gpu":
                ax.axhline(reference_cores, color="grey", linestyle="--", linewidth=1, label="at reference rate")
                ax.set_yscale("log")
                ax.legend(fontsize=8)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("GPUs")
            ax.set_title(title, fontsize=9)
            if i == 0:
                ax.legend(fontsize=8)

    return draw


def _merged_rows(paths: List[str]) -> List[Dict[str, Any]]:
    """The rows of earlier ``plan.json`` files, by scale then world size."""
    rows: List[Dict[str, Any]] = []
    for path in paths:
        try:
            with open(path) as f:
                rows += json.load(f)["rows"]
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"--merge {path}: not a bench plan report ({e})") from None
    return sorted(rows, key=lambda r: (r["scale"], r["world_size"]))


def run(a: argparse.Namespace) -> int:
    apply_quick(a, {"preset": "tiny", "scales": "1", "world_sizes": "2,8", "batch_size": 64})
    _check(a)
    from denoisrec.trainer.bench.plan_sim import Cluster, planning_module, scaled_schema, simulate_plan
    from denoisrec.trainer.datasets.synthetic import preset_by_name, schema_for

    cluster = Cluster(
        hbm_bytes=int(a.hbm_gib * 1024**3),
        gpus_per_host=a.gpus_per_host,
        intra_host_bw=a.intra_host_gbs * 1e9,
        inter_host_bw=a.inter_host_gbs * 1e9,
    )
    cfg = _config(a)
    base = schema_for(preset_by_name(a.preset))
    rows: List[Dict[str, Any]] = _merged_rows(a.merge) if a.merge else []
    for scale in [] if a.merge else _ints(a.scales, "--scales"):
        schema = scaled_schema(base, scale)
        module = planning_module(cfg, schema)
        table_rows = sum(f.num_embeddings for f in schema.sparse)
        for w in _ints(a.world_sizes, "--world-sizes"):
            t0 = time.perf_counter()
            sim = simulate_plan(module, cfg, cluster, w, a.batch_size, timeout_s=a.planner_timeout)
            row = plan_row(sim, scale, table_rows, cluster, a.reader_us_per_row, a.reference_rate)
            row["planner_s"] = time.perf_counter() - t0
            rows.append(row)
            print(
                f"{scale}x rows, {w} GPUs: {row['types']}; HBM/rank {row['hbm_max_gib']:.2f} GiB; "
                f"step {row['step_ms']:.3f} ms; a2a {row['a2a_mb_per_rank']:.1f} MB/rank; "
                f"reader {row['reader_cores_per_gpu']:.1f} cores/GPU (planned in {row['planner_s']:.0f} s)",
                flush=True,
            )
    report = BenchReport(
        name="plan",
        params={
            "preset": a.preset,
            "model": a.model,
            "embedding_dim": a.embedding_dim,
            "denoiser": a.denoiser,
            "set": list(a.set),
            "batch_size_per_gpu": a.batch_size,
            "cluster": dataclasses.asdict(cluster),
            "reader_us_per_row": a.reader_us_per_row,
            "reference_rate": a.reference_rate,
            "elem_bytes": 4,
            "planner_timeout_s": a.planner_timeout,
            "merged": a.merge,
        },
        rows=rows,
        markdown=markdown_table(rows, COLUMNS),
        notes=[
            f"{a.model} d={a.embedding_dim} + {a.denoiser}, {cfg.optim.sparse} fused; {a.batch_size} samples/GPU; "
            f"{a.hbm_gib:g} GiB HBM, {a.gpus_per_host} GPUs/host, NVLink {a.intra_host_gbs:g} GB/s, "
            f"network {a.inter_host_gbs:g} GB/s per GPU and direction",
            "est. step ms: the planner's estimate of the slowest rank's embedding work (lookups, input and output "
            "all-to-alls, forward and backward); the dense MLP and its all-reduce are not in it",
            "a2a: fp32 pooled embeddings between ranks, forward + backward, summed over ranks / world size",
            f"reader cores/GPU: the GPU's planned samples/s × {a.reader_us_per_row} CPU µs/row; at "
            f"{a.reference_rate:,.0f} samples/s per GPU: {a.reference_rate * a.reader_us_per_row / 1e6:.1f} cores",
        ],
    )
    paths = report.write(a.out, plot=_plot(rows, a.hbm_gib, a.reference_rate * a.reader_us_per_row / 1e6))
    print(report.markdown)
    print("wrote " + ", ".join(paths.values()))
    return 0

"""``denoisrec bench serving``: a run's serving artefacts against its TorchRec model, in one process.

For each format (``torchscript``, ``exported-program``) it exports the run (:mod:`denoisrec.trainer.serving.export`),
reports the artefact's size and load time, then scores the first ``--rows`` rows of ``--data`` at each
``--batch-sizes`` in interleaved rounds: the artefacts and the TorchRec model (``load_model_file``, the
model ``denoisrec predict`` runs) on the same prebuilt inputs, so the ratios are robust to other load on the
machine. It checks that the artefacts' logits equal the model's (max |diff| in the table).

Example::

    denoisrec bench serving --run runs/dlrm --data data/small/test --out runs/dlrm/bench_serving

Writes ``serving.json`` (the numbers and the environment), ``serving.md`` and ``serving.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

import numpy as np
import pyarrow.parquet as pq

if TYPE_CHECKING:  # the annotations only: torch is imported inside the functions that run
    import torch

FORMATS = ("torchscript", "exported-program")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory with model.pt")
    p.add_argument("--data", required=True, help="a Parquet file or split directory to score (e.g. data/small/test)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--rows", type=int, default=65536, help="rows to score per batch size and round")
    p.add_argument("--batch-sizes", default="1,64,1024,8192", help="batch sizes to score at, comma-separated")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each rate is the median over them")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: TorchScript only, 2,048 rows, batch sizes 1 and 256 (at most 50 calls), 1 round",
    )


def _inputs(table: Any, spec: Dict[str, Any]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """The documented serving input of an Arrow table (raw ids, offsets, dense)."""
    import torch  # here, not at import: `denoisrec --help` and option errors come before torch

    n = table.num_rows
    cols = spec["inputs"]["dense"]["columns"]
    dense = torch.from_numpy(
        np.stack([table.column(c).to_numpy().astype(np.float32) for c in cols], axis=1)
        if cols
        else np.zeros((n, 0), np.float32)
    )
    values, offsets = {}, {}
    for f in spec["inputs"]["sparse"]:
        col = table.column(f["name"]).combine_chunks()
        if f["multi_hot"]:
            values[f["name"]] = torch.from_numpy(col.values.to_numpy().astype(np.int64))
            offsets[f["name"]] = torch.from_numpy(col.offsets.to_numpy().astype(np.int64) - int(col.offsets[0].as_py()))
        else:
            values[f["name"]] = torch.from_numpy(col.to_numpy().astype(np.int64))
            offsets[f["name"]] = torch.arange(n + 1, dtype=torch.int64)
    return dense, values, offsets


def _kjt(
    names: List[str], dense: torch.Tensor, values: Dict[str, torch.Tensor], offsets: Dict[str, torch.Tensor]
) -> Any:
    import torch  # here, not at import: `denoisrec --help` and option errors come before torch
    from torchrec import KeyedJaggedTensor

    return KeyedJaggedTensor(
        keys=names,
        values=torch.cat([values[n] for n in names]),
        lengths=torch.cat([offsets[n].diff() for n in names]).int(),
        stride=dense.shape[0],
    )


def run(a: argparse.Namespace) -> int:
    import torch  # here, not at import: `denoisrec --help` and option errors come before torch

    from denoisrec.models import load_model_file
    from denoisrec.trainer.serving.export import export_serving, load_artefact
    from denoisrec.trainer.serving.predict import input_files

    torch.set_num_threads(a.threads)
    rows, sizes, rounds = (
        (2048, [1, 256], 1) if a.quick else (a.rows, [int(s) for s in a.batch_sizes.split(",")], a.rounds)
    )
    os.makedirs(a.out, exist_ok=True)
    loaded = load_model_file(os.path.join(a.run, "model.pt"))
    model = loaded.model.eval()
    names = [n for n, _ in loaded.spec.features]
    table = pq.read_table(input_files(a.data)[0]).slice(0, rows)
    rows = table.num_rows

    artefacts: Dict[str, Any] = {}
    report: Dict[str, Any] = {
        "run": a.run,
        "model": loaded.spec.name,
        "rows": rows,
        "threads": a.threads,
        "artefacts": {},
        "rows_per_s": {},
        "max_abs_diff": {},
    }
    spec = None
    for fmt in FORMATS[:1] if a.quick else FORMATS:
        r = export_serving(a.run, fmt, out=os.path.join(a.out, fmt))
        t = time.perf_counter()
        artefacts[fmt] = load_artefact(r["artefact"])
        load_s = time.perf_counter() - t
        report["artefacts"][fmt] = {
            "bytes": r["artefact_bytes"],
            "load_seconds": round(load_s, 3),
            "export_seconds": r["export_seconds"],
            "table_bytes": r["table_bytes"],
        }
        with open(r["spec"]) as f:
            spec = json.load(f)
    assert spec is not None
    full = _inputs(table, spec)

    # Whole-split agreement: the artefacts' logits against the TorchRec model's.
    with torch.no_grad():
        ref = model(full[0], _kjt(names, *full)).squeeze(-1)
        for fmt, m in artefacts.items():
            report["max_abs_diff"][fmt] = float((m(*full)["logit"] - ref).abs().max())

    def batches(bs: int) -> List[Tuple[torch.Tensor, Dict[str, torch.Tensor], Dict[str, torch.Tensor], Any]]:
        calls = max(1, min(rows // bs, 50 if a.quick else 2000))
        out = []
        for i in range(calls):
            part = _inputs(table.slice(i * bs, bs), spec)
            out.append((*part, _kjt(names, *part)))
        return out

    def artefact_runner(m: Any) -> Callable[[Any], Any]:
        return lambda b: m(b[0], b[1], b[2])

    runners: Dict[str, Callable[[Any], Any]] = {"torchrec model (predict)": lambda b: model(b[0], b[3])}
    runners.update({fmt: artefact_runner(m) for fmt, m in artefacts.items()})
    for bs in sizes:
        bl = batches(bs)
        n = sum(int(b[0].shape[0]) for b in bl)
        with torch.no_grad():
            for runner in runners.values():  # warm-up
                runner(bl[0])
            times: Dict[str, List[float]] = {k: [] for k in runners}
            for _ in range(rounds):
                for k, runner in runners.items():
                    t = time.perf_counter()
                    for b in bl:
                        runner(b)
                    times[k].append(time.perf_counter() - t)
        report["rows_per_s"][str(bs)] = {k: n / float(np.median(v)) for k, v in times.items()}

    from denoisrec.trainer.bench.report import BenchReport

    rep = BenchReport(
        "serving",
        params={
            "run": a.run,
            "data": a.data,
            "model": loaded.spec.name,
            "rows": rows,
            "batch_sizes": sizes,
            "rounds": rounds,
            "threads": a.threads,
            "quick": a.quick,
        },
    )
    rep.raw = report
    rep.rows = [
        {"batch_size": int(bs), "runner": k, "rows_per_s": v, "vs_model": v / d["torchrec model (predict)"]}
        for bs, d in report["rows_per_s"].items()
        for k, v in d.items()
    ]
    lines = [
        f"Serving bench: {loaded.spec.name} ({a.run}), {rows:,} rows, {a.threads} thread(s), {rounds} round(s).",
        "",
        "| artefact | size | load | export | max abs diff vs model |",
        "|---|---|---|---|---|",
    ]
    for fmt, r in report["artefacts"].items():
        lines.append(
            f"| {fmt} | {r['bytes'] / 2**20:.2f} MiB | {r['load_seconds']:.2f} s "
            f"| {r['export_seconds']:.1f} s "
            f"| {report['max_abs_diff'][fmt]:.2g} |"
        )
    lines += ["", "| batch | " + " | ".join(runners) + " |", "|---" * (len(runners) + 1) + "|"]
    for bs, d in report["rows_per_s"].items():
        base = d["torchrec model (predict)"]
        lines.append(f"| {bs} | " + " | ".join(f"{v:,.0f}/s ({v / base:.2f}×)" for v in d.values()) + " |")
    rep.markdown = "\n".join(lines)
    if a.quick:
        rep.notes.append("--quick: TorchScript only, 2,048 rows, 1 round; a smoke test, not a measurement")
    paths = rep.write(a.out, plot=lambda fig: plot(fig, rep))
    print(rep.markdown)
    print("wrote " + ", ".join(paths.values()))
    return 0


def plot(fig: Any, rep: Any) -> None:
    """Left: predictions/s per batch size for the TorchRec model and each artefact (log scale, the ratio to the
    model written on each bar). Right: each artefact's load and export time.

    ``rep`` is the :class:`~denoisrec.trainer.bench.report.BenchReport` or one read back from ``serving.json``.
    """
    from denoisrec.trainer.outputs import plot_style

    raw, p = rep.raw, rep.params
    fig.set_size_inches(12, 4.8)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    by_bs = raw.get("rows_per_s") or {}
    runners = list(next(iter(by_bs.values()), {}))
    width = 0.8 / max(1, len(runners))
    for j, name in enumerate(runners):
        xs = [i + (j - (len(runners) - 1) / 2) * width for i in range(len(by_bs))]
        vals = [d.get(name) or 0.0 for d in by_bs.values()]
        bars = ax.bar(xs, vals, width, label=name)
        for b, d in zip(bars, by_bs.values()):
            base = d.get("torchrec model (predict)")
            if base and d.get(name) and name != "torchrec model (predict)":  # the ratio of the artefacts
                ax.annotate(
                    f"{d[name] / base:.2f}×",
                    (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_xticks(range(len(by_bs)))
    ax.set_xticklabels([f"{int(bs):,}" for bs in by_bs])
    ax.set_xlabel("batch size (rows per call)")
    ax.set_ylabel("predictions/s (log scale)")
    ax.set_yscale("log")
    ax.set_title("throughput, ratio to the TorchRec model", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    plot_style.legend_outside(ax, "below", ncol=max(1, len(runners)), fontsize=8)

    arts = raw.get("artefacts") or {}
    if arts:
        ys = list(range(len(arts)))
        ax2.barh([y - 0.15 for y in ys], [a["load_seconds"] for a in arts.values()], 0.3, label="load")
        ax2.barh([y + 0.15 for y in ys], [a["export_seconds"] for a in arts.values()], 0.3, label="export")
        ax2.set_yticks(ys)
        ax2.set_yticklabels([f"{f}\n{a['bytes'] / 2**20:.2f} MiB" for f, a in arts.items()], fontsize=8)
        ax2.set_ylim(len(arts) - 0.5, -0.5)
        ax2.set_xlabel("seconds")
        ax2.set_title("artefacts: load and export time", fontsize=10)
        ax2.grid(alpha=0.3, axis="x")
        plot_style.legend_outside(ax2, "below", ncol=2, fontsize=8)
    else:
        plot_style.empty(ax2, "no artefact exported")
    fig.suptitle(
        f"bench serving: {p.get('model')} ({p.get('run')}), {p.get('rows', 0):,} rows, "
        f"{p.get('threads')} thread(s), median of {p.get('rounds')} round(s)",
        fontsize=10,
    )

"""``denoisrec bench ingest``: how fast Parquet becomes training batches, against what bounds it.

Measured in one run, on one machine, on the same split and columns:

- **raw scans** of the schema's columns that do nothing with the batches, three ways: ``pyarrow.dataset``
  with its defaults (files as fragments, its own readahead), ``ParquetFile.iter_batches`` file by file, and
  the ordered row-group-fragment scan the reader itself uses. The fastest is the reference: the ceiling
  for anything that decodes Parquet here.
- **ingest**: :class:`ParquetBatchReader` (rank 0 of 1) producing :class:`Batch` es: row-group shuffle with
  the shuffle buffer off (``ingest_ordered``) and with the configured buffer (``ingest_shuffled``),
  background prefetch on. Target: >= 0.8x the raw scan.
- **training**: the skeleton's DLRM + BCE (``TrainModule`` under ``DistributedModelParallel``, fused sparse
  optimizer, one process) stepping on batches already in memory: the rate training consumes batches.
  Target: ingest >= 3x that.
- **peak RSS** of a fresh process streaming one whole epoch of a split (``--rss-data``, one or more datasets:
  give two sizes of the same preset to show that memory does not grow with the data). Target: <= 2 GiB.

Rates are rows/s and MB/s of Parquet bytes (the compressed column chunks read; the same bytes for the raw
scan and the reader); the ingest entries also give the bytes of the batches produced. Each rate is the best
of ``--repeats`` interleaved runs after a warm-up, because the machine may be shared. Each path also gets
its CPU time per row (this process, every thread; the median over the repeats) and the raw scan's CPU time
over it: on a machine busy with other jobs that ratio says more than the wall-clock one.

Like every bench it writes ``<out>/ingest.json`` (raw numbers, environment), ``ingest.md`` and ``ingest.png``
into ``--out DIR`` (default ``runs/bench``; a path ending in ``.json`` names the JSON file, the others go
beside it). ``--quick`` is a smoke run of a few seconds on a generated ``tiny`` dataset (CI); options given
explicitly win over it.

Example::

    denoisrec gen-data --preset product --out data/product
    denoisrec gen-data --preset product --rows 7711000 --out data/product-10pct
    denoisrec bench ingest --data data/product --rss-data data/product data/product-10pct
    denoisrec bench ingest --quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional

MB = 1e6


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset directory (default: a generated tiny dataset with --quick)")
    p.add_argument("--split", default="train", help="the split read (a folder of --data)")
    p.add_argument("--batch-size", type=int, default=8192, help="rows per batch (reader and training)")
    p.add_argument("--shuffle-buffer", type=int, default=262144, help="rows in the shuffle buffer")
    p.add_argument("--prefetch", type=int, default=4, help="batches the reader prepares ahead in the background")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="data.workers values to time the shuffle-buffer path with (rows/s per rank for each); the first "
        "is the ingest_shuffled entry",
    )
    p.add_argument("--rows", type=int, help="rows per rate measurement (default: the whole split)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per rate; the best is reported")
    p.add_argument("--train-steps", type=int, default=20, help="timed training steps")
    p.add_argument(
        "--rss-data",
        nargs="*",
        default=None,
        help="datasets whose split is streamed for one epoch in a fresh process to measure peak RSS (default: --data)",
    )
    p.add_argument("--out", default="runs/bench", help="report directory (ingest.{json,md,png})")
    p.add_argument("--quick", action="store_true", help="a few seconds on a tiny generated dataset (CI smoke)")


# ---------------------------------------------------------------------------------------------- parts


def _parquet_bytes_per_row(files: List[str], columns: List[str]) -> float:
    """Compressed bytes of ``columns`` per row, from the files' footers."""
    import pyarrow.parquet as pq

    total, rows = 0, 0
    for f in files:
        meta = pq.read_metadata(f)
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            rows += rg.num_rows
            for c in range(rg.num_columns):
                col = rg.column(c)
                if col.path_in_schema.split(".")[0] in columns:
                    total += col.total_compressed_size
    return total / max(rows, 1)


def _scan_batches(kind: str, path: str, files: List[str], columns: List[str]) -> Iterator[Any]:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    if kind == "dataset":  # pyarrow.dataset's defaults: files as fragments, its own readahead
        yield from ds.dataset(path, format="parquet").to_batches(columns=columns)
    elif kind == "parquet_file":  # one file after the other, ParquetFile.iter_batches
        for f in files:
            yield from pq.ParquetFile(f).iter_batches(batch_size=1 << 17, columns=columns)
    else:  # "row_groups": the ordered row-group-fragment scan the reader uses, without the reader
        import pyarrow.fs as pafs

        fmt, fs = ds.ParquetFileFormat(), pafs.LocalFileSystem()
        frags = [
            fmt.make_fragment(f, fs, row_groups=[g]) for f in files for g in range(pq.read_metadata(f).num_row_groups)
        ]
        dataset = ds.FileSystemDataset(frags, frags[0].physical_schema, fmt, fs)
        yield from dataset.to_batches(columns=columns, batch_size=1 << 17, fragment_readahead=1, batch_readahead=2)


RAW_SCANS = ("dataset", "parquet_file", "row_groups")


def raw_scan(kind: str, path: str, files: List[str], columns: List[str], max_rows: Optional[int]) -> Dict[str, float]:
    """Rows/s of a pyarrow scan of ``columns`` that does nothing with the batches."""
    t0, c0 = time.perf_counter(), time.process_time()
    rows, nbytes = 0, 0
    for rb in _scan_batches(kind, path, files, columns):
        rows += rb.num_rows
        nbytes += rb.nbytes
        if max_rows is not None and rows >= max_rows:
            break
    dt = time.perf_counter() - t0
    return {
        "rows": rows,
        "seconds": dt,
        "rows_per_s": rows / dt,
        "decoded_mb_per_s": nbytes / dt / MB,
        "cpu_us_per_row": (time.process_time() - c0) / max(rows, 1) * 1e6,
    }


def _batch_bytes(b: Any) -> int:
    kjt = b.sparse_features
    ts = [b.dense_features, b.labels, kjt.values(), kjt.lengths()]
    ts += [t for t in (b.sample_ids, b.group_ids, b.clean_labels, b.is_noisy) if t is not None]
    return sum(t.numel() * t.element_size() for t in ts)


def ingest(reader: Any, max_rows: Optional[int]) -> Dict[str, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    rows, nbytes = 0, 0
    it = iter(reader)
    try:
        for b in it:
            rows += b.size
            nbytes += _batch_bytes(b)
            if max_rows is not None and rows >= max_rows:
                break
    finally:
        it.close()  # type: ignore[attr-defined]
    dt = time.perf_counter() - t0
    return {
        "rows": rows,
        "seconds": dt,
        "rows_per_s": rows / dt,
        "batch_mb_per_s": nbytes / dt / MB,
        "cpu_us_per_row": (time.process_time() - c0) / max(rows, 1) * 1e6,
    }


def training_rate(data: str, split: str, batch_size: int, steps: int) -> Dict[str, Any]:
    """Rows/s of the training step (:class:`~denoisrec.trainer.loop.steps.Stepper`, plain loop) of the default
    model (DLRM) + BCE from :mod:`~denoisrec.trainer.factory`, on batches already in memory, in this one
    process.
    """
    import torch
    import torch.distributed as dist

    from denoisrec.trainer.config.tree import Config
    from denoisrec.trainer.data.reader import ParquetBatchReader
    from denoisrec.trainer.data.schema import DataSchema
    from denoisrec.trainer.distributed.env import init_distributed
    from denoisrec.trainer.factory import build_train_model
    from denoisrec.trainer.loop.steps import CycledBatches, Stepper

    cfg = Config()
    cfg.data.path = data
    schema = DataSchema.load(data)
    created = not dist.is_initialized()
    env = init_distributed("cpu")
    try:
        torch.manual_seed(0)
        built = build_train_model(cfg, schema, env, batch_size)  # the trainer's factory
        built.model.train()
        reader = ParquetBatchReader(os.path.join(data, split), schema, batch_size, prefetch=0)
        batches = []
        for b in reader:
            if b.size == batch_size:
                batches.append(b)
            if len(batches) >= min(steps, 8):
                break
        warmup = 3
        stepper = Stepper(built.model, built.opt.optimizer, env.device, pipelined=False)  # the trainer's step
        outputs = stepper.run(CycledBatches(batches, cfg.data.train_label))
        for _ in range(warmup):
            next(outputs)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(outputs)
        rows = steps * batch_size
        dt = time.perf_counter() - t0
        return {
            "rows": rows,
            "steps": steps,
            "seconds": dt,
            "rows_per_s": rows / dt,
            "model": "dlrm",
            "denoiser": "bce",
            "embedding_dim": cfg.model.embedding_dim,
            "torch_threads": torch.get_num_threads(),
        }
    finally:
        if created:
            dist.destroy_process_group()


def peak_rss_bytes() -> int:
    """This process's peak resident set size. ``VmHWM`` on Linux: unlike ``ru_maxrss``, which survives
    ``exec`` and so starts a child at its parent's peak, it belongs to this program alone.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def stream_epoch(data: str, split: str, batch_size: int, shuffle_buffer: int, prefetch: int) -> Dict[str, Any]:
    """Stream one whole epoch of ``split`` in this process; peak RSS before and after."""
    from denoisrec.trainer.data.reader import ParquetBatchReader
    from denoisrec.trainer.data.schema import DataSchema

    schema = DataSchema.load(data)
    reader = ParquetBatchReader(
        os.path.join(data, split), schema, batch_size, shuffle=True, shuffle_buffer=shuffle_buffer, prefetch=prefetch
    )
    rss_before = peak_rss_bytes()
    t0 = time.perf_counter()
    rows = 0
    for b in reader:
        rows += b.size
    dt = time.perf_counter() - t0
    rss = peak_rss_bytes()
    return {
        "data": data,
        "split": split,
        "rows": rows,
        "split_rows": reader.total_rows,
        "seconds": dt,
        "rows_per_s": rows / dt,
        "peak_rss_bytes": rss,
        "rss_before_streaming_bytes": rss_before,
        "batch_size": batch_size,
        "shuffle_buffer": shuffle_buffer,
        "prefetch": prefetch,
    }


def rss_in_fresh_process(data: str, split: str, batch_size: int, shuffle_buffer: int, prefetch: int) -> Dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "denoisrec.trainer.bench.ingest",
        "--stream-epoch",
        data,
        split,
        str(batch_size),
        str(shuffle_buffer),
        str(prefetch),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment() -> Dict[str, Any]:
    """The bench report's environment (:func:`denoisrec.trainer.bench.report.environment`) and Arrow's CPU count."""
    import pyarrow

    from denoisrec.trainer.bench.report import environment as report_environment

    return dict(report_environment(), arrow_cpu_count=pyarrow.cpu_count())


# ---------------------------------------------------------------------------------------------- driver


def measure(a: argparse.Namespace) -> Dict[str, Any]:
    from denoisrec.trainer.data.fs import DataPath
    from denoisrec.trainer.data.reader import ParquetBatchReader
    from denoisrec.trainer.data.schema import DataSchema

    tmp = None
    data = a.data
    if data is None:
        if not a.quick:
            raise ValueError("bench ingest: --data is required (or --quick, which generates a tiny dataset)")
        from denoisrec.trainer.datasets.synthetic import PRESETS, generate

        tmp = tempfile.TemporaryDirectory(prefix="denoisrec-bench-")
        data = os.path.join(tmp.name, "tiny")
        generate(data, PRESETS["tiny"], seed=0)
    from denoisrec.trainer.bench.report import apply_quick

    apply_quick(a, {"batch_size": min(a.batch_size, 512), "repeats": 1, "train_steps": min(a.train_steps, 3)})
    batch_size, repeats, steps = a.batch_size, a.repeats, a.train_steps
    schema = DataSchema.load(data)
    split = os.path.join(data, a.split)
    files = DataPath.resolve(split).parquet_files()
    columns = schema.columns()
    bpr = _parquet_bytes_per_row(files, columns)

    def mk(buffer: int, workers: int = 1) -> ParquetBatchReader:
        return ParquetBatchReader(
            split, schema, batch_size, shuffle=True, shuffle_buffer=buffer, prefetch=a.prefetch, workers=workers
        )

    rss = []  # first, while this process is small (a fresh process does not depend on it, but in-process does)
    for d in a.rss_data if a.rss_data is not None else [data]:
        if a.quick:  # in-process: no second interpreter start in CI
            r = stream_epoch(d, a.split, batch_size, a.shuffle_buffer, a.prefetch)
            r["method"] = "in-process"
        else:
            r = rss_in_fresh_process(d, a.split, batch_size, a.shuffle_buffer, a.prefetch)
            r["method"] = "fresh process"
        rss.append(r)
    runs: Dict[str, List[Dict[str, float]]] = {f"raw_{k}": [] for k in RAW_SCANS}
    workers = list(a.workers)
    if any(w < 1 for w in workers):
        raise ValueError(f"bench ingest: --workers {workers}: each must be >= 1")
    readers = {"ingest_ordered": mk(0), "ingest_shuffled": mk(a.shuffle_buffer, workers[0])}
    for w in workers[1:]:
        readers[f"ingest_shuffled_w{w}"] = mk(a.shuffle_buffer, w)
    runs.update({k: [] for k in readers})
    for k in RAW_SCANS:  # warm-up: page cache, allocator pools
        raw_scan(k, split, files, columns, a.rows)
    for reader in readers.values():
        ingest(reader, a.rows)
    for _ in range(repeats):  # interleaved, so a burst of load from elsewhere hits every path alike
        for k in RAW_SCANS:
            runs[f"raw_{k}"].append(raw_scan(k, split, files, columns, a.rows))
        for name, reader in readers.items():
            runs[name].append(ingest(reader, a.rows))
    best: Dict[str, Dict[str, Any]] = {k: max(v, key=lambda x: x["rows_per_s"]) for k, v in runs.items()}
    for k, b in best.items():
        b["parquet_mb_per_s"] = b["rows_per_s"] * bpr / MB
        # CPU time of this process (every thread) per row, median over the repeats: on a shared machine
        # the wall-clock rate depends on everyone's load, the work done per row much less
        b["cpu_us_per_row_median"] = statistics.median(x["cpu_us_per_row"] for x in runs[k])
    raw_name = max((f"raw_{k}" for k in RAW_SCANS), key=lambda k: best[k]["rows_per_s"])
    best["raw_scan"] = dict(best[raw_name], scan=raw_name[4:])
    train = training_rate(data, a.split, batch_size, steps)
    raw = best["raw_scan"]["rows_per_s"]
    result = {
        "benchmark": "ingest",
        "data": data if tmp is None else "tiny (generated)",
        "split": a.split,
        "split_rows": readers["ingest_ordered"].total_rows,
        "columns": len(columns),
        "parquet_bytes_per_row": bpr,
        "batch_size": batch_size,
        "shuffle_buffer": a.shuffle_buffer,
        "prefetch": a.prefetch,
        "repeats": repeats,
        "rows_per_measurement": a.rows,
        "raw_scan": best["raw_scan"],
        "raw_scans": {k: best[f"raw_{k}"] for k in RAW_SCANS},
        "ingest_ordered": best["ingest_ordered"],
        "ingest_shuffled": best["ingest_shuffled"],
        "workers": workers,
        "ingest_shuffled_by_workers": {
            str(w): best["ingest_shuffled" if i == 0 else f"ingest_shuffled_w{w}"] for i, w in enumerate(workers)
        },
        "all_runs": runs,
        "training": train,
        "ratios": {
            "ingest_ordered_vs_raw": best["ingest_ordered"]["rows_per_s"] / raw,
            "ingest_shuffled_vs_raw": best["ingest_shuffled"]["rows_per_s"] / raw,
            "ingest_ordered_vs_training": best["ingest_ordered"]["rows_per_s"] / train["rows_per_s"],
            "ingest_shuffled_vs_training": best["ingest_shuffled"]["rows_per_s"] / train["rows_per_s"],
        },
        "targets": {"ingest_vs_raw": 0.8, "ingest_vs_training": 3.0, "peak_rss_bytes": 2 * 1024**3},
        "peak_rss": rss,
        "quick": bool(a.quick),
        "environment": environment(),
    }
    if tmp is not None:
        tmp.cleanup()
    return result


def format_result(r: Dict[str, Any]) -> str:
    rt = r["ratios"]
    e = r["environment"]
    lines = [
        f"bench ingest: {r['data']} / {r['split']} ({r['split_rows']:,} rows, {r['columns']} columns, "
        f"{r['parquet_bytes_per_row']:.1f} Parquet bytes/row); batch {r['batch_size']:,}, shuffle buffer "
        f"{r['shuffle_buffer']:,} rows, prefetch {r['prefetch']}; best of {r['repeats']}",
        f"  machine: {e['cpu_model']}, {e['cpu_cores']} cores, load average {e['load_average']}",
        f"  {'path':32s} {'rows/s':>12s} {'Parquet MB/s':>13s} {'vs raw':>7s} {'CPU µs/row':>11s} "
        f"{'raw/this CPU':>12s}",
    ]
    rows = [
        (f"raw: {k}" + (" (reference)" if k == r["raw_scan"]["scan"] else ""), r["raw_scans"][k])
        for k in r["raw_scans"]
    ]
    rows += [("ingest, row-group shuffle", r["ingest_ordered"])]
    by_workers = r.get("ingest_shuffled_by_workers") or {"1": r["ingest_shuffled"]}
    for w, x in by_workers.items():
        rows.append((f"ingest, + shuffle buffer, {w} wkr", x))
    for label, x in rows:
        ratio = x["rows_per_s"] / r["raw_scan"]["rows_per_s"]
        cpu = x.get("cpu_us_per_row_median")
        tail = "" if cpu is None else f" {cpu:>11.3f} {r['raw_scan']['cpu_us_per_row_median'] / cpu:>11.2f}x"
        lines.append(f"  {label:32s} {x['rows_per_s']:>12,.0f} {x['parquet_mb_per_s']:>13,.1f} {ratio:>6.2f}x{tail}")
    t = r["training"]
    lines.append(
        f"  {'training (DLRM + BCE, 1 process)':32s} {t['rows_per_s']:>12,.0f}   samples/s of the step on this data"
    )
    lines.append(
        f"  ingest rows/s per rank over the training step's samples/s: {rt['ingest_ordered_vs_training']:.1f}x "
        f"ordered, {rt['ingest_shuffled_vs_training']:.1f}x shuffled (below 1x, training is input-bound)"
    )
    for s in r["peak_rss"]:
        lines.append(
            f"  peak RSS streaming one epoch, {s['split_rows']:,} rows of {s['data']}: "
            f"{s['peak_rss_bytes'] / 2**30:.2f} GiB ({s['rss_before_streaming_bytes'] / 2**30:.2f} GiB "
            f"after imports; {s['rows_per_s']:,.0f} rows/s; {s['method']})"
        )
    lines.append(
        f"  targets: ingest >= {r['targets']['ingest_vs_raw']}x raw, >= {r['targets']['ingest_vs_training']}x "
        f"training, peak RSS <= {r['targets']['peak_rss_bytes'] / 2**30:.0f} GiB"
    )
    return "\n".join(lines)


def write_outputs(r: Dict[str, Any], out: str) -> Dict[str, str]:
    """``ingest.json``, ``ingest.md`` (the console report) and ``ingest.png`` in directory ``out`` (or beside
    ``out`` when it names a ``.json`` file).
    """
    from denoisrec.trainer.bench.report import save_plot

    if out.endswith(".json"):
        folder, stem = os.path.dirname(os.path.abspath(out)), os.path.splitext(os.path.basename(out))[0]
    else:
        folder, stem = out, "ingest"
    os.makedirs(folder, exist_ok=True)
    paths = {k: os.path.join(folder, f"{stem}.{k}") for k in ("json", "md", "png")}
    with open(paths["json"], "w") as f:
        json.dump(r, f, indent=2)
    with open(paths["md"], "w") as f:
        f.write(f"## denoisrec bench ingest\n\n```\n{format_result(r)}\n```\n")
    if not save_plot(paths["png"], lambda fig: plot(fig, r)):
        del paths["png"]
    return paths


def plot(fig: Any, r: Dict[str, Any]) -> None:
    """rows/s of each path, with both targets: ingest >= 0.8x the raw scan and >= 3x training."""
    ax = fig.add_subplot(1, 1, 1)
    bars = [(f"raw: {k}", x["rows_per_s"], "0.6") for k, x in r["raw_scans"].items()]
    bars += [
        ("ingest, ordered", r["ingest_ordered"]["rows_per_s"], "tab:blue"),
        ("ingest, shuffled", r["ingest_shuffled"]["rows_per_s"], "tab:blue"),
        ("training (DLRM + BCE)", r["training"]["rows_per_s"], "tab:green"),
    ]
    ax.barh([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    t = r["targets"]
    ax.axvline(
        r["raw_scan"]["rows_per_s"] * t["ingest_vs_raw"],
        color="tab:orange",
        linestyle=":",
        label=f"target: ingest >= {t['ingest_vs_raw']}x the fastest raw scan",
    )
    ax.axvline(
        r["training"]["rows_per_s"] * t["ingest_vs_training"],
        color="tab:purple",
        linestyle="--",
        label=f"target: ingest >= {t['ingest_vs_training']:g}x training",
    )
    for i, b in enumerate(bars):
        ax.annotate(f"{b[1]:,.0f}", (b[1], i), va="center", fontsize=8, xytext=(3, 0), textcoords="offset points")
    ax.set_xlabel("rows/s (best of repeats)")
    ax.set_xlim(0, max(max(b[1] for b in bars), r["training"]["rows_per_s"] * t["ingest_vs_training"]) * 1.2)
    ax.set_title(f"ingest of {r['data']} / {r['split']}, batch {r['batch_size']:,}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")


def run(a: argparse.Namespace) -> int:
    result = measure(a)
    print(format_result(result))
    if a.out:
        paths = write_outputs(result, a.out)
        print(f"wrote {', '.join(paths.values())}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--stream-epoch":
        _, _, d, s, bs, buf, pf = sys.argv
        print(json.dumps(stream_epoch(d, s, int(bs), int(buf), int(pf))))
        sys.exit(0)
    ap = argparse.ArgumentParser(prog="python -m denoisrec.trainer.bench.ingest", allow_abbrev=False)
    add_arguments(ap)
    sys.exit(run(ap.parse_args()))

"""``denoisrec bench throughput``: what each denoiser costs in samples/s against plain BCE.

**Protocol.** One process group (1 rank, then N ranks under torchrun: gloo on CPU, NCCL on GPU) builds one
sharded model per method with the trainer's own code (``build_module`` → fused sparse optimizer → planner →
``DistributedModelParallel`` → dense optimizer): the same model, data, batch size and process for every
method; only the denoiser differs. The model comes from :mod:`denoisrec.trainer.factory` and the timed step is
the trainer's own :class:`~denoisrec.trainer.loop.steps.Stepper` (zero_grad, forward with the denoiser under
``run.precision``'s autocast, backward with the fused sparse update, the combined optimizer's step; the plain
loop, or ``TrainPipelineSparseDist`` where ``run.pipeline`` turns it on); the report names which. Batches are
read once into memory and cycled, so ingest is not part of the comparison (``bench ingest`` measures it).

1. *Calibration* (``--min-step-ms``): the baseline's step time is measured after warm-up; if it is shorter
   than the target, the batch grows by the missing factor (the issue's target is ≥ 50 ms per step, so that
   a denoiser's fixed per-step cost is measured against a realistic step).
2. *Warm-up*: every model runs ``--warmup`` steps (excluded).
3. *Rounds*: ``--rounds`` rounds; in each, every method runs ``--steps`` timed steps, in an order rotated by
   one per round (ABC, BCA, CAB, ...). A segment's time is the slowest rank's (all-reduced MAX), after a
   barrier. Samples/s = global rows / time.
4. *Ratio*: per round, a method's samples/s divided by the baseline's in the same round; the reported ratio
   is the median over rounds (paired, so machine-load drift cancels), with quartiles.
5. *Collectives*: :data:`denoisrec.denoisers.collectives.COUNTER` counts the calls and bytes the loss layer
   issues per step (rank 0), for every world size in ``--ranks`` and ``--count-ranks``; its traffic must not
   grow with the world size. (Embedding all-to-all and the DDP gradient all-reduce belong to the model, the
   same for every method, and are not counted.)

Targets (issue 7): loss-based denoisers ≥ 0.97× the baseline, DeCA / DeCA(p) (extra models) ≥ 0.80×; (issue 11)
the observation model (its context tower) ≥ 0.95×.
``--profile`` records a ``torch.profiler`` table of the baseline and of every method below its target.

Example::

    denoisrec bench throughput --ranks 1,2 --count-ranks 3 --out runs/bench   # data/small, DLRM, all denoisers
    denoisrec bench throughput --quick --out /tmp/b                            # CI smoke test (tiny data)
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Dict, List, Optional

from denoisrec.trainer.bench.harness import read_spec, run_spec, worker_main, write_result

# DeCA(p) is timed in its phase 2 (the prior frozen; its scores cached by sample id, or with
# -p deca_p.prior_cache=false its forward every step): the phase that lasts. The prior's weights do not
# change the cost, so it is not pre-trained here (phase 1 is a BCE run).
PHASE_PARAMS: Dict[str, Dict[str, Any]] = {"deca_p": {"pretrain_steps": 0}}
# Methods that run extra models (DeCA's MFs; the observation model's context tower, issue 11); every other: 0.97.
TARGETS = {"deca": 0.80, "deca_p": 0.80, "observation": 0.95, "observation_tce": 0.95}
DEFAULT_TARGET = 0.97
BASELINE = "bce"


def target_for(method: str) -> float:
    return TARGETS.get(method, DEFAULT_TARGET)


def add_method_arguments(
    p: argparse.ArgumentParser, bench: str, data_help: str, denoisers_help: str, param_help: str, set_help: str
) -> None:
    """The options every per-denoiser bench shares: data, model, methods and their overrides."""
    p.add_argument("--data", help=data_help)
    p.add_argument("--preset", default="small", help="synthetic preset used when --data is not given")
    p.add_argument("--rows", type=int, help="with --preset: training rows (valid/test scaled alike)")
    p.add_argument("--out", default="runs/bench", help=f"report directory ({bench}.{{json,md,png}})")
    p.add_argument("--model", default="dlrm", help="model name from denoisrec.models.MODELS")
    p.add_argument("--denoisers", default="all", help=denoisers_help)
    p.add_argument("-p", "--param", action="append", default=[], metavar="DENOISER.KEY=VALUE", help=param_help)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_method_arguments(
        p,
        "throughput",
        "dataset directory (default: data/<preset>, generated if missing)",
        "comma-separated names, or 'all' (every registered denoiser); bce is always the baseline",
        "denoiser hyperparameter, e.g. tce.eps_max=0.1 (repeatable)",
        "config override for every model, e.g. model.embedding_dim=64 (repeatable)",
    )
    p.add_argument("--batch-size", type=int, default=2048, help="rows per rank per step (before calibration)")
    p.add_argument(
        "--min-step-ms",
        type=float,
        default=50.0,
        help="grow the batch until a baseline step takes at least this long (0: off)",
    )
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (>= 5)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per method per round")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per method before the rounds")
    p.add_argument("--batches", type=int, default=8, help="distinct batches held in memory and cycled")
    p.add_argument("--ranks", default="1,2", help="world sizes timed, e.g. 1,2")
    p.add_argument(
        "--count-ranks", default="3", help="extra world sizes where only collectives are counted (a few steps), e.g. 3"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads per rank (0: usable cores // ranks, at least 1)"
    )
    p.add_argument("--profile", action="store_true", help="profile the baseline and every method below target")
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke test: tiny data, small batches, 5 rounds of 2 steps, no calibration",
    )
    p.add_argument("--timeout", type=int, default=1800, help="seconds per torchrun job")


def _ints(s: str) -> List[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _apply_quick(a: argparse.Namespace) -> None:
    """``--quick``'s values, except for the options given explicitly (those win)."""
    from denoisrec.trainer.bench.report import apply_quick

    apply_quick(
        a,
        {
            "preset": "tiny",
            "batch_size": 256,
            "min_step_ms": 0.0,
            "rounds": 5,
            "steps": 2,
            "warmup": 1,
            "batches": 2,
            "threads": a.threads or 1,
        },
    )


def ensure_data(data: Optional[str], preset: str, out: str, quick: bool, rows: Optional[int] = None) -> str:
    """``data`` if given (must hold schema.json); else ``data/<preset>[-<rows>]`` (quick:
    ``<out>/data-<preset>``), generated (seed 0) when missing.
    """
    from denoisrec.trainer.datasets.synthetic import generate, preset_by_name, scaled

    if data:
        if not os.path.exists(os.path.join(data, "schema.json")):
            raise FileNotFoundError(
                f"--data {data}: no schema.json (generate with `denoisrec gen-data` or `denoisrec convert`)"
            )
        return data
    name = preset if rows is None else f"{preset}-{rows}"
    path = os.path.join(out, f"data-{name}") if quick else os.path.join("data", name)
    if not os.path.exists(os.path.join(path, "schema.json")):
        print(f"bench: generating the {preset} preset ({rows or 'default'} rows) into {path}", flush=True)
        generate(path, scaled(preset_by_name(preset), rows), seed=0)
    return path


def resolve_methods(spec: str) -> List[str]:
    """The baseline first, then the requested denoisers (``all``: every registered one)."""
    from denoisrec.denoisers import DENOISERS

    names = sorted(DENOISERS) if spec == "all" else [x.strip() for x in spec.split(",") if x.strip()]
    unknown = [n for n in names if n not in DENOISERS]
    if unknown:
        raise ValueError(f"--denoisers: unknown denoiser(s) {unknown}; registered: {sorted(DENOISERS)}")
    return [BASELINE] + [n for n in names if n != BASELINE]


def parse_method_params(items: List[str]) -> Dict[str, Dict[str, Any]]:
    """``["tce.eps_max=0.1"]`` → ``{"tce": {"eps_max": 0.1}}``."""
    from denoisrec.trainer.config.tree import parse_value

    out: Dict[str, Dict[str, Any]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"-p {item!r}: expected DENOISER.KEY=VALUE")
        key, value = item.split("=", 1)
        method, name = key.split(".", 1)
        out.setdefault(method.strip(), {})[name.strip()] = parse_value(value)
    return out


# ------------------------------------------------------------------------------------------------- parent


def run(a: argparse.Namespace) -> int:
    _apply_quick(a)
    if a.rounds < 5 and not a.quick:
        raise ValueError(f"--rounds {a.rounds}: at least 5 interleaved rounds are needed for a median")
    timed, counted = _ints(a.ranks), [w for w in _ints(a.count_ranks) if w not in _ints(a.ranks)]
    if not timed:
        raise ValueError("--ranks: give at least one world size to time")
    methods = resolve_methods(a.denoisers)
    params = parse_method_params(a.param)
    for m in params:
        if m not in methods:
            raise ValueError(f"-p {m}.*: {m!r} is not among the benchmarked methods {methods}")
    os.makedirs(a.out, exist_ok=True)
    data = ensure_data(a.data, a.preset, a.out, a.quick, a.rows)
    results: Dict[int, Dict[str, Any]] = {}
    said = None  # the timed step, said once (the report's "Timed step:" line says it again)
    for ws in timed + counted:
        mode = "time" if ws in timed else "count"
        print(f"bench throughput: {ws} rank(s), mode {mode}, methods {', '.join(methods)}", flush=True)
        results[ws] = launch_worker(a, data, methods, params, ws, mode)
        step = (results[ws].get("timed_step") or {}).get("step")
        if step and step != said:
            print(f"bench throughput: timed {step}", flush=True)
            said = step
    rep = build_report(a, data, methods, params, results)
    paths = rep.write(a.out, plot=lambda fig: plot(fig, rep))
    print(rep.markdown)
    print("wrote " + ", ".join(paths.values()))
    return 0


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def launch_worker(
    a: argparse.Namespace, data: str, methods: List[str], params: Dict[str, Any], ws: int, mode: str
) -> Dict[str, Any]:
    """Run the worker on ``ws`` ranks: in this process for one rank, under torchrun otherwise."""
    threads = a.threads or max(1, usable_cores() // ws)
    spec = {
        "data": data,
        "model": a.model,
        "methods": methods,
        "params": params,
        "set": a.set,
        "batch_size": a.batch_size if mode == "time" else min(a.batch_size, 256),
        "min_step_ms": a.min_step_ms if mode == "time" else 0.0,
        "rounds": a.rounds if mode == "time" else 1,
        "steps": a.steps if mode == "time" else 2,
        "warmup": a.warmup if mode == "time" else 1,
        "batches": a.batches if mode == "time" else 2,
        "device": a.device,
        "profile": a.profile and mode == "time",
        "mode": mode,
        "threads": threads,
    }
    module = "denoisrec.trainer.bench.throughput"
    return run_spec(module, spec, ws, what="bench throughput", in_process=worker, threads=threads, timeout=a.timeout)


def build_report(
    a: argparse.Namespace, data: str, methods: List[str], params: Dict[str, Any], results: Dict[int, Dict[str, Any]]
):
    from denoisrec.trainer.bench.report import BenchReport, markdown_table, summarize

    rep = BenchReport(
        "throughput",
        params={
            "data": data,
            "model": a.model,
            "methods": methods,
            "denoiser_params": params,
            "set": a.set,
            "requested_batch_size": a.batch_size,
            "min_step_ms": a.min_step_ms,
            "rounds": a.rounds,
            "steps": a.steps,
            "warmup": a.warmup,
            "batches": a.batches,
            "quick": a.quick,
        },
    )
    rows = []
    for ws, r in sorted(results.items()):
        if r["mode"] != "time":
            continue
        base = r["rates"][BASELINE]
        for m in methods:
            rates = r["rates"][m]
            ratios = [x / b for x, b in zip(rates, base)]
            s, q = summarize(rates), summarize(ratios)
            rows.append(
                {
                    "world_size": ws,
                    "method": m,
                    "batch_size": r["batch_size"],
                    "threads": r["threads"],
                    "samples_per_s": s["median"],
                    "samples_per_s_p25": s["p25"],
                    "samples_per_s_p75": s["p75"],
                    "rel_spread": s["rel_spread"],
                    "step_ms": r["batch_size"] * ws / s["median"] * 1000.0,
                    "ratio": q["median"],
                    "ratio_p25": q["p25"],
                    "ratio_p75": q["p75"],
                    "target": None if m == BASELINE else target_for(m),
                    # --quick is a smoke test, not a measurement: no grade
                    "meets_target": None if m == BASELINE or a.quick else bool(q["median"] >= target_for(m)),
                    "calls_per_step": r["collectives"][m]["calls_per_step"],
                    "bytes_per_step": r["collectives"][m]["bytes_per_step"],
                }
            )
    rep.rows = rows
    collectives = {m: {str(ws): r["collectives"][m] for ws, r in sorted(results.items())} for m in methods}
    rep.raw = {"per_world_size": {str(ws): r for ws, r in sorted(results.items())}, "collectives": collectives}
    cols = [
        ("ranks", "world_size", "{}"),
        ("method", "method", "{}"),
        ("batch/rank", "batch_size", "{:,}"),
        ("samples/s (median)", "samples_per_s", "{:,.0f}"),
        ("p25–p75", lambda r: f"{r['samples_per_s_p25']:,.0f}–{r['samples_per_s_p75']:,.0f}", "{}"),
        ("step ms", "step_ms", "{:.1f}"),
        ("× baseline", "ratio", "{:.3f}"),
        ("ratio p25–p75", lambda r: f"{r['ratio_p25']:.3f}–{r['ratio_p75']:.3f}", "{}"),
        ("target", "target", "≥{:.2f}"),
        ("meets", lambda r: None if r["meets_target"] is None else ("yes" if r["meets_target"] else "**no**"), "{}"),
    ]
    table = markdown_table(rows, cols)
    wss = sorted(results)
    crow = []
    for m in methods:
        row: Dict[str, Any] = {"method": m}
        for ws in wss:
            c = results[ws]["collectives"][m]
            b = results[ws]["collectives"][BASELINE]
            row[f"w{ws}"] = f"{c['calls_per_step']:g} / {c['bytes_per_step']:,.0f}"
            row[f"d{ws}"] = (
                f"+{c['calls_per_step'] - b['calls_per_step']:g} / +{c['bytes_per_step'] - b['bytes_per_step']:,.0f}"
            )
        # The radix select's round count depends on the data (CPU early exit), so per-step totals may differ
        # between world sizes; what must not grow is the payload of a collective.
        grows = len({results[ws]["collectives"][m].get("max_call_bytes") for ws in wss if ws > 1}) > 1
        row["largest"] = f"{results[wss[-1]]['collectives'][m].get('max_call_bytes', 0):,}"
        row["grows"] = "**yes**" if grows else "no"
        crow.append(row)
    ccols = [("method", "method", "{}")] + [(f"{ws} rank(s): calls / bytes per step", f"w{ws}", "{}") for ws in wss]
    ccols += [
        (f"added vs bce at {wss[-1]}", f"d{wss[-1]}", "{}"),
        (f"largest call at {wss[-1]} (B)", "largest", "{}"),
        ("bytes per call grow with ranks", "grows", "{}"),
    ]
    timed_step = next((r["timed_step"] for r in results.values() if r.get("timed_step")), None)
    step_line = (
        (
            f"Timed step: {timed_step['step']}, {timed_step['optimizer']}, the model from "
            f"trainer/factory.py; --set {timed_step['set'] or '(none)'}.\n\n"
        )
        if timed_step
        else ""
    )
    rep.markdown = (
        f"{step_line}Model `{a.model}`, data `{data}`; {a.rounds} interleaved rounds × {a.steps} steps per method "
        f"after {a.warmup} warm-up steps; ingest excluded (batches cycled from memory). "
        f"`× baseline`: median over rounds of the ratio to the baseline in the same round.\n\n{table}\n\n"
        f"Loss-layer collectives per step (rank 0; `denoisrec.denoisers.collectives.COUNTER`):\n\n"
        f"{markdown_table(crow, ccols)}\n"
    )
    for ws, r in sorted(results.items()):
        for m, prof in (r.get("profiles") or {}).items():
            rep.markdown += (
                f"\n<details><summary>profile: {m}, {ws} rank(s)</summary>\n\n```\n{prof}\n```\n</details>\n"
            )
    if a.quick:
        rep.notes.append("--quick: tiny data and a few steps; a smoke test, not a measurement")
    return rep


def plot(fig: Any, rep: Any) -> None:
    rows = rep.rows
    wss = sorted({r["world_size"] for r in rows})
    fig.set_size_inches(7 * len(wss) + 2.5, 5.5)  # a panel per world size, wide enough for its ratio labels
    for k, ws in enumerate(wss):
        ax = fig.add_subplot(1, len(wss), k + 1)
        rs = [r for r in rows if r["world_size"] == ws]
        names = [r["method"] for r in rs]
        med = [r["samples_per_s"] for r in rs]
        err = [
            [r["samples_per_s"] - r["samples_per_s_p25"] for r in rs],
            [r["samples_per_s_p75"] - r["samples_per_s"] for r in rs],
        ]
        grade = {True: "tab:green", False: "tab:red", None: "tab:blue"}  # None: --quick, not graded
        colors = ["0.5" if r["method"] == BASELINE else grade[r["meets_target"]] for r in rs]
        ax.bar(names, med, yerr=err, color=colors, capsize=3)
        base = next(r["samples_per_s"] for r in rs if r["method"] == BASELINE)
        ax.axhline(base, color="k", linestyle="--", linewidth=1, label="BCE baseline")
        for t, color in zip(
            sorted({target_for(r["method"]) for r in rs if r["method"] != BASELINE}, reverse=True),
            ("tab:orange", "tab:purple", "tab:brown"),
        ):
            who = ", ".join(sorted(m for m in {r["method"] for r in rs} if m != BASELINE and target_for(m) == t))
            ax.axhline(
                base * t,
                color=color,
                linestyle=":",
                linewidth=1.2,
                label=f"{t:.2f}× baseline ({who if len(who) < 30 else 'the rest'})",
            )
        for i, r in enumerate(rs):
            ax.annotate(
                f"{r['ratio']:.2f}×",
                (i, r["samples_per_s_p75"]),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 3),
                textcoords="offset points",
            )  # above the error bar
        ax.set_title(f"{ws} rank(s), batch {rs[0]['batch_size']}/rank")
        ax.set_ylabel("samples/s (median of rounds, p25–p75)")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        ax.set_ylim(0, max(r["samples_per_s_p75"] for r in rs) * 1.18)
    from matplotlib.patches import Patch

    from denoisrec.trainer.outputs import plot_style

    # one legend beside the last panel (the lines and colours mean the same in every panel), off the bars
    handles = ax.get_legend_handles_labels()[0] + [
        Patch(color="tab:green", label="meets its target"),
        Patch(color="tab:red", label="below its target"),
    ]
    plot_style.legend_outside(ax, "right", handles=handles, fontsize=8)
    p = rep.params
    fig.suptitle(
        f"bench throughput: training samples/s per denoiser against BCE ({p.get('model', 'model')}, "
        f"{p.get('data', 'data')})",
        fontsize=10,
    )


# ------------------------------------------------------------------------------------------------- worker


def worker(spec_path: str) -> None:
    """One rank of a throughput job (started by :func:`launch_worker` under torchrun)."""
    import torch
    import torch.distributed as dist

    from denoisrec.denoisers.collectives import COUNTER
    from denoisrec.trainer.config.tree import Config, apply_overrides
    from denoisrec.trainer.data.reader import ParquetBatchReader
    from denoisrec.trainer.data.schema import DataSchema
    from denoisrec.trainer.denoising.prior import cache_prior_scores
    from denoisrec.trainer.distributed.env import init_distributed, shutdown
    from denoisrec.trainer.factory import build_module, shard_module
    from denoisrec.trainer.loop.steps import CycledBatches, Stepper, autocast_context, use_pipeline
    from denoisrec.trainer.module import denoiser_of
    from denoisrec.trainer.run_setup import seed_everything

    spec = read_spec(spec_path)
    torch.set_num_threads(spec["threads"])
    env = init_distributed(spec["device"])
    schema = DataSchema.load(spec["data"])
    methods: List[str] = spec["methods"]

    def sync() -> None:
        if env.device.type == "cuda":
            torch.cuda.synchronize(env.device)

    def load_batches(batch_size: int) -> list:
        reader = ParquetBatchReader(
            os.path.join(spec["data"], "train"), schema, batch_size, env.rank, env.world_size, shuffle=False
        )
        out = []
        for b in reader:
            if b.size < batch_size:
                break
            out.append(b.to(env.device))
            if len(out) == spec["batches"]:
                break
        if not out:
            raise ValueError(
                f"{spec['data']}/train: fewer than {batch_size} rows per rank for one full batch "
                f"on {env.world_size} rank(s); lower --batch-size"
            )
        return out

    def build(method: str, batch_size: int):  # type: ignore[no-untyped-def]
        cfg = apply_overrides(Config(), spec["set"])
        cfg.data.path, cfg.model.name, cfg.data.batch_size = spec["data"], spec["model"], batch_size
        cfg.denoiser.name = method
        cfg.denoiser.params = {**PHASE_PARAMS.get(method, {}), **spec["params"].get(method, {})}
        seed_everything(cfg.run.seed)
        module = build_module(cfg, schema)
        # Timed as after any ramp (the regime that lasts): schedules in epochs resolve against 1-step epochs.
        module.denoiser.bind_run(1, 1 << 30)
        built = shard_module(module, cfg, env, batch_size)  # the trainer's factory
        built.model.train()
        stepper = Stepper(
            built.model,
            built.opt.optimizer,
            env.device,
            use_pipeline(cfg.run.pipeline, env.device),
            autocast_context(cfg.run.precision, env.device),
        )  # the trainer's step
        return built.model, stepper.run(CycledBatches(feed, cfg.data.train_label)), stepper

    batch_size = spec["batch_size"]
    feed: List[Any] = load_batches(batch_size)  # replaced in place when calibration grows the batch
    models = {m: build(m, batch_size) for m in methods}
    stepper0 = models[BASELINE][2]
    timed_step = {
        "step": "trainer/loop/steps.py Stepper ("
        + ("TrainPipelineSparseDist" if stepper0.pipeline is not None else "plain loop")
        + ")",
        "optimizer": "CombinedOptimizer (fused sparse in backward + dense)",
        "set": spec["set"],
    }

    def run_steps(m: str, n: int) -> None:
        outputs = models[m][1]
        for _ in range(n):
            next(outputs)

    def timed(m: str, n: int) -> float:
        dist.barrier()
        sync()
        t0 = time.perf_counter()
        run_steps(m, n)
        sync()
        dt = torch.tensor([time.perf_counter() - t0], dtype=torch.float64, device=env.device)
        dist.all_reduce(dt, op=dist.ReduceOp.MAX)
        return float(dt.item())

    calibration = {}
    if spec["min_step_ms"] > 0:
        run_steps(BASELINE, spec["warmup"])
        step_ms = timed(BASELINE, 3) / 3 * 1000.0
        calibration = {"batch_size_before": batch_size, "step_ms_before": step_ms}
        if step_ms < spec["min_step_ms"]:
            factor = spec["min_step_ms"] / max(step_ms, 1e-3)
            batch_size = int(-(-batch_size * factor // 256) * 256)  # round up to a multiple of 256
            feed[:] = load_batches(batch_size)
        calibration["batch_size"] = batch_size
    for m in methods:  # DeCA(p): f' scored once on the cycled batches, as the trainer does after phase 1
        d = denoiser_of(models[m][0])
        phase = d.needs.pretraining
        if phase is not None and phase.cache_scores:
            cache_prior_scores(d, feed, env.device)
    for m in methods:
        run_steps(m, spec["warmup"])

    rates: Dict[str, List[float]] = {m: [] for m in methods}
    counts: Dict[str, Dict[str, float]] = {}
    order = list(methods)
    for r in range(spec["rounds"]):
        k = r % len(order)
        for m in order[k:] + order[:k]:
            COUNTER.reset()
            dt = timed(m, spec["steps"])
            calls, nbytes, largest = COUNTER.calls, COUNTER.bytes, COUNTER.max_call_bytes
            rates[m].append(spec["steps"] * batch_size * env.world_size / dt)
            counts[m] = {
                "calls_per_step": calls / spec["steps"],
                "bytes_per_step": nbytes / spec["steps"],
                "max_call_bytes": largest,
            }

    profiles: Dict[str, str] = {}
    if spec["profile"]:
        import statistics

        base = rates[BASELINE]
        for m in methods:
            ratio = statistics.median(x / b for x, b in zip(rates[m], base))
            if m == BASELINE or ratio < target_for(m):
                acts = [torch.profiler.ProfilerActivity.CPU]
                if env.device.type == "cuda":
                    acts.append(torch.profiler.ProfilerActivity.CUDA)
                with torch.profiler.profile(activities=acts) as prof:
                    run_steps(m, spec["steps"])
                    sync()
                profiles[m] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)

    if env.is_main:
        result = {
            "mode": spec["mode"],
            "world_size": env.world_size,
            "device": str(env.device),
            "backend": env.backend,
            "batch_size": batch_size,
            "threads": torch.get_num_threads(),
            "calibration": calibration,
            "rates": rates,
            "collectives": counts,
            "profiles": profiles,
            "batches_in_memory": len(feed),
            "timed_step": timed_step,
        }
        write_result(spec, result)
    dist.barrier()
    shutdown()


if __name__ == "__main__":
    worker_main(worker, "denoisrec.trainer.bench.throughput")

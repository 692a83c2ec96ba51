"""The GPU check's throughput run: denoisrec's step against plain TorchRec, and every denoiser against BCE.

**Protocol** (one process, one device; ``make gpu-check`` runs it on ``cuda:0``):

- Data: the ``product`` preset's shape (69 features, its table sizes) with ``--rows`` training rows,
  generated once; ``--batches`` batches of ``--batch-size`` rows are read into (pinned) host memory and
  cycled, as the trainer's reader would hand them over.
- Models: for every method (BCE, every denoiser) the trainer's own build (``build_module`` → fused sparse
  optimizer → planner → DMP → combined optimizer) and the trainer's own step (:class:`Stepper`, through
  ``TrainPipelineSparseDist`` when ``--pipeline`` resolves on: ``auto`` = on CUDA); plus ``torchrec``: plain
  TorchRec's ``DLRMTrain`` with the same tables, MLPs, batch and optimizers, stepped by TorchRec alone
  (:mod:`denoisrec.trainer.bench.torchrec_reference`).
- Precisions: ``fp32`` and ``bf16`` (autocast), the same models.
- Rounds: ``--rounds`` rounds; in each, every (precision, method) runs ``--steps`` timed steps, in an order
  rotated by one per round; a segment ends with a device synchronisation. Samples/s = rows / time.
- Ratios, per round then the median over rounds: BCE / ``torchrec`` (target ≥ 0.90), each denoiser / BCE
  (≥ 0.97; DeCA, DeCA(p) ≥ 0.80), within one precision.

Example::

    python -m denoisrec.trainer.bench.gpu_check --out runs/gpu-check            # on a GPU machine
    python -m denoisrec.trainer.bench.gpu_check --device cpu --quick --skip-tests --out /tmp/g   # smoke test
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from typing import Any, Callable, Dict, List

from denoisrec.trainer.bench.throughput import PHASE_PARAMS, ensure_data, resolve_methods, target_for

REFERENCE = "torchrec"
BASELINE = "bce"
REFERENCE_TARGET = 0.90
PRECISIONS = ("fp32", "bf16")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset directory (default: data/product-<rows>, generated if missing)")
    p.add_argument("--rows", type=int, default=200_000, help="training rows of the generated product-shape data")
    p.add_argument("--denoisers", default="all", help="comma-separated names, or 'all'")
    p.add_argument("--batch-size", type=int, default=8192, help="rows per step")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    p.add_argument("--steps", type=int, default=20, help="timed steps per (precision, method) per round")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per (precision, method) first")
    p.add_argument("--batches", type=int, default=8, help="distinct batches held in memory and cycled")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated: fp32, bf16")
    p.add_argument("--pipeline", default="auto", help="auto (on for CUDA), on, off: for every method")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")


def apply_quick(a: argparse.Namespace) -> None:
    """``--quick``: the tiny preset, small batches, 2 rounds of 2 steps (a smoke test of the report path);
    options given explicitly win.
    """
    from denoisrec.trainer.bench.report import apply_quick as quick_values

    a.preset = "tiny"
    quick_values(a, {"rows": None, "batch_size": 256, "rounds": 2, "steps": 2, "warmup": 1, "batches": 2})


def measure(a: argparse.Namespace, device: str) -> Dict[str, Any]:
    """Run the protocol in this process (one rank); return per-round samples/s and the set-up."""
    import torch

    from denoisrec.trainer.bench.torchrec_reference import (
        build_reference,
        mlp_sizes,
        reference_steps,
        to_reference_batch,
    )
    from denoisrec.trainer.config.tree import Config
    from denoisrec.trainer.data.reader import ParquetBatchReader
    from denoisrec.trainer.data.schema import DataSchema
    from denoisrec.trainer.distributed.env import init_distributed, shutdown
    from denoisrec.trainer.distributed.sharding import unwrap
    from denoisrec.trainer.factory import build_module, shard_module
    from denoisrec.trainer.loop.steps import Stepper, autocast_context, use_pipeline
    from denoisrec.trainer.run_setup import seed_everything

    if a.threads:
        torch.set_num_threads(a.threads)
    owns_group = not torch.distributed.is_initialized()
    env = init_distributed(device)
    dev = env.device
    data = ensure_data(a.data, getattr(a, "preset", "product"), a.out, a.quick, a.rows)
    schema = DataSchema.load(data)
    precisions = [x.strip() for x in a.precisions.split(",") if x.strip()]
    autocasts = {p: autocast_context(p, dev) for p in precisions}
    pipelined = use_pipeline(a.pipeline, dev)
    methods = resolve_methods(a.denoisers)

    reader = ParquetBatchReader(os.path.join(data, "train"), schema, a.batch_size, pin_memory=dev.type == "cuda")
    batches = [b for b in itertools.islice(iter(reader), a.batches) if b.size == a.batch_size]
    if not batches:
        raise ValueError(f"{data}/train: fewer than --batch-size {a.batch_size} rows")

    steppers: Dict[str, Any] = {}
    cfg = Config()
    cfg.data.path = data
    for m in methods:
        cfg.denoiser.name, cfg.denoiser.params = m, dict(PHASE_PARAMS.get(m, {}))
        seed_everything(0)
        module = build_module(cfg, schema)
        module.denoiser.bind_run(1, 1 << 30)  # as bench throughput: schedules in epochs count 1-step epochs
        built = shard_module(module, cfg, env, a.batch_size)  # the trainer's factory
        stepper = Stepper(built.model, built.opt.optimizer, dev, pipelined)
        steppers[m] = (stepper, stepper.run(itertools.cycle(batches)))
    dense_arch, over_arch = mlp_sizes(unwrap(steppers[BASELINE][0].model).get_submodule("model"))
    seed_everything(0)
    ref_model, ref_opt = build_reference(
        schema, dense_arch, over_arch, cfg.model.embedding_dim, cfg.optim.lr, cfg.optim.sparse_lr, dev, a.batch_size
    )
    ref_precision = {"p": precisions[0]}
    ref_steps = reference_steps(
        ref_model,
        ref_opt,
        dev,
        itertools.cycle([to_reference_batch(b) for b in batches]),
        pipelined,
        lambda: autocasts[ref_precision["p"]](),
    )

    def step_fn(p: str, m: str) -> Callable[[], Any]:
        if m == REFERENCE:

            def ref() -> Any:
                ref_precision["p"] = p
                return next(ref_steps)

            return ref
        stepper, gen = steppers[m]

        def ours() -> Any:
            stepper.autocast = autocasts[p]  # read at each forward (the pipeline's too)
            return next(gen)

        return ours

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    entries = [(p, m) for p in precisions for m in [REFERENCE] + methods]
    fns = {e: step_fn(*e) for e in entries}
    for e in entries:
        for _ in range(a.warmup):
            fns[e]()
    rates: Dict[str, Dict[str, List[float]]] = {p: {m: [] for m in [REFERENCE] + methods} for p in precisions}
    for r in range(a.rounds):
        k = r % len(entries)
        for p, m in entries[k:] + entries[:k]:
            sync()
            t0 = time.perf_counter()
            for _ in range(a.steps):
                fns[(p, m)]()
            sync()
            rates[p][m].append(a.steps * a.batch_size / (time.perf_counter() - t0))
    info = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "data": data,
        "batch_size": a.batch_size,
        "pipelined": pipelined,
        "precisions": precisions,
        "methods": methods,
        "rounds": a.rounds,
        "steps": a.steps,
        "warmup": a.warmup,
        "batches_in_memory": len(batches),
        "dense_arch": dense_arch,
        "over_arch": over_arch,
        "embedding_dim": cfg.model.embedding_dim,
        "tables": len(schema.sparse),
    }
    for stepper, gen in steppers.values():
        gen.close()
        stepper.pause()
    ref_steps.close()
    if owns_group:
        shutdown()
    return {"info": info, "rates": rates}


def plot(fig: Any, rows: List[Dict[str, Any]]) -> None:
    """Each method's ratio to its baseline (p25–p75), one panel per precision, with every target line."""
    precisions = sorted({r["precision"] for r in rows})
    for k, p in enumerate(precisions):
        ax = fig.add_subplot(1, len(precisions), k + 1)
        rs = [r for r in rows if r["precision"] == p and r["ratio"] is not None]
        ax.barh(
            [f"{r['method']} / {r['versus']}" for r in rs],
            [r["ratio"] for r in rs],
            xerr=[[r["ratio"] - r["ratio_p25"] for r in rs], [r["ratio_p75"] - r["ratio"] for r in rs]],
            color=[{True: "tab:green", False: "tab:red", None: "0.6"}[r["meets_target"]] for r in rs],
            capsize=3,
        )
        for t, color in zip(sorted({r["target"] for r in rs}), ("tab:orange", "tab:purple", "tab:brown")):
            ax.axvline(t, color=color, linestyle=":", label=f"target {t:.2f}×")
        ax.set_title(f"{p}: samples/s ÷ baseline (median of rounds)", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.legend(fontsize=7, loc="lower right")


def ratio_rows(result: Dict[str, Any], grade: bool = True) -> List[Dict[str, Any]]:
    """One row per (precision, method): median samples/s, and the median per-round ratio to its baseline
    (BCE for a denoiser, plain TorchRec for BCE) with its target.

    Args:
        result: :func:`measure`'s result.
        grade: whether ``meets_target`` says yes/no; ``False`` for ``--quick`` (a smoke test is not graded).

    Returns:
        The rows, in the order measured.
    """
    from denoisrec.trainer.bench.report import summarize

    rows = []
    for p, rates in result["rates"].items():
        for m, xs in rates.items():
            base = None if m == REFERENCE else (REFERENCE if m == BASELINE else BASELINE)
            s = summarize(xs)
            row: Dict[str, Any] = {
                "precision": p,
                "method": m,
                "samples_per_s": s["median"],
                "samples_per_s_p25": s["p25"],
                "samples_per_s_p75": s["p75"],
                "versus": base,
                "ratio": None,
                "ratio_p25": None,
                "ratio_p75": None,
                "target": None,
                "meets_target": None,
            }
            if base is not None:
                q = summarize([x / b for x, b in zip(xs, rates[base])])
                target = REFERENCE_TARGET if m == BASELINE else target_for(m)
                row.update(
                    ratio=q["median"],
                    ratio_p25=q["p25"],
                    ratio_p75=q["p75"],
                    target=target,
                    meets_target=bool(q["median"] >= target) if grade else None,
                )
            rows.append(row)
    return rows

"""``denoisrec bench quality``: what each denoiser buys on the clean test set, against BCE and the oracle.

For a dataset with ground truth (``clean_label`` / ``is_noisy``: the synthetic presets, or real data from
``denoisrec convert``) it trains, with the real trainer (:func:`denoisrec.trainer.train.train`):

- **BCE** on the observed labels (the "Base" row);
- **Clean**: BCE on ``clean_label`` (``data.train_label=clean_label``), the oracle row of DART's Table 2;
- **withheld** (when named in ``--denoisers``): BCE with the schema's context features withheld from the model
  (``model.context=withhold``), the baseline the observation model must beat;
- **oracle_noise** (when named): the observation model (``form=examination``) with the generator's *true* noise
  model fixed (``observation.noise_file=<data>/noise_model.json``, written by ``gen-data``): only ``f`` trains, so
  it bounds what any learnt noise model can reach on that data;
- **every denoiser** with its defaults (the papers'), or with the point of a small sweep over its ``GRID``
  (a class attribute: ``{"param": [values]}``) selected on the run's selection metric only (``--select-on``,
  the trainer's ``eval.select_on``: the trusted labels of valid, the randomised-exposure split, or observed
  validation; never the test split);

each over ``--seeds`` seeds (``--reuse``: runs ``--out`` already holds finished with the same config are read
back, not retrained), and reports clean-test AUC, GAUC and logloss (mean ± std over seeds), RealImp
over BCE, **gap closure** ``(AUC_d − AUC_BCE) / (AUC_Clean − AUC_BCE)``, and the noise-identification
precision and recall over training (ADT Fig. 9, DART RQ4). Every number is read from the run's own records
(``summary.json``, ``metrics.jsonl``): the bench configures the trainer and recomputes nothing.

**Early stopping** (``--patience``, DART's "two trials"): the trainer's own
(:class:`~denoisrec.trainer.evaluation.early_stop.EarlyStopping`, ``run.early_stop_patience``): after every epoch the
selection split is scored (``eval.select_on``; with ``observed``: valid's observed labels, clean labels for
the Clean row, as the thesis' oracle uses a clean validation set); training stops after ``patience`` epochs
without a better selection AUC, the selected epoch's model is restored and its test metrics are reported.
``--patience 0`` trains every epoch and reports the selected one (``eval.keep_selected``).

**Sweep** (``--sweep``): ``ofat`` varies one hyperparameter at a time around the defaults (DART's 4 grids give
13 points instead of 320), ``full`` takes the Cartesian product (at most ``--max-grid`` points), ``none``
keeps the defaults. Points run on the first seed; the best selection AUC wins (ties: the earlier point,
defaults first); the winner then runs on every seed. Test numbers never influence the choice.

**Noise identification**: the denoiser's own ground-truth report (``Denoiser.report``, logged every step
as ``truth_*``; the soft definition of docs/denoisers.md): a sample counts with its handling amount in
``[0, 1]`` (1 for a drop or a flip, ``1 − w`` for R-CE's weight, the correction for the bootstraps), among
the candidates (the observed positives for T-CE, DART, DeCA; every sample for the others). Precision = noisy share of
the handled amount, recall = handled amount on noisy candidates over the noisy candidates, against random
handling (precision = the noisy share of candidates, recall = the handled share).

Example::

    denoisrec bench quality --preset small --rows 100000 --seeds 3 --epochs 4 --out runs/bench
    denoisrec bench quality --data data/ml100k --model fm --set data.batch_size=2048 --epochs 30
    denoisrec bench quality --quick --out /tmp/q      # CI smoke test
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import math
import os
import textwrap
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Type

from denoisrec.trainer.bench.harness import read_spec, run_spec, worker_main, write_result
from denoisrec.trainer.bench.references import (
    CLEAN,
    NOISE_MODEL_FILE,
    ORACLE_NOISE,
    WITHHELD,
    noise_model_path,
    set_reference,
)
from denoisrec.trainer.bench.report import apply_quick
from denoisrec.trainer.bench.throughput import (
    BASELINE,
    add_method_arguments,
    ensure_data,
    parse_method_params,
    resolve_methods,
)

if TYPE_CHECKING:  # torch-free at import: the denoisers are imported where the sweep runs
    from denoisrec.denoisers import Denoiser

PSEUDO = (WITHHELD, ORACLE_NOISE)  # methods named in --denoisers that are not denoisers

# DART thesis, Table 2 (AUC on the clean test set; MovieLens-100K, rating <= 3 noisy, 1:1 negatives, 8:1:1).
DART_TABLE2_ML100K = {
    "fm": {
        "bce": 0.8204,
        "clean": 0.8263,
        "bootstrap_hard": 0.8208,
        "bootstrap_soft": 0.8204,
        "lcd": 0.8163,
        "lcd_re": 0.8215,
        "rce": 0.8205,
        "tce": 0.8205,
        "dart": 0.8205,
    },
    "deepfm": {
        "bce": 0.8079,
        "clean": 0.8148,
        "bootstrap_hard": 0.8096,
        "bootstrap_soft": 0.8078,
        "lcd": 0.7882,
        "lcd_re": 0.8100,
        "rce": 0.8084,
        "tce": 0.8087,
        "dart": 0.8089,
    },
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_method_arguments(
        p,
        "quality",
        "dataset directory with ground truth (default: data/<preset>)",
        "comma-separated names or 'all'; 'withheld' adds BCE without the context features, "
        "'oracle_noise' the observation model with the data's true noise model (<data>/noise_model.json)",
        "fixed denoiser hyperparameter (overrides the default; not swept)",
        "config override for every run, e.g. optim.lr=1e-3 (repeatable)",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per method (>= 3 for reported figures)")
    p.add_argument("--epochs", type=int, default=5, help="maximum epochs per run")
    p.add_argument("--patience", type=int, default=2, help="early stopping patience in epochs (0: off)")
    p.add_argument("--batch-size", type=int, help="rows per rank per step (data.batch_size)")
    p.add_argument(
        "--sweep",
        choices=("ofat", "full", "none"),
        default="ofat",
        help="hyperparameter sweep per method: one factor at a time, the full grid, or the defaults only",
    )
    p.add_argument(
        "--select-on",
        choices=("auto", "observed", "trusted", "random"),
        default="auto",
        help="what early stopping, the restored epoch and the sweeps select on (eval.select_on; default auto: "
        "trusted labels, else valid_random, else observed validation)",
    )
    p.add_argument("--max-grid", type=int, default=24, help="most sweep points per method")
    p.add_argument("--nproc", type=int, default=1, help="ranks per run (>1: one torchrun job runs everything)")
    p.add_argument("--curve-points", type=int, default=20, help="points of the precision/recall curves")
    p.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="CI smoke test: tiny data, 2 epochs, 2 seeds, 1 thread")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="read a run back instead of retraining it when --out already holds it finished with the same config",
    )
    p.add_argument("--timeout", type=int, default=6 * 3600, help="seconds for the torchrun job (--nproc > 1)")


def quality_methods(spec: str) -> List[str]:
    """The baseline, ``withheld`` / ``oracle_noise`` when named, then the denoisers of ``spec``."""
    names = [x.strip() for x in spec.split(",") if x.strip()]
    methods = resolve_methods(",".join(x for x in names if x not in PSEUDO) or BASELINE)
    for i, m in enumerate(x for x in PSEUDO if x in names):
        methods.insert(1 + i, m)
    return methods


def _apply_quick(a: argparse.Namespace) -> None:
    """``--quick``'s values, except for the options given explicitly (those win)."""
    apply_quick(
        a,
        {
            "preset": "tiny",
            "seeds": 2,
            "epochs": 2,
            "batch_size": a.batch_size or 500,
            "patience": 0,
            "threads": a.threads or 1,
        },
    )


# ---------------------------------------------------------------------------------------------- sweeping


def default_params(cls: Type[Denoiser]) -> Dict[str, Any]:
    """Keyword defaults of a denoiser's ``__init__`` (its papers' defaults)."""
    sig = inspect.signature(cls.__init__)
    return {
        k: v.default
        for k, v in sig.parameters.items()
        if k not in ("self", "process_group", *cls.NEEDS.injected) and v.default is not inspect.Parameter.empty
    }


def grid_points(cls: Type[Denoiser], fixed: Dict[str, Any], mode: str, max_grid: int) -> List[Dict[str, Any]]:
    """The sweep's hyperparameter points for denoiser class ``cls`` (the defaults + ``fixed`` first).

    ``GRID`` keys that ``fixed`` sets are not swept. ``ofat``: one key at a time; ``full``: the product.
    """
    base = {**default_params(cls), **fixed}
    grid = {k: list(v) for k, v in cls.GRID.items() if k not in fixed}
    unknown = set(grid) - set(default_params(cls))
    if unknown:
        raise ValueError(f"{cls.__name__}.GRID names {sorted(unknown)}, which its __init__ does not accept")
    points = [dict(base)]
    if mode == "none" or not grid:
        return points
    seen = {_same_point(base)}

    def add(pt: Dict[str, Any]) -> None:
        if _same_point(pt) not in seen:  # ``hidden=()`` (a default) and ``hidden=[]`` (a GRID value) are one point
            seen.add(_same_point(pt))
            points.append(pt)

    if mode == "ofat":
        for k, values in grid.items():
            for v in values:
                add({**base, k: v})
    else:
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            add({**base, **dict(zip(keys, combo))})
    if len(points) > max_grid:
        raise ValueError(
            f"sweep of {cls.name!r} ({mode}) has {len(points)} points, more than --max-grid "
            f"{max_grid}; use --sweep ofat, fix some with -p, or raise --max-grid"
        )
    return points


def _same_point(pt: Dict[str, Any]) -> str:
    """A point's identity: sequences compare as lists whatever their type (``()`` is ``[]``)."""
    return json.dumps({k: list(v) if isinstance(v, (list, tuple)) else v for k, v in pt.items()}, sort_keys=True)


def select_best(points: List[Dict[str, Any]]) -> int:
    """Index of the point with the highest selection AUC (``select_auc``: the run's ``eval.select_on`` metric;
    the first on ties; NaN never wins).
    """
    best, best_auc = 0, -math.inf
    for i, pt in enumerate(points):
        v = pt["select_auc"]
        if v is not None and not math.isnan(v) and v > best_auc:
            best, best_auc = i, v
    return best


# ------------------------------------------------------------------------------------------ run records


def read_run(run: str) -> Dict[str, Any]:
    """A finished run's own records: per-epoch evaluations and per-step ground-truth sums from
    ``<run>/metrics.jsonl``, with ``summary.json``. The first record of a (split, step) is the epoch's; a
    later one at the same step is the final evaluation (after restoring the best model).
    """
    with open(os.path.join(run, "summary.json")) as f:
        summary = json.load(f)
    evals: Dict[str, Dict[int, Dict[str, Any]]] = {}
    train: Dict[int, Dict[str, Any]] = {}
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            kind, step = rec.get("kind"), rec.get("step")
            if kind == "train":
                train[step] = rec
            elif kind in ("valid", "test_clean", "test_observed", "valid_trusted", "valid_random"):
                evals.setdefault(kind, {}).setdefault(step, rec)
    return {"summary": summary, "evals": evals, "train": [train[k] for k in sorted(train)]}


# Sums behind the noise-identification ratios, logged by the trainer with every train record (the
# denoiser's ground-truth report, ``Denoiser.report``: the soft definition, docs/denoisers.md).
TRUTH_SUMS = ("truth_count_candidates", "truth_count_noisy_candidates", "truth_sum_handled", "truth_sum_handled_noisy")


def identification(records: List[Dict[str, Any]], points: int) -> Dict[str, Any]:
    """Noise identification over training from the run's own train records: totals and ``points`` binned
    curves of precision / recall (the denoiser's soft definition, pooled exactly over log windows).
    """
    import numpy as np

    rows = [[float(r.get(k, 0.0)) for k in TRUTH_SUMS] for r in records if TRUTH_SUMS[0] in r]
    if not rows:
        return {}
    c = np.asarray(rows, dtype=np.float64)  # [log lines, 4]
    tot = c.sum(0)

    def pr(v: Any) -> Dict[str, float]:
        cand, noisy, handled, hit = (float(x) for x in v)
        return {
            "candidates": cand,
            "noisy_candidates": noisy,
            "handled": handled,
            "handled_noisy": hit,
            "precision": hit / handled if handled else float("nan"),
            "recall": hit / noisy if noisy else float("nan"),
            "random_precision": noisy / cand if cand else float("nan"),
            "random_recall": handled / cand if cand else float("nan"),
        }

    n = c.shape[0]
    bins = max(1, min(points, n))
    edges = [round(i * n / bins) for i in range(bins + 1)]
    steps = [r["step"] for r in records if TRUTH_SUMS[0] in r]
    curve = [{"step": steps[edges[i + 1] - 1], **pr(c[edges[i] : edges[i + 1]].sum(0))} for i in range(bins)]
    return {"total": pr(tot), "curve": curve, "steps": n, "has_decisions": bool(tot[2] > 0)}


# ----------------------------------------------------------------------------------------------- running


def oracle_noise_file(data: str) -> str:
    """``<data>/noise_model.json`` (the generator's true noise, written by ``gen-data``), or a one-line error."""
    path = noise_model_path(data)
    if path is None:
        raise ValueError(
            f"--denoisers {ORACLE_NOISE}: {os.path.join(data, NOISE_MODEL_FILE)} is missing; it holds the true noise "
            "model that `denoisrec gen-data` writes (real data has none)"
        )
    return path


def run_one(spec: Dict[str, Any], method: str, params: Dict[str, Any], seed: int, tag: str) -> Dict[str, Any]:
    """Train one (method, hyperparameters, seed) with the real trainer — its per-epoch evaluation, its early
    stopping (:class:`~denoisrec.trainer.evaluation.early_stop.EarlyStopping`, best model restored) and its
    ground-truth report every step — and read the result back from the run's own records.
    """
    import contextlib
    import io

    import torch.distributed as dist

    from denoisrec.trainer.config.check import check_config
    from denoisrec.trainer.config.tree import Config, apply_overrides
    from denoisrec.trainer.train import train

    cfg = apply_overrides(Config(), spec["set"])
    cfg.data.path, cfg.model.name, cfg.run.seed, cfg.run.epochs = spec["data"], spec["model"], seed, spec["epochs"]
    if spec.get("batch_size"):
        cfg.data.batch_size = spec["batch_size"]
    cfg.run.out = os.path.join(spec["out"], "quality-runs", f"{tag}-s{seed}")
    cfg.run.overwrite = True  # the bench owns these run directories: a rerun replaces them
    cfg.run.log_every = 1  # every step's ground-truth sums in metrics.jsonl; the bench bins them
    cfg.run.eval_every, cfg.run.curves = "epoch", False
    cfg.run.eval_during = ["valid", "test_clean", "test_observed"]
    cfg.run.early_stop_patience = spec["patience"]  # 0: every epoch, the selected one reported
    cfg.eval.select_on = spec.get("select_on", "auto")
    if method == ORACLE_NOISE:
        oracle_noise_file(spec["data"])  # the one-line error where the data has no true noise model
    if method in (CLEAN, WITHHELD, ORACLE_NOISE):
        set_reference(cfg, method, params)
    else:
        cfg.denoiser.name, cfg.denoiser.params = method, dict(params)
    from denoisrec.trainer.tuning import finished_with

    reused = spec.get("reuse") and finished_with(cfg)
    if not reused:
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet):
            train(check_config(cfg))  # train() takes a checked config
    if dist.is_initialized():
        dist.barrier()  # rank 0 has written the run's records
    rec = read_run(cfg.run.out)
    summary, evals = rec["summary"], rec["evals"]
    spe = summary["steps_per_epoch"]
    best_step = summary["early_stopping"].get("restored_best_step") or summary["steps"]
    metrics = summary["metrics"]  # the final evaluation: the best epoch's model when one was restored
    curve = [
        {
            "epoch": step // spe - 1,
            "valid_auc": evals["valid"][step]["auc"],
            "test_clean_auc": evals.get("test_clean", {}).get(step, {}).get("auc", float("nan")),
        }
        for step in sorted(evals.get("valid", {}))
    ]
    result = {
        "method": method,
        "params": params,
        "seed": seed,
        "tag": tag,
        "best_epoch": -(-best_step // spe) - 1,
        "epochs_run": len(curve) or summary["epochs_started"],
        "valid": metrics["valid"],
        "select_auc": summary["selection"]["auc"],
        "selection": {k: summary["selection"][k] for k in ("select_on", "split", "auc", "ci", "rows")},
        "test_clean": metrics["test_clean"],
        "test_observed": metrics["test_observed"],
        "epoch_curve": curve,
        "diagnostics": identification(rec["train"], spec["curve_points"]),
        "train_seconds": summary["train_seconds"],
        "steps": summary["steps"],
    }
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(
            f"  {tag:32s} seed {seed}: valid AUC {result['valid']['auc']:.4f}  clean-test AUC "
            f"{result['test_clean']['auc']:.4f} (epoch {result['best_epoch']}, {summary['train_seconds']:.1f}s"
            f"{', reused' if reused else ''})",
            flush=True,
        )
    return result


def run_all(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Every run of the bench (sweeps, then seeds), in this process group; same result on every rank."""
    from denoisrec.denoisers import DENOISERS

    runs: List[Dict[str, Any]] = []
    sweeps: Dict[str, Any] = {}
    seeds = list(range(spec["seeds"]))
    for method in spec["methods"] + [CLEAN]:
        if method in (BASELINE, CLEAN, *PSEUDO):
            chosen: Dict[str, Any] = dict(spec["params"].get(method, {}))
            first = None
        else:
            points = grid_points(DENOISERS[method], spec["params"].get(method, {}), spec["sweep"], spec["max_grid"])
            tried = []
            for i, pt in enumerate(points):
                r = run_one(spec, method, pt, seeds[0], f"{method}-sweep{i}" if len(points) > 1 else method)
                tried.append({"params": pt, "valid_auc": r["valid"]["auc"], "select_auc": r["select_auc"], "run": r})
            best = select_best(tried)
            chosen, first = tried[best]["params"], tried[best]["run"]
            sweeps[method] = {
                "points": [
                    {
                        "params": t["params"],
                        "valid_auc": t["valid_auc"],
                        "select_auc": t["select_auc"],
                        "test_clean_auc": t["run"]["test_clean"]["auc"],
                    }
                    for t in tried
                ],
                "selected": best,
                "grid": DENOISERS[method].GRID,
            }
        for s in seeds:
            if s == seeds[0] and first is not None:
                runs.append(first)
            else:
                runs.append(run_one(spec, method, chosen, s, method))
    return {"runs": runs, "sweeps": sweeps}


def worker(spec_path: str) -> None:
    import torch
    import torch.distributed as dist

    from denoisrec.trainer.distributed.env import init_distributed, shutdown

    spec = read_spec(spec_path)
    env = init_distributed("auto")
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    result = run_all(spec)
    if env.is_main:
        write_result(spec, result)
    dist.barrier()
    shutdown()


def run_here(spec_path: str) -> None:
    """The one-rank job in this process (:func:`run_all` starts and ends its own process group).

    Args:
        spec_path: the spec :func:`run` wrote.
    """
    import torch

    from denoisrec.trainer.distributed.env import shutdown

    spec = read_spec(spec_path)
    prev = torch.get_num_threads()
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    try:
        result = run_all(spec)
    finally:
        shutdown()
        torch.set_num_threads(prev)
    write_result(spec, result)


# -------------------------------------------------------------------------------------------- reporting


def aggregate(runs: List[Dict[str, Any]], methods: List[str]) -> List[Dict[str, Any]]:
    """One row per method: metric means ± stds over seeds, RealImp, gap closure, identification."""
    import numpy as np

    from denoisrec.trainer.evaluation.metrics import real_imp

    rows: Dict[str, Dict[str, Any]] = {}
    for m in [BASELINE, CLEAN] + [x for x in methods if x != BASELINE]:
        rs = [r for r in runs if r["method"] == m]  # the chosen point's runs, one per seed
        if not rs:
            continue
        row: Dict[str, Any] = {"method": m, "params": rs[0]["params"], "seeds": len(rs)}
        for split in ("test_clean", "test_observed", "valid"):
            for k in ("auc", "gauc", "logloss"):
                v = np.array([r[split][k] for r in rs], dtype=np.float64)
                row[f"{split}_{k}"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                row[f"{split}_{k}_std"] = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else 0.0
        row["best_epochs"] = [r["best_epoch"] for r in rs]
        finals = [r["epoch_curve"][-1]["test_clean_auc"] for r in rs if r.get("epoch_curve")]
        row["final_epoch_clean_auc"] = float(np.mean(finals)) if finals else float("nan")
        row["epochs_run"] = [r["epochs_run"] for r in rs]
        diags = [r["diagnostics"]["total"] for r in rs if r.get("diagnostics")]
        for k in ("precision", "recall", "random_precision", "random_recall"):
            vals = [d[k] for d in diags if d.get(k) is not None and not math.isnan(d[k])]
            row[k] = float(np.mean(vals)) if vals else float("nan")
        row["has_decisions"] = any(r.get("diagnostics", {}).get("has_decisions") for r in rs)
        rows[m] = row
    base = rows.get(BASELINE, {}).get("test_clean_auc", float("nan"))
    clean = rows.get(CLEAN, {}).get("test_clean_auc", float("nan"))
    for row in rows.values():
        auc = row["test_clean_auc"]
        row["real_imp"] = real_imp(auc, base)
        gap = clean - base
        row["gap_closure"] = (auc - base) / gap if gap and not math.isnan(gap) and abs(gap) > 1e-12 else float("nan")
    return list(rows.values())


def reference_for(schema_extra: Dict[str, Any], model: str) -> Optional[Dict[str, float]]:
    if schema_extra.get("source") == "movielens-100k":
        return DART_TABLE2_ML100K.get(model)
    return None


def build_report(
    a: argparse.Namespace,
    data: str,
    methods: List[str],
    params: Dict[str, Any],
    result: Dict[str, Any],
    spec: Dict[str, Any],
):
    from denoisrec.trainer.bench.report import BenchReport, markdown_table, pm
    from denoisrec.trainer.data.schema import DataSchema

    schema = DataSchema.load(data)
    ref = reference_for(schema.extra, a.model)
    rows = aggregate(result["runs"], methods)
    for r in rows:
        r["reference_auc"] = ref.get(r["method"]) if ref else None
        if r["method"] in result["sweeps"]:
            r["sweep_points"] = len(result["sweeps"][r["method"]]["points"])
    rep = BenchReport("quality", params={k: v for k, v in spec.items() if k not in ("result",)})
    rep.params["source"] = schema.extra.get("source", "synthetic")
    rep.rows, rep.raw = rows, result

    def hp(r: Dict[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in (r["params"] or {}).items()) or "—"

    def ident(r: Dict[str, Any], k: str) -> Optional[str]:
        if not r["has_decisions"]:
            return None
        return f"{r[k]:.3f} (rand {r['random_' + k]:.3f})"

    cols = [
        ("method", "method", "{}"),
        ("hyperparameters", hp, "{}"),
        ("clean AUC", lambda r: pm(r["test_clean_auc"], r["test_clean_auc_std"]), "{}"),
        ("GAUC", lambda r: pm(r["test_clean_gauc"], r["test_clean_gauc_std"]), "{}"),
        ("logloss", lambda r: pm(r["test_clean_logloss"], r["test_clean_logloss_std"]), "{}"),
        ("RealImp", "real_imp", "{:+.2%}"),
        ("gap closure", "gap_closure", "{:+.2f}"),
        ("valid AUC", "valid_auc", "{:.4f}"),
        ("clean AUC, last epoch", "final_epoch_clean_auc", "{:.4f}"),
        ("precision", lambda r: ident(r, "precision"), "{}"),
        ("recall", lambda r: ident(r, "recall"), "{}"),
    ]
    if ref:
        cols.insert(3, ("thesis AUC", "reference_auc", "{:.4f}"))
    rep.markdown = (
        f"Data `{data}` ({rep.params['source']}), model `{a.model}`, {a.seeds} seed(s), at most {a.epochs} "
        f"epoch(s), early-stopping patience {a.patience}, sweep `{a.sweep}` and epochs selected on "
        f"{_selected_on(result)}. "
        f"Metrics on the clean test set at the selected epoch; RealImp and gap closure from the seed means; "
        f"'last epoch': the clean AUC after the last epoch run (memorisation of the noise shows there).\n\n"
        f"{markdown_table(rows, cols)}\n"
    )
    for m, sw in result["sweeps"].items():
        if len(sw["points"]) > 1:
            srows = [
                {
                    "i": i,
                    "params": p["params"],
                    "valid_auc": p["valid_auc"],
                    "select_auc": p.get("select_auc", p["valid_auc"]),
                    "test": p["test_clean_auc"],
                    "sel": "**selected**" if i == sw["selected"] else "",
                }
                for i, p in enumerate(sw["points"])
            ]
            rep.markdown += (
                f"\nSweep of `{m}` (seed 0; selection on {_selected_on(result)}):\n\n"
                + markdown_table(
                    srows,
                    [
                        ("#", "i", "{}"),
                        ("hyperparameters", lambda r: ", ".join(f"{k}={v}" for k, v in r["params"].items()), "{}"),
                        ("valid AUC", "valid_auc", "{:.4f}"),
                        ("selection AUC", "select_auc", "{:.4f}"),
                        ("clean-test AUC", "test", "{:.4f}"),
                        ("", "sel", "{}"),
                    ],
                )
                + "\n"
            )
    no_grid = [m for m in methods if m != BASELINE and m not in result["sweeps"]]
    no_grid += [m for m, sw in result["sweeps"].items() if not sw.get("grid")]
    if no_grid and a.sweep != "none":
        rep.notes.append(
            f"no sweep for {', '.join(sorted(set(no_grid)))}: the denoiser class defines no GRID; "
            "its defaults were used"
        )
    if a.quick:
        rep.notes.append("--quick: tiny data, 2 epochs, 2 seeds; a smoke test, not a measurement")
    return rep


def _num(v: Any, default: float = float("nan")) -> float:
    """A number from the report (the JSON writes NaN as null)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def plot(fig: Any, rep: Any) -> None:
    """Left: clean-test AUC per method (mean ± std over seeds; the numbers are in the labels). Right: one small
    panel per method with hard decisions (precision, recall and random precision of what it drops or
    relabels, seed 0), shared y axis, one legend; methods without decisions are named, not drawn.

    ``rep`` is the :class:`~denoisrec.trainer.bench.report.BenchReport` or one read back from ``quality.json``.
    """
    from matplotlib.lines import Line2D

    from denoisrec.trainer.outputs import plot_style

    rows = rep.rows
    curves: Dict[str, List[Dict[str, Any]]] = {}
    for r in rep.raw.get("runs", []):
        d = r.get("diagnostics") or {}
        if d.get("has_decisions") and r.get("seed") == 0 and d.get("curve"):
            curves.setdefault(r["method"], d["curve"])
    soft = [r["method"] for r in rows if r["method"] not in curves and r["method"] not in (BASELINE, CLEAN)]
    n = len(curves)
    ncols = min(4, max(1, n))
    nrows = max(1, math.ceil(n / ncols))
    width = max(4.5, 2.5 * ncols)  # the small multiples; at least room for their title and legend
    fig.set_size_inches(5.5 + width, max(4.5, 0.3 * len(rows) + 2.0, 2.2 * nrows + 1.6))
    fig.set_layout_engine("constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[5.5, width], wspace=0.02)

    # --- clean-test AUC per method: a dot plot whose labels are the table
    ax = left.subplots()
    ys = list(range(len(rows)))
    means = [_num(r.get("test_clean_auc")) for r in rows]
    stds = [_num(r.get("test_clean_auc_std"), 0.0) for r in rows]
    ax.errorbar(means, ys, xerr=stds, fmt="o", capsize=3, color="tab:blue", label="mean ± std over seeds")
    refs = [(i, r.get("reference_auc")) for i, r in enumerate(rows) if r.get("reference_auc") is not None]
    if refs:
        ax.plot([x for _, x in refs], [i for i, _ in refs], "x", color="tab:red", label="thesis Table 2")
    for name, style in ((BASELINE, "--"), (CLEAN, ":")):
        r = next((r for r in rows if r["method"] == name), None)
        if r is not None and not math.isnan(_num(r.get("test_clean_auc"))):
            ax.axvline(_num(r["test_clean_auc"]), linestyle=style, color="0.4", linewidth=1, label=f"{name}")
    ax.set_yticks(ys)
    ax.set_yticklabels(
        [
            f"{r['method']}  {m:.4f} ± {sd:.4f}" if not math.isnan(m) else f"{r['method']}  —"
            for r, m, sd in zip(rows, means, stds)
        ],
        fontsize=8,
    )
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the table's order, top to bottom
    ax.set_xlabel("clean-test AUC (best validation epoch)")
    ax.set_title("clean-test AUC", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    plot_style.legend_outside(ax, "below", ncol=2)

    # --- noise identification: small multiples, one per method with hard decisions
    chars = int(width * 11)  # characters per line of the panels' title at 9 pt
    right.suptitle(
        "\n".join(
            textwrap.wrap("noise identification, seed 0: of the positives each method drops or relabels", chars)
            + (textwrap.wrap(f"not drawn (no hard decisions): {', '.join(soft)}", chars) if soft else [])
        ),
        fontsize=9,
    )
    if not curves:
        plot_style.empty(right.subplots(), "no method with hard decisions")
    else:
        grid = right.subplots(nrows, ncols, sharey=True, squeeze=False)
        for k, (method, curve) in enumerate(curves.items()):
            a = grid[k // ncols][k % ncols]
            steps = [p["step"] for p in curve]
            a.plot(steps, [_num(p.get("precision")) for p in curve], "-", color="tab:blue")
            a.plot(steps, [_num(p.get("recall")) for p in curve], "--", color="tab:orange")
            a.plot(steps, [_num(p.get("random_precision")) for p in curve], ":", color="0.4")
            if len(steps) <= plot_style.SHORT:
                for line in a.lines:
                    line.set_marker("o")
            a.set_title(method, fontsize=9)
            a.set_ylim(0, 1)
            a.grid(alpha=0.3)
            plot_style.integer_ticks(a, "x")
            a.tick_params(labelsize=7)
            if k % ncols == 0:
                a.set_ylabel("share of positives", fontsize=8)
            if k + ncols >= n:
                a.set_xlabel("training step", fontsize=8)
        for k in range(n, nrows * ncols):
            grid[k // ncols][k % ncols].set_visible(False)
        handles = [
            Line2D([], [], color="tab:blue", linestyle="-", label="precision (noisy among handled)"),
            Line2D([], [], color="tab:orange", linestyle="--", label="recall (handled among noisy)"),
            Line2D([], [], color="0.4", linestyle=":", label="random precision (noise share)"),
        ]
        right.legend(
            handles=handles, loc="outside lower center", ncol=3 if ncols >= 3 else 1, fontsize=8, frameon=False
        )
    p = rep.params
    fig.suptitle(
        f"bench quality: {p.get('data')} ({p.get('source', 'synthetic')}), model {p.get('model')}, "
        f"{p.get('seeds')} seed(s), at most {p.get('epochs')} epoch(s)",
        fontsize=10,
    )


def _selected_on(result: Dict[str, Any]) -> str:
    """The runs' selection split(s), in words (the Clean row may resolve like the others)."""
    splits = sorted({r["selection"]["split"] for r in result["runs"] if r.get("selection")})
    names = {"valid": "validation (observed labels)", "valid_trusted": "the trusted labels of valid"}
    names["valid_random"] = "the randomised-exposure split (valid_random)"
    return " / ".join(names.get(s, s) for s in splits) or "validation (observed labels)"


def run(a: argparse.Namespace) -> int:
    _apply_quick(a)
    methods = quality_methods(a.denoisers)
    params = parse_method_params(a.param)
    data = ensure_data(a.data, a.preset, a.out, a.quick, a.rows)
    from denoisrec.trainer.data.schema import DataSchema

    if not DataSchema.load(data).ground_truth:
        raise ValueError(f"--data {data}: bench quality needs ground truth (clean_label / is_noisy columns)")
    os.makedirs(a.out, exist_ok=True)
    spec = {
        "data": data,
        "model": a.model,
        "methods": methods,
        "params": params,
        "set": a.set,
        "seeds": a.seeds,
        "epochs": a.epochs,
        "patience": a.patience,
        "batch_size": a.batch_size,
        "sweep": a.sweep,
        "select_on": a.select_on,
        "max_grid": a.max_grid,
        "curve_points": a.curve_points,
        "out": a.out,
        "nproc": a.nproc,
        "threads": a.threads,
        "reuse": a.reuse,
    }
    print(
        f"bench quality: {data}, model {a.model}, methods {', '.join(methods)} + clean, {a.seeds} seed(s)",
        flush=True,
    )
    result = run_spec(
        "denoisrec.trainer.bench.quality",
        spec,
        a.nproc,
        what="bench quality",
        in_process=run_here,
        threads=a.threads,
        timeout=a.timeout,
        echo=True,
    )
    rep = build_report(a, data, methods, params, result, spec)
    paths = rep.write(a.out, plot=lambda fig: plot(fig, rep))
    print(rep.markdown)
    print("wrote " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    worker_main(worker, "denoisrec.trainer.bench.quality")

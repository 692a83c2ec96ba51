"""``denoisrec bench tuned``: how good is ``denoisrec tune``'s choice, per noise family, over seeds.

For every dataset of ``--data`` (comma list; ``{seed}`` in a path is replaced by the seed, so one dataset per
seed) and every seed: tune's candidates (:func:`denoisrec.trainer.tuning.train_candidate`, one run each,
finished runs reused) plus a **Clean** run (BCE on ``data.train_label=clean_label``, the oracle) for the gap
closure ``(m − BCE) / (Clean − BCE)``. Every number is the run's clean-test AUC (``summary.json``). Reported
per family (mean ± std over seeds): BCE, Clean, each candidate, and the tuned choice
(:func:`~denoisrec.trainer.evaluation.selection_rule.choose`) made on the trusted rows of valid and,
separately, on the randomised-exposure split ``valid_random`` (each run's exported model scored there; with
one epoch the exported model does not depend on the selection split, with more the random-bucket choice is
among the trusted-selected epochs). Selection accuracy: each candidate's saved selection scores
(:data:`~denoisrec.trainer.evaluation.evaluator.SCORES_FILE`) are resampled to 1K / 5K / 20K trusted rows
(bootstrap, ``--draws`` times) and ``choose`` is applied again; how often it picks the clean-best candidate,
and the mean clean-test AUC it gives up against that candidate (regret).

Example::

    denoisrec bench tuned --data 'data/examination-s{seed}','data/shifted-s{seed}' --seeds 3 --out runs/tuned
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from typing import Any, Dict, List, Optional

import numpy as np

from denoisrec.trainer.bench.references import CLEAN, CLEAN_NO_CONTEXT, ORACLE_NOISE, WITHHELD, set_reference

SIZES = (1000, 5000, 20000)
EVAL_DURING = "run.eval_during=[valid,test_clean,valid_random]"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Datasets, seeds, the base set-up of every run, the resampling, where to write."""
    p.add_argument("--data", required=True, metavar="DIRS", help="comma list of datasets; '{seed}' is replaced")
    p.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds 0..N-1 (default 3)")
    p.add_argument(
        "--out", default="runs/bench_tuned", metavar="DIR", help="runs and report (default runs/bench_tuned)"
    )
    p.add_argument("--candidates", metavar="LIST", help="tune's --candidates (default: tune's)")
    p.add_argument("--epochs", type=int, default=1, metavar="N", help="epochs per run (default 1)")
    p.add_argument("--model", metavar="NAME", help="model.name (default: dlrm)")
    p.add_argument("--batch-size", type=int, metavar="N", help="data.batch_size")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--draws", type=int, default=100, metavar="N", help="resamples per size (default 100)")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="trusted-row counts (default 1000,5000,20000)")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")


def family_of(template: str) -> str:
    """The family name of a dataset path: its folder name without the seed part (``ex-s{seed}`` -> ``ex``)."""
    name = os.path.basename(template.rstrip("/"))
    return re.sub(r"[-_.]?s?(eed)?\{seed\}", "", name) or name


def _base(data: str, seed: int, a: argparse.Namespace) -> Any:
    from denoisrec.trainer.commands.tune import base_config
    from denoisrec.trainer.config.check import check_config

    ns = argparse.Namespace(
        config=None,
        preset=None,
        data=data,
        model=a.model,
        batch_size=a.batch_size,
        epochs=a.epochs,
        seed=seed,
        device="cpu",
        set=[EVAL_DURING, *a.set],
    )
    return check_config(base_config(ns))


def random_scores(run_out: str, data: str) -> Dict[str, np.ndarray]:
    """The run's exported model (``model.pt``) scored on ``<data>/valid_random``: observed labels, logits."""
    import pyarrow.parquet as pq
    import torch

    from denoisrec.models import load_model_file
    from denoisrec.trainer.data.block import Where
    from denoisrec.trainer.data.schema import RANDOM_SPLIT
    from denoisrec.trainer.serving.predict import Scorer, input_files

    scorer = Scorer(load_model_file(os.path.join(run_out, "model.pt"), torch.device("cpu")), torch.device("cpu"))
    labels, logits = [], []
    for f in input_files(os.path.join(data, RANDOM_SPLIT)):
        pf = pq.ParquetFile(f)
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g)
            logits.append(scorer(t, Where(f, g)))
            labels.append(np.asarray(t.column(scorer.schema.label).to_numpy(), np.float32))
    return {"labels": np.concatenate(labels), "logits": np.concatenate(logits)}


def _cand(name: str, labels: np.ndarray, logits: np.ndarray) -> Any:
    from denoisrec.trainer.evaluation.auc_interval import auc_interval
    from denoisrec.trainer.evaluation.selection_rule import Candidate

    iv = auc_interval(labels, logits)
    return Candidate(name, float(iv["auc"]), float(iv["se"]), labels, logits)


def selection_accuracy(
    scores: List[Dict[str, np.ndarray]], clean: List[float], sizes: List[int], draws: int, seed: int
) -> Dict[str, Dict[str, float]]:
    """Per size: the share of bootstrap resamples of the trusted rows on which ``choose`` picks the candidate
    with the best clean-test AUC (``clean``), and the mean clean-test AUC given up (regret).
    """
    from denoisrec.trainer.evaluation.selection_rule import choose

    rng = np.random.default_rng(seed)
    n = len(scores[0]["labels"])
    best = int(np.argmax(clean))
    out: Dict[str, Dict[str, float]] = {}
    for k in sizes:
        hits, regret = 0, 0.0
        for _ in range(draws):
            idx = rng.integers(0, n, size=k)
            picked = choose([_cand(str(i), s["labels"][idx], s["logits"][idx]) for i, s in enumerate(scores)]).chosen
            hits += picked == best
            regret += clean[best] - clean[picked]
        out[str(k)] = {"picks_clean_best": hits / draws, "mean_regret": regret / draws, "draws": draws}
    return out


TUNED_REFERENCES = (CLEAN_NO_CONTEXT, WITHHELD, ORACLE_NOISE)
"""Rows that are not candidates (:mod:`denoisrec.trainer.bench.references`; they need what a user does not have,
or withhold what the model could use): Clean without the context features, BCE with the context withheld, and
the observation model with the generator's true noise (only where the family has the examination step)."""


def reference_configs(base: Any, out: str, selection: Any) -> List[Any]:
    """``[(name, config)]`` of the :data:`TUNED_REFERENCES` rows that apply to ``base``'s data."""
    from denoisrec.trainer.tuning import OBSERVATION_OPTIONS, candidate_config

    rows = []
    for name in TUNED_REFERENCES:
        cfg = candidate_config(base, "bce", out, selection)
        cfg.run.out = os.path.join(out, "runs", name)
        if set_reference(cfg, name, dict(OBSERVATION_OPTIONS)):
            rows.append((name, cfg))
    return rows


def one_dataset(data: str, seed: int, out: str, a: argparse.Namespace, sizes: List[int]) -> Dict[str, Any]:
    """Every candidate and the Clean run on one dataset and seed; the two choices; the selection accuracy."""
    import copy

    from denoisrec.trainer.commands.tune import selection_of
    from denoisrec.trainer.evaluation.selection_rule import choose
    from denoisrec.trainer.tuning import as_candidate, candidate_config, offered, resolve_candidates, train_candidate

    base = _base(data, seed, a)
    selection, _, train_trusted = selection_of(base, "trusted")
    names, left_out = offered(
        resolve_candidates(a.candidates), train_trusted, bool(base.eval.marginalise), bool(a.candidates)
    )
    for line in left_out:
        print(f"  {line}")
    runs = [train_candidate(candidate_config(base, n, out, selection)) for n in names]
    ccfg = candidate_config(base, "bce", out, selection)
    set_reference(ccfg, CLEAN)
    ccfg.run.out = os.path.join(out, "runs", "clean")
    clean_run = train_candidate(copy.deepcopy(ccfg))
    references = {name: train_candidate(cfg).test_clean_auc for name, cfg in reference_configs(base, out, selection)}
    clean = [float(r.test_clean_auc if r.test_clean_auc is not None else math.nan) for r in runs]
    trusted = choose([as_candidate(r) for r in runs], base.eval.ci_level)
    rnd = [random_scores(r.cfg.run.out, data) for r in runs]
    random_cands = [_cand(r.name, s["labels"], s["logits"]) for r, s in zip(runs, rnd)]
    random_choice = choose(random_cands, base.eval.ci_level)
    sel_scores = []
    for r in runs:
        with np.load(os.path.join(r.cfg.run.out, r.selection["scores_file"])) as z:
            sel_scores.append({"labels": z["labels"], "logits": z["logits"]})
    usable = [k for k in sizes if k <= len(sel_scores[0]["labels"])]
    acc = selection_accuracy(sel_scores, clean, usable, a.draws, seed)
    return {
        "data": data,
        "seed": seed,
        "candidates": names,
        "skipped": left_out,
        "test_clean_auc": dict(zip(names, clean)),
        "clean_oracle": clean_run.test_clean_auc,
        "references": references,
        "selection_auc": {r.name: r.selection["auc"] for r in runs},
        "random_auc": {c.name: c.auc for c in random_cands},
        "tuned_trusted": names[trusted.chosen],
        "tuned_random": names[random_choice.chosen],
        "clean_best": names[int(np.argmax(clean))],
        "seconds": {r.name: r.seconds for r in runs} | {"clean": clean_run.seconds},
        "accuracy": acc,
    }


def _ms(xs: List[float]) -> Dict[str, Any]:
    v = np.asarray(xs, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def summarise(points: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per family: mean ± std over seeds of every row, gap closures, the targets' checks, the accuracy."""
    rows: Dict[str, List[float]] = {}
    names = points[0]["candidates"]
    for p in points:
        rows.setdefault("bce", []).append(p["test_clean_auc"]["bce"])
        rows.setdefault("clean", []).append(p["clean_oracle"])
        for n in names[1:] if names[0] == "bce" else names:
            rows.setdefault(n, []).append(p["test_clean_auc"][n])
        rows.setdefault("tuned (trusted)", []).append(p["test_clean_auc"][p["tuned_trusted"]])
        rows.setdefault("tuned (random)", []).append(p["test_clean_auc"][p["tuned_random"]])
        for n, v in (p.get("references") or {}).items():
            rows.setdefault(f"ref: {n}", []).append(v)
    stats: Dict[str, Dict[str, Any]] = {k: _ms(v) for k, v in rows.items()}
    for k, v in rows.items():  # per seed against that seed's own BCE and Clean (each seed is its own world)
        stats[k]["gap_per_seed"] = [
            (x - b) / (c - b) if c != b else math.nan for x, b, c in zip(v, rows["bce"], rows["clean"])
        ]
    for t in ("tuned (trusted)", "tuned (random)"):  # paired over seeds: each seed is its own world
        key = "tuned_trusted" if "trusted" in t else "tuned_random"
        d = [p["test_clean_auc"][p[key]] - p["test_clean_auc"]["bce"] for p in points]
        stats[t]["minus_bce_paired"] = _ms(d)
    b, c = stats["bce"], stats["clean"]
    for s in stats.values():
        s["gap_closure"] = (s["mean"] - b["mean"]) / (c["mean"] - b["mean"]) if c["mean"] != b["mean"] else math.nan
    best = max(names, key=lambda n: stats[n]["mean"])
    checks = {}
    for t in ("tuned (trusted)", "tuned (random)"):
        checks[t] = {
            "below_bce_beyond_one_std": stats[t]["mean"] < b["mean"] - b["std"],
            "within_one_std_of_best": stats[t]["mean"] >= stats[best]["mean"] - stats[best]["std"],
        }
    acc: Dict[str, Dict[str, float]] = {}
    for k in points[0]["accuracy"]:
        acc[k] = {
            m: float(np.mean([p["accuracy"][k][m] for p in points if k in p["accuracy"]]))
            for m in ("picks_clean_best", "mean_regret")
        }
    choices = {t: [p[key] for p in points] for t, key in (("trusted", "tuned_trusted"), ("random", "tuned_random"))}
    choices["clean_best"] = [p["clean_best"] for p in points]
    return {"rows": stats, "best_row": best, "checks": checks, "accuracy": acc, "choices": choices}


def markdown(families: Dict[str, Dict[str, Any]]) -> str:
    """The report's tables: clean-test AUC per family, then the selection accuracy."""
    lines = [
        "| family | row | clean-test AUC (mean ± std) | gap closure | − BCE, paired per seed |",
        "|---|---|---|---|---|",
    ]
    for fam, s in families.items():
        for row, v in s["rows"].items():
            mark = " (best row)" if row == s["best_row"] else ""
            pd = v.get("minus_bce_paired")
            paired = f"{pd['mean']:+.4f} ± {pd['std']:.4f}" if pd else ""
            lines.append(
                f"| {fam} | {row}{mark} | {v['mean']:.4f} ± {v['std']:.4f} | {v['gap_closure']:+.2f} | {paired} |"
            )
    lines += ["", "| family | choices (trusted / random / clean-best, per seed) | checks |", "|---|---|---|"]
    for fam, s in families.items():
        ch = s["choices"]
        checks = "; ".join(
            f"{t}: {'BELOW BCE' if v['below_bce_beyond_one_std'] else 'not below BCE'}, "
            f"{'within' if v['within_one_std_of_best'] else 'NOT within'} 1 std of best"
            for t, v in s["checks"].items()
        )
        lines.append(
            f"| {fam} | {', '.join(ch['trusted'])} / {', '.join(ch['random'])} / "
            f"{', '.join(ch['clean_best'])} | {checks} |"
        )
    sizes = sorted({k for s in families.values() for k in s["accuracy"]}, key=int)
    lines += ["", "| family | " + " | ".join(f"{k} trusted rows: picks clean-best (regret)" for k in sizes) + " |"]
    lines.append("|---|" + "---|" * len(sizes))
    for fam, s in families.items():
        cells = [
            f"{s['accuracy'][k]['picks_clean_best']:.0%} ({s['accuracy'][k]['mean_regret']:.4f})"
            if k in s["accuracy"]
            else "-"
            for k in sizes
        ]
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(a: argparse.Namespace) -> int:
    """Train (or reuse) every run, summarise, write ``tuned.json`` and ``tuned.md`` under ``--out``."""
    import torch

    from denoisrec.trainer.config.options import UsageError
    from denoisrec.trainer.distributed.env import shutdown

    templates = [d.strip() for d in a.data.split(",") if d.strip()]
    sizes = [int(x) for x in a.sizes.split(",") if x.strip()]
    if a.candidates and "bce" not in [c.strip() for c in a.candidates.split(",")]:
        raise UsageError(f"--candidates {a.candidates!r}: include bce (the baseline every row is measured against)")
    if a.seeds < 1 or a.draws < 1 or not sizes:
        raise UsageError("--seeds, --draws and --sizes must be positive")
    for t in templates:
        for s in range(a.seeds):
            if not os.path.isdir(t.format(seed=s)):
                raise FileNotFoundError(2, "no such dataset directory (--data)", t.format(seed=s))
    torch.set_num_threads(a.threads)
    t0 = time.time()
    families: Dict[str, Dict[str, Any]] = {}
    points_all: Dict[str, List[Dict[str, Any]]] = {}
    try:
        for t in templates:
            fam = family_of(t)
            pts = []
            for s in range(a.seeds):
                print(f"bench tuned: {fam} seed {s}", flush=True)
                pts.append(one_dataset(t.format(seed=s), s, os.path.join(a.out, fam, f"seed{s}"), a, sizes))
            points_all[fam], families[fam] = pts, summarise(pts)
            _write(a.out, families, points_all, time.time() - t0)
    finally:
        shutdown()
    print(markdown(families))
    return 0


def figure(families: Dict[str, Dict[str, Any]], path: str) -> str:
    """``tuned.png``: one panel per family, each row's gap closure per seed (dots) and of the means (bar);
    0 is BCE, 1 is Clean; the tuned choices drawn in their own colour.

    Args:
        families: :func:`summarise`'s output per family.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from denoisrec.trainer.outputs import plot_style

    n = len(families)
    cols = min(n, 4)
    nrows = -(-n // cols)
    rows: List[str] = []
    for fam_stats in families.values():
        rows += [r for r in fam_stats["rows"] if r not in ("bce", "clean") and r not in rows]
    fig, axes = plt.subplots(
        nrows, cols, figsize=(3.2 * cols + 1.5, 0.3 * len(rows) * nrows + 1), squeeze=False, sharey=True
    )
    for ax, (fam, s) in zip(axes.flat, families.items()):
        for y, r in enumerate(rows):
            v = s["rows"].get(r)
            if v is None:
                continue
            colour = "tab:red" if r.startswith("tuned") else ("0.55" if r.startswith("ref:") else "tab:blue")
            ax.barh(y, v["gap_closure"], color=colour, alpha=0.35, height=0.7)
            seeds = v.get("gap_per_seed", [])
            ax.plot(seeds, [y] * len(seeds), "o", color=colour, ms=3)
            ax.annotate(
                f"{v['gap_closure']:+.2f}",
                (v["gap_closure"], y),
                xytext=(3 if v["gap_closure"] >= 0 else -3, 0),
                textcoords="offset points",
                va="center",
                ha="left" if v["gap_closure"] >= 0 else "right",
                fontsize=7,
            )
        ax.axvline(0, color="k", lw=0.8)
        ax.axvline(1, color="k", lw=0.8, ls="--")
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel("gap closure (0: BCE, 1: Clean)", fontsize=8)
        ax.margins(x=0.15)
    axes.flat[0].invert_yaxis()
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return plot_style.save(
        fig, path, title="denoisrec bench tuned: clean-test AUC as gap closure (bar: of the means; dots: per seed)"
    )


def _write(out: str, families: Dict[str, Any], points: Dict[str, Any], seconds: float) -> Optional[str]:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tuned.json"), "w") as f:
        json.dump({"families": families, "points": points, "seconds": seconds}, f, indent=1, default=str)
    path = os.path.join(out, "tuned.md")
    with open(path, "w") as f:
        f.write(markdown(families))
    figure(families, os.path.join(out, "tuned.png"))
    return path

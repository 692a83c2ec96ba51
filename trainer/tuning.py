"""``denoisrec tune``'s work: train the candidate methods on one dataset, choose on the trusted signal, write
the choice as a config ``denoisrec train --config`` takes.

Each candidate is one run of the real trainer (:func:`denoisrec.trainer.train.train`, in this process, as
``bench quality`` runs its points), with validation every epoch and ``eval.select_on`` resolved once for all
(:mod:`~denoisrec.trainer.evaluation.selection`), so every run keeps and is judged by its selected epoch on the same
rows. The choice is :func:`~denoisrec.trainer.evaluation.selection_rule.choose`: the simplest candidate within the
interval of the best.

Candidates (:data:`CANDIDATES`, simplest first; ``--candidates`` picks and orders them, and any other
registered denoiser name is a candidate with its defaults, placed after the known ones):

| name | method | options |
|---|---|---|
| ``bce`` | plain BCE | – |
| ``bce_no_context`` | plain BCE, the context withheld (served as is) | ``model.context=withhold`` |
| ``tce`` | T-CE (truncated loss) | its defaults |
| ``observation`` | observation model | ``form=examination tower_warmup=25% rates_lr_scale=50`` (recommended) |
| ``observation_context`` | observation model, ``f`` also reads the context | the same, ``model.context=features`` |
| ``observation_ids`` | observation model + user × item noise MFs | the same options |
| ``observation_ids_context`` | the same, ``f`` also reads the context | the same, ``model.context=features`` |
| ``observation_trusted`` | observation model + trusted rows in training | the same, ``trusted_weight=10`` |
| ``observation_ids_trusted`` | id noise MFs and trusted rows | the same |
| ``observation_ids_context_trusted`` | all three: id noise MFs, ``f`` reads the context, trusted rows | the same |
| ``deca_p`` | DeCA(p) | its defaults |

The ``_context`` candidates (:data:`READS_CONTEXT`) let ``f`` read the context features too, beside the tower
that explains the noise by them. Under a ranker the logged position carries preference (the old ranker put
liked items on top); a model that reads it is credited, on logged rows, with the old ranker's knowledge, which a
served model does not have: the position is what its ranking decides. So they are offered only when the run
scores such features as served, marginalised over their training distribution (``--set
eval.marginalise=[position]``, :class:`~denoisrec.trainer.evaluation.scoring.Marginal`; the selection rows too),
or when ``--candidates`` names them; otherwise each is skipped with one line saying why.

``observation_trusted``, ``observation_ids_trusted`` and ``observation_ids_context_trusted``
(:data:`NEEDS_TRAIN_TRUSTED`) are offered only when the training split carries trusted labels
(``gen-data --trusted-train-rows``); otherwise each is skipped with one line saying why.

Example::

    plan = TunePlan.build(base_cfg, ["bce", "observation"], budget=Budget.parse("2"), out="runs/tune")
    result = run_plan(plan)             # trains, chooses, writes runs/tune/tuned.yaml
    print(format_table(result))
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import yaml

from denoisrec.trainer.config.options import UsageError
from denoisrec.trainer.config.tree import Config, apply_overrides
from denoisrec.trainer.evaluation.selection import Selection
from denoisrec.trainer.evaluation.selection_rule import Candidate, Choice, choose

#: The observation model's options in every observation candidate (the ``recommended`` preset's).
OBSERVATION_OPTIONS = {"form": "examination", "tower_warmup": "25%", "rates_lr_scale": 50}
_F_READS_CONTEXT = {"model.context": "features"}
#: name -> (denoiser, its options, config settings ``section.field -> value``), simplest first: the order that
#: breaks ties within the interval.
CANDIDATES: Dict[str, Tuple[str, Dict[str, Any], Dict[str, Any]]] = {
    "bce": ("bce", {}, {}),
    "bce_no_context": ("bce", {}, {"model.context": "withhold"}),
    "tce": ("tce", {}, {}),
    "observation": ("observation", dict(OBSERVATION_OPTIONS), {}),
    "observation_context": ("observation", dict(OBSERVATION_OPTIONS), dict(_F_READS_CONTEXT)),
    "observation_ids": ("observation_ids", dict(OBSERVATION_OPTIONS), {}),
    "observation_ids_context": ("observation_ids", dict(OBSERVATION_OPTIONS), dict(_F_READS_CONTEXT)),
    "observation_trusted": ("observation", {**OBSERVATION_OPTIONS, "trusted_weight": 10}, {}),
    "observation_ids_trusted": ("observation_ids", {**OBSERVATION_OPTIONS, "trusted_weight": 10}, {}),
    "observation_ids_context_trusted": (
        "observation_ids",
        {**OBSERVATION_OPTIONS, "trusted_weight": 10},
        dict(_F_READS_CONTEXT),
    ),
    "deca_p": ("deca_p", {}, {}),
}
DEFAULT_CANDIDATES = list(CANDIDATES)
#: candidates that train on the training split's trusted labels: offered only when it has some.
NEEDS_TRAIN_TRUSTED = ("observation_trusted", "observation_ids_trusted", "observation_ids_context_trusted")
#: candidates whose ``f`` reads the logged context: offered only with ``eval.marginalise`` or by name.
READS_CONTEXT = tuple(n for n, (_, _, settings) in CANDIDATES.items() if settings == _F_READS_CONTEXT)
TUNED_FILE = "tuned.yaml"
# A floor on one run's time for a budget given in minutes: train rows × epochs at this many samples/s (faster
# than this trainer's CPU runs; a budget below it cannot hold one run).
OPTIMISTIC_SAMPLES_PER_S = 200_000.0


@dataclass(frozen=True)
class Budget:
    """``runs`` candidate runs, or ``minutes`` of training wall time (one of the two)."""

    runs: Optional[int] = None
    minutes: Optional[float] = None

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """``"4"`` (runs), ``"30m"`` / ``"30min"`` (minutes) or ``"2h"``; a one-line error otherwise."""
        t = str(text).strip().lower()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(m|min|minutes?|h|hours?)?", t)
        if not m:
            raise UsageError(f"--budget {text!r}: expected a number of runs (4) or of minutes (30m, 1.5h)")
        value, unit = float(m.group(1)), m.group(2)
        if unit is None:
            if not value.is_integer() or value < 1:
                raise UsageError(f"--budget {text!r}: too small for one run; give at least 1 run (or minutes: 30m)")
            return cls(runs=int(value))
        minutes = value * (60.0 if unit.startswith("h") else 1.0)
        if minutes <= 0:
            raise UsageError(f"--budget {text!r}: too small for one run; give a positive time such as 30m")
        return cls(minutes=minutes)

    def describe(self) -> str:
        return f"{self.runs} run(s)" if self.runs is not None else f"{self.minutes:g} min"


def resolve_candidates(spec: Optional[str]) -> List[str]:
    """``--candidates`` (comma-separated) as names, known ones first in :data:`CANDIDATES` order (simplest
    first), then other registered denoisers in the order given; one-line errors for unknown or repeated names.
    """
    names = DEFAULT_CANDIDATES if not spec else [x.strip() for x in spec.split(",") if x.strip()]
    if len(set(names)) != len(names):
        raise UsageError(f"--candidates {spec!r}: a name is repeated")
    from denoisrec.trainer.config.options import DENOISER_OPTIONS

    unknown = [n for n in names if n not in CANDIDATES and n not in DENOISER_OPTIONS]
    if unknown:
        known = sorted(set(CANDIDATES) | set(DENOISER_OPTIONS))
        raise UsageError(f"--candidates: unknown candidate(s) {unknown}; expected some of {', '.join(known)}")
    if len(names) < 2:
        raise UsageError(f"--candidates {spec!r}: give at least two candidates to choose between")
    order = list(CANDIDATES)
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), names.index(n)))


def offered(
    names: List[str], train_trusted_rows: int, marginalised: bool = False, named: bool = False
) -> Tuple[List[str], List[str]]:
    """``(names to run, one line per candidate left out and why)``.

    Args:
        names: the candidates asked for.
        train_trusted_rows: trusted labels in the training split; with none, :data:`NEEDS_TRAIN_TRUSTED` are left out.
        marginalised: the run scores context features as served (``eval.marginalise`` is set).
        named: ``--candidates`` named the candidates; else :data:`READS_CONTEXT` need ``marginalised``.

    Returns:
        The candidates to run (in order) and the reasons for the others.

    Example: ``offered(["bce", "observation_trusted"], 0)`` is ``(["bce"], ["observation_trusted: ..."])``.
    """
    keep, why = [], []
    for n in names:
        if n in NEEDS_TRAIN_TRUSTED and train_trusted_rows <= 0:
            why.append(
                f"{n}: skipped, the training split has no trusted labels to train on (gen-data --trusted-train-rows, "
                "or a trusted_label column in train)"
            )
        elif n in READS_CONTEXT and not (marginalised or named):
            why.append(
                f"{n}: skipped, its f reads the logged context, and under a ranker the logged position carries the "
                "old ranker's knowledge that a served model lacks; --set eval.marginalise=[position] scores it as "
                "served (or name it in --candidates)"
            )
        else:
            keep.append(n)
    return keep, why


def candidate_config(base: Config, name: str, out: str, selection: Selection) -> Config:
    """The run of candidate ``name``: ``base`` with its denoiser, validation every epoch, the selected epoch
    kept, ``eval.select_on`` fixed to the resolved mode, its own folder under ``out``.
    """
    cfg = copy.deepcopy(base)
    denoiser, params, settings = CANDIDATES.get(name, (name, {}, {}))
    cfg.denoiser.name, cfg.denoiser.params = denoiser, dict(params)
    apply_overrides(cfg, [f"{key}={value}" for key, value in settings.items()])
    cfg.run.out = os.path.join(out, "runs", name)
    cfg.run.eval_every, cfg.eval.keep_selected = "epoch", True
    cfg.eval.select_on = selection.mode  # type: ignore[assignment]  # one of SELECT_ON, resolved
    cfg.run.overwrite = True  # tune owns these folders; a finished identical run is reused instead
    cfg.run.curves = False
    return cfg


REUSE_KEYS = ("data", "model", "denoiser", "optim")  # with run.seed / epochs / early_stop_patience: a run's identity


def finished_with(cfg: Any) -> bool:
    """Whether ``cfg.run.out`` holds a finished run (``summary.json``) whose ``config.yaml`` trained what ``cfg`` asks.

    ``bench quality --reuse`` and tune: a run killed midway, or rerun with more methods, trains only what it lacks.
    """
    out = cfg.run.out
    if not (os.path.isfile(os.path.join(out, "summary.json")) and os.path.isfile(os.path.join(out, "config.yaml"))):
        return False
    try:
        old = Config.load(os.path.join(out, "config.yaml")).to_dict()
    except Exception:  # an unreadable record: retrain
        return False
    new = cfg.to_dict()
    run_keys = ("seed", "epochs", "early_stop_patience")
    return all(old[k] == new[k] for k in REUSE_KEYS) and all(old["run"][k] == new["run"][k] for k in run_keys)


def reusable(cfg: Config) -> bool:
    """A finished run in ``cfg.run.out`` that trained what ``cfg`` asks (``bench quality --reuse``'s test)."""
    if not finished_with(cfg):
        return False
    with open(os.path.join(cfg.run.out, "summary.json")) as f:
        sel = json.load(f).get("selection") or {}
    return sel.get("select_on") == cfg.eval.select_on


@dataclass
class RunResult:
    """A candidate's outcome: the run's summary ``selection`` block, its wall time, and whether it was reused."""

    name: str
    cfg: Config
    selection: Dict[str, Any]
    seconds: float
    reused: bool
    test_clean_auc: Optional[float] = None


@dataclass
class TuneResult:
    """Every candidate run, the choice, the skipped candidates (budget) and the written config's path."""

    selection: Selection
    runs: List[RunResult]
    choice: Choice
    skipped: List[str] = field(default_factory=list)
    written: Optional[str] = None
    level: float = 0.95

    @property
    def chosen(self) -> RunResult:
        return self.runs[self.choice.chosen]


def train_candidate(cfg: Config) -> RunResult:
    """Train (or reuse) one candidate run, its console kept in ``<run>/console.log``."""
    from denoisrec.trainer.config.check import check_config
    from denoisrec.trainer.train import train

    check_config(cfg)  # train() takes a checked config
    reused = reusable(cfg)
    t0 = time.time()
    if not reused:
        os.makedirs(os.path.dirname(cfg.run.out), exist_ok=True)
        console = io.StringIO()
        try:
            with contextlib.redirect_stdout(console):
                train(cfg)
        finally:
            if os.path.isdir(cfg.run.out):
                with open(os.path.join(cfg.run.out, "console.log"), "w") as f:
                    f.write(console.getvalue())
    with open(os.path.join(cfg.run.out, "summary.json")) as f:
        summary = json.load(f)
    seconds = time.time() - t0 if not reused else float(summary.get("wall_seconds", 0.0))
    clean = summary.get("metrics", {}).get("test_clean", {}).get("auc")
    name = os.path.basename(cfg.run.out)
    return RunResult(name, cfg, summary["selection"], seconds, reused, clean)


def as_candidate(r: RunResult) -> Candidate:
    """A finished run as a :class:`Candidate` of the selection rule: its selection AUC, DeLong SE and saved rows."""
    sel = r.selection
    path = os.path.join(r.cfg.run.out, sel.get("scores_file") or "")
    labels = logits = None
    if sel.get("scores_file") and os.path.isfile(path):
        with np.load(path) as z:
            labels, logits = z["labels"], z["logits"]
    se = sel.get("auc_se")
    return Candidate(r.name, float(sel["auc"]), float("nan") if se is None else float(se), labels, logits)


def tune(
    base: Config, names: List[str], budget: Budget, out: str, selection: Selection, level: float = 0.95
) -> TuneResult:
    """Train the candidates (simplest first) within ``budget``, choose, return everything (writes nothing
    but the runs: :func:`write_tuned` writes the choice).
    """
    runs: List[RunResult] = []
    skipped: List[str] = []
    t_start = time.time()
    for i, name in enumerate(names):
        if budget.runs is not None and len(runs) >= budget.runs:
            skipped = names[i:]
            break
        if budget.minutes is not None and runs:
            spent = (time.time() - t_start) / 60.0
            per_run = max(r.seconds for r in runs) / 60.0
            if spent + per_run > budget.minutes:
                skipped = names[i:]
                break
        runs.append(train_candidate(candidate_config(base, name, out, selection)))
        print(f"  {name:14s} {selection.split} AUC {runs[-1].selection['auc']:.4f}  ({runs[-1].seconds:.1f}s)")
    choice = choose([as_candidate(r) for r in runs], level)
    return TuneResult(selection, runs, choice, skipped, level=level)


def min_run_seconds(train_rows: int, epochs: int) -> float:
    """A floor on one candidate run's time (see :data:`OPTIMISTIC_SAMPLES_PER_S`)."""
    return train_rows * epochs / OPTIMISTIC_SAMPLES_PER_S


def tuned_config(result: TuneResult, run_out: str) -> Dict[str, Any]:
    """The chosen run's config as a mapping for ``denoisrec train --config`` (its output folder ``run_out``;
    ``run.overwrite``/``resume`` back to their defaults, the selection mode as resolved).
    """
    cfg = copy.deepcopy(result.chosen.cfg)
    defaults = Config().run
    cfg.run.out, cfg.run.overwrite, cfg.run.resume, cfg.run.curves = run_out, False, defaults.resume, True
    return cfg.to_dict()


def write_tuned(result: TuneResult, path: str, run_out: str) -> str:
    """Write the choice to ``path`` (YAML with a header saying what was chosen and why); returns ``path``."""
    c = result.chosen
    header = [
        f"# denoisrec tune: chose {c.name} on {result.selection.split} "
        f"(eval.select_on={result.selection.mode}; {result.selection.reason})",
        f"# {result.choice.reason}",
        f"# train it: denoisrec train --config {path}",
    ]
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(header) + "\n")
        yaml.safe_dump(tuned_config(result, run_out), f, sort_keys=False)
    os.replace(tmp, path)
    result.written = path
    return path


def format_table(result: TuneResult) -> str:
    """The candidates with their selection AUC ± interval, the lead of the best over each, and the choice."""
    ch, lvl = result.choice, result.level
    lines = [
        f"tune: chose on {result.selection.split} (eval.select_on={result.selection.mode}: "
        f"{result.selection.reason}); {lvl:.0%} DeLong intervals; simplest first",
        f"  {'candidate':14s} {'AUC':>7s}  {'interval':17s}  {'best leads by':>17s}  {'epoch':>5s}  "
        f"{'time':>7s}  {'clean test':>10s}",
    ]
    for i, r in enumerate(result.runs):
        s = r.selection
        lo, hi = s["ci"]
        iv = f"[{lo:.4f}, {hi:.4f}]" if lo is not None and not math.isnan(lo) else "[n/a]"
        lead = "best" if i == ch.best else f"{ch.lead[i]:+.4f} ± {ch.half_width[i]:.4f}"
        mark = " <- chosen" if i == ch.chosen else (" (ties the best)" if ch.ties[i] and i != ch.best else "")
        ep = f"{s.get('exported_epoch')}/{s.get('epochs')}"
        clean = f"{r.test_clean_auc:.4f}" if r.test_clean_auc is not None else "-"
        lines.append(
            f"  {r.name:14s} {s['auc']:7.4f}  {iv:17s}  {lead:>17s}  {ep:>5s}  "
            f"{r.seconds:6.1f}s  {clean:>10s}{mark}{'  (reused)' if r.reused else ''}"
        )
    lines.append(f"chose {result.chosen.name}: {ch.reason}")
    if result.skipped:
        lines.append(f"not run (budget): {', '.join(result.skipped)}")
    total = sum(r.seconds for r in result.runs)
    lines.append(f"cost: {len(result.runs)} run(s), {total:.1f}s of training runs in all")
    lines.append("(clean test: ground truth, shown for reference; it never influences the choice)")
    return "\n".join(lines)

"""The training job's evaluations: when validation is due, on which splits, selection, early stop, final pass.

The one place the job calls :mod:`~denoisrec.trainer.evaluation.scoring`. Every ``run.eval_every`` steps (or at each
epoch's end) the splits of ``run.eval_during`` and the selection split (``eval.select_on``,
:mod:`~denoisrec.trainer.evaluation.selection`: ``valid_trusted``, ``valid_random`` or ``valid``) are scored; a better
selection AUC saves the ``best`` model (``eval.keep_selected``, or early stopping); ``patience`` evaluations
without one stop the run. At the end :meth:`Evaluator.final` scores ``valid`` and the selection split (reusing
an evaluation of the same step), restores the selected model when it is not the last, then ``test_clean``
(when the data has ground truth) and ``test_observed``; :meth:`Evaluator.summary` says what was selected,
with DeLong's interval, and which model was exported and why.

Splits and labels: ``valid`` is scored against the labels training sees (the clean ones for the "Clean"
oracle run, ``data.train_label=clean_label``), ``valid_trusted`` against the trusted labels of the valid
rows that have one (the same scoring pass as ``valid``), ``valid_random`` against the observed labels of the
randomised-exposure split, ``test_clean`` against the clean labels, ``test_observed`` against the observed
ones.

Example (inside the recipe)::

    ev = Evaluator(model, readers, env, autocast, cfg, layout, log, stopper)
    if ev.due(step):
        progress.write(ev.periodic(state, save_best))
    metrics = ev.final(state, checkpointer, save_best)
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from torch import nn

from denoisrec.trainer.checkpoint.checkpointer import Checkpointer
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.distributed.env import DistEnv
from denoisrec.trainer.evaluation.early_stop import EarlyStopping
from denoisrec.trainer.evaluation.metric_state import Rows
from denoisrec.trainer.evaluation.scoring import Marginal, evaluate, evaluate_targets
from denoisrec.trainer.evaluation.selection import Selection, resolve_selection
from denoisrec.trainer.outputs.console import resolve_eval_every
from denoisrec.trainer.outputs.loggers import numeric
from denoisrec.trainer.train_state import RunLayout, TrainState

SaveBest = Callable[[int], Any]  # saves the model as the best at a step
SCORES_FILE = "selection_scores.npz"  # the exported model's selection rows: labels, logits (paired comparisons)


class Evaluator:
    """Args:
    model: the DMP model; readers: the run's split readers; env, autocast: where and how to run it.
    cfg: the run's config (``run.eval_every``, ``run.eval_during``, ``data.train_label``, ``eval``).
    layout: the launch's layout; log: the run log (scalars per split); stopper: early stopping.
    selection: ``eval.select_on`` resolved on ``readers``
    (:func:`~denoisrec.trainer.evaluation.selection.resolve_selection`;
    resolved here when not given).
    """

    def __init__(
        self,
        model: nn.Module,
        readers: Dict[str, Any],
        env: DistEnv,
        autocast: Any,
        cfg: Config,
        layout: RunLayout,
        log: Any,
        stopper: EarlyStopping,
        selection: Optional[Selection] = None,
    ) -> None:
        self.model, self.readers, self.env, self.autocast = model, readers, env, autocast
        self.cfg, self.layout, self.log, self.stopper = cfg, layout, log, stopper
        self.with_ground_truth = bool(readers["test"].with_ground_truth)
        self.selection: Selection = selection or resolve_selection(cfg.eval.select_on, readers)
        self.sel = self.selection.split
        # "auto" validates every epoch when there is something worth a curve: ground truth or a trusted signal
        signal = self.with_ground_truth or self.selection.mode != "observed"
        self.every = resolve_eval_every(cfg.run.eval_every, signal)
        self.keeps_best = stopper.enabled or (cfg.eval.keep_selected and bool(self.every))
        self._save_scores = False  # the final evaluation of the exported model writes its selection rows
        names = list(cfg.eval.marginalise)
        self.marginal = Marginal.from_reader(readers["train"], names) if names and "train" in readers else None

    def due(self, step: int) -> bool:
        """A periodic evaluation after ``step`` steps (never at the last step: :meth:`final` does that)."""
        if step >= self.layout.total_steps:
            return False
        if self.every == "epoch":
            return step % self.layout.steps_per_epoch == 0
        return bool(self.every) and step % int(self.every) == 0

    def splits(self) -> List[str]:
        """The splits an evaluation scores: the selection split (when a best model is kept) and
        ``run.eval_during``, less those the data lacks.
        """
        splits = list(dict.fromkeys(([self.sel] if self.keeps_best else []) + list(self.cfg.run.eval_during)))
        have = {
            "test_clean": self.with_ground_truth,
            "valid_trusted": self.selection.trusted_rows > 0,
            "valid_random": "valid_random" in self.readers,
        }
        return [s for s in splits if have.get(s, True)]

    def _valid_target(self) -> str:
        return "clean" if self.cfg.data.train_label == "clean_label" else "observed"

    def _keep(self, rows: Rows) -> None:
        """Rank 0 of the scoring: the selection rows of the exported model, for ``denoisrec tune``'s paired test."""
        if self._save_scores:
            labels = next(iter(rows.labels.values()))
            path = os.path.join(self.cfg.run.out, SCORES_FILE)
            np.savez(path + ".tmp.npz", labels=labels, logits=rows.logits)
            os.replace(path + ".tmp.npz", path)

    def score(self, splits: List[str]) -> Dict[str, Dict[str, Any]]:
        """The metrics of ``splits``; ``valid`` and ``valid_trusted`` come from one scoring pass of valid, and
        the selection split carries its AUC's interval.
        """
        out: Dict[str, Dict[str, Any]] = {}
        level, keep = self.cfg.eval.ci_level, self._keep
        on_valid = {"valid": self._valid_target(), "valid_trusted": "trusted"}
        wanted = {on_valid[s]: s for s in splits if s in on_valid}
        if wanted:
            sel_t = [t for t, s in wanted.items() if s == self.sel]
            m = evaluate_targets(
                self.model,
                self.readers["valid"],
                self.env.device,
                list(wanted),
                self.autocast,
                sel_t,
                level,
                keep,
                self.marginal,
            )
            out.update({wanted[t]: v for t, v in m.items()})
        for s in splits:
            if s == "valid_random":
                iv = ["observed"] if s == self.sel else []
                r = self.readers["valid_random"]
                out[s] = evaluate_targets(
                    self.model, r, self.env.device, ["observed"], self.autocast, iv, level, keep, self.marginal
                )["observed"]
            elif s not in on_valid:
                target = "clean" if s == "test_clean" else "observed"
                test = self.readers["test"]
                out[s] = evaluate(self.model, test, self.env.device, target, self.autocast, self.marginal)
        return {s: out[s] for s in splits}

    def run(self, step: int, splits: List[str]) -> Dict[str, Any]:
        """Score ``splits`` now; each split's numbers go to the run log under its name."""
        results = self.score(splits)
        for s in splits:
            self.log.log_dict(numeric(results[s]), step, kind=s)
        return results

    def periodic(self, state: TrainState, save_best: SaveBest) -> str:
        """A due evaluation: record it in ``state``, update early stopping, save a better model; the console line."""
        state.last_eval = {"step": state.step, **self.run(state.step, self.splits())}
        state.evaluations.append(brief(state.last_eval))
        sel = state.last_eval.get(self.sel)
        improved = self.stopper.update(state.step, sel["auc"]) if sel is not None else False
        if improved and self.keeps_best:
            save_best(state.step)
        return eval_line(state.last_eval, self.stopper, self.sel if self.keeps_best else None)

    def final(self, state: TrainState, ck: Checkpointer, save_best: SaveBest) -> Dict[str, Any]:
        """The final metrics: ``valid`` and the selection split (on the selected model when it was restored)
        and the tests.
        """
        step, last = state.step, state.last_eval
        need = list(dict.fromkeys(["valid", self.sel]))
        fresh = last.get("step") != step or any(s not in last for s in need)
        self._save_scores = True
        metrics: Dict[str, Any] = {s: last[s] for s in need} if not fresh else self.run(step, need)
        if self.keeps_best:
            if fresh and self.stopper.update(step, metrics[self.sel]["auc"]):
                save_best(step)
            if self.stopper.best_step is not None and self.stopper.best_step != step:
                self._restore_best(state, ck)
                metrics.update(self.run(self.stopper.best_step, need))  # logged at its model's step
        self._save_scores = False
        at = state.restored_best_step or step  # the step whose model is evaluated (one metrics.jsonl record a step)
        if self.with_ground_truth:
            metrics["test_clean"] = self.run(at, ["test_clean"])["test_clean"]
        metrics["test_observed"] = self.run(at, ["test_observed"])["test_observed"]
        return metrics

    def _restore_best(self, state: TrainState, ck: Checkpointer) -> None:
        """Load the best model (the curves' last point first: the model before the restore)."""
        if self.every and state.last_eval.get("step") != state.step:
            self.run(state.step, [s for s in self.splits() if s not in ("valid", self.sel)])
        ck.load(os.path.join(ck.root, "best"), self.model, None)
        state.restored_best_step = self.stopper.best_step
        self.log.print(
            f"restored the selected model ({self.sel} AUC {self.stopper.best_auc:.4f} at step "
            f"{self.stopper.best_step}, eval.select_on={self.selection.mode})"
        )

    def summary(self, state: TrainState, metrics: Dict[str, Any], exported: bool) -> Dict[str, Any]:
        """``summary.json``'s ``selection``: the mode and why, the metric with its interval, the selected and the
        exported step (and epoch), and the rule that made the exported one.
        """
        m, sel, spe = metrics[self.sel], self.selection, self.layout.steps_per_epoch
        at = state.restored_best_step or state.step
        epochs = -(-self.layout.total_steps // spe)
        epoch = lambda s: -(-s // spe) if s else 0  # noqa: E731 - 1-based: the epoch the step ends or falls in
        best = self.stopper.best_step
        if not self.keeps_best:
            why = (
                "the last step: eval.keep_selected=false and early stopping is off"
                if self.every
                else "the last step: validation ran only at the end (run.eval_every), so there was one model to judge"
            )
        elif best is not None and best != state.step:
            why = f"the selected evaluation (the best {self.sel} AUC), restored at the end"
        else:
            why = f"the last step, which is also the selected evaluation (the best {self.sel} AUC)"
        return {
            "select_on": sel.mode,
            "asked": sel.asked,
            "reason": sel.reason,
            "split": self.sel,
            "metric": sel.describe(int(m["rows"])),
            "auc": m["auc"],
            "ci": [m.get("auc_lo"), m.get("auc_hi")],
            "ci_level": self.cfg.eval.ci_level,
            "auc_se": m.get("auc_se"),
            "interval": "DeLong et al. 1988 (normal approximation)",
            "rows": m["rows"],
            "positives": m.get("positives"),
            "selected_step": best if self.keeps_best and best is not None else at,
            "exported_step": at if exported else None,
            "exported_epoch": epoch(at) if exported else None,
            "epochs": epochs,
            "why": why,
            "scores_file": SCORES_FILE,
        }


def brief(e: Dict[str, Any]) -> Dict[str, Any]:
    """An evaluation in brief for ``summary.json``'s ``evaluations``: AUC, GAUC and logloss per split (and the
    interval of the selection split's AUC).
    """
    keys = ("auc", "gauc", "logloss", "auc_lo", "auc_hi")
    return {"step": e["step"], **{s: {k: m[k] for k in keys if k in m} for s, m in e.items() if s != "step"}}


def eval_line(e: Dict[str, Any], stopper: EarlyStopping, sel: Optional[str] = None) -> str:
    """One evaluation as a console line: each split's AUC (with its interval), GAUC and logloss, then the
    stopper's state.
    """
    parts = [f"eval @ step {e['step']}:"]
    for s, m in e.items():
        if s != "step":
            ci = f" [{m['auc_lo']:.4f}, {m['auc_hi']:.4f}]" if "auc_lo" in m else ""
            parts.append(f"{s} AUC {m['auc']:.4f}{ci} GAUC {m['gauc']:.4f} logloss {m['logloss']:.4f}")
    if stopper.enabled:
        parts.append(f"(best {stopper.best_auc:.4f} @ {stopper.best_step}, {stopper.bad_evals}/{stopper.patience})")
    elif sel is not None and stopper.best_auc is not None:
        parts.append(f"(selected: {sel} {stopper.best_auc:.4f} @ {stopper.best_step})")
    return "  ".join(parts)

"""The training job's evaluations: when validation is due, on which splits, early stopping, the final pass.

The one place the job calls :func:`~denoisrec.trainer.evaluation.scoring.evaluate`. Every ``run.eval_every`` steps (or
at each epoch's end) the splits of ``run.eval_during`` (and ``valid`` when early stopping is on) are scored;
a better validation AUC saves the ``best`` model; ``patience`` evaluations without one stop the run. At the end
:meth:`Evaluator.final` scores ``valid`` (reusing an evaluation of the same step), restores the best model
when early stopping is on, then ``test_clean`` (when the data has ground truth) and ``test_observed``.

Splits and labels: ``valid`` is scored against the labels training sees (the clean ones for the "Clean"
oracle run, ``data.train_label=clean_label``), ``test_clean`` against the clean labels, ``test_observed``
against the observed ones.

Example (inside the recipe)::

    ev = Evaluator(model, readers, env, autocast, cfg, layout, log, stopper)
    if ev.due(step):
        progress.write(ev.periodic(state, save_best))
    metrics = ev.final(state, checkpointer, save_best)
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List

from torch import nn

from denoisrec.trainer.checkpoint.checkpointer import Checkpointer
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.distributed.env import DistEnv
from denoisrec.trainer.evaluation.early_stop import EarlyStopping
from denoisrec.trainer.evaluation.scoring import evaluate
from denoisrec.trainer.outputs.console import resolve_eval_every
from denoisrec.trainer.outputs.loggers import numeric
from denoisrec.trainer.train_state import RunLayout, TrainState

SaveBest = Callable[[int], Any]  # saves the model as the best at a step


class Evaluator:
    """Args:
    model: the DMP model; readers: the run's split readers; env, autocast: where and how to run it.
    cfg: the run's config (``run.eval_every``, ``run.eval_during``, ``data.train_label``).
    layout: the launch's layout; log: the run log (scalars per split); stopper: early stopping.
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
    ) -> None:
        self.model, self.readers, self.env, self.autocast = model, readers, env, autocast
        self.cfg, self.layout, self.log, self.stopper = cfg, layout, log, stopper
        self.with_ground_truth = bool(readers["test"].with_ground_truth)
        self.every = resolve_eval_every(cfg.run.eval_every, self.with_ground_truth)

    def due(self, step: int) -> bool:
        """A periodic evaluation after ``step`` steps (never at the last step: :meth:`final` does that)."""
        if step >= self.layout.total_steps:
            return False
        if self.every == "epoch":
            return step % self.layout.steps_per_epoch == 0
        return bool(self.every) and step % int(self.every) == 0

    def splits(self) -> List[str]:
        """The splits a periodic evaluation scores: ``valid`` if early stopping is on, and ``run.eval_during``."""
        splits = list(dict.fromkeys((["valid"] if self.stopper.enabled else []) + list(self.cfg.run.eval_during)))
        return [s for s in splits if s != "test_clean" or self.with_ground_truth]

    def split(self, split: str) -> Dict[str, Any]:
        """Score one split on every rank: its metrics, against the labels (clean or observed) it is scored on."""
        reader = self.readers["valid" if split == "valid" else "test"]
        clean_valid = split == "valid" and self.cfg.data.train_label == "clean_label"
        target = "clean" if split == "test_clean" or clean_valid else "observed"
        return evaluate(self.model, reader, self.env.device, target, self.autocast)

    def run(self, step: int, splits: List[str]) -> Dict[str, Any]:
        """Score ``splits`` now; each split's numbers go to the run log under its name."""
        results = {}
        for s in splits:
            results[s] = self.split(s)
            self.log.log_dict(numeric(results[s]), step, kind=s)
        return results

    def periodic(self, state: TrainState, save_best: SaveBest) -> str:
        """A due evaluation: record it in ``state``, update early stopping, save a better model; the console line."""
        state.last_eval = {"step": state.step, **self.run(state.step, self.splits())}
        state.evaluations.append(brief(state.last_eval))
        improved = (
            self.stopper.update(state.step, state.last_eval["valid"]["auc"]) if "valid" in state.last_eval else False
        )
        if improved and self.stopper.enabled:
            save_best(state.step)
        return eval_line(state.last_eval, self.stopper)

    def final(self, state: TrainState, ck: Checkpointer, save_best: SaveBest) -> Dict[str, Any]:
        """The final metrics: ``valid`` (on the best model when early stopping restored it) and the tests."""
        step, last = state.step, state.last_eval
        metrics: Dict[str, Any] = {}
        metrics["valid"] = (
            last["valid"] if last.get("step") == step and "valid" in last else self.run(step, ["valid"])["valid"]
        )
        if self.stopper.enabled:
            if last.get("step") != step and self.stopper.update(step, metrics["valid"]["auc"]):
                save_best(step)
            if self.stopper.best_step is not None and self.stopper.best_step != step:
                self._restore_best(state, ck)
                metrics["valid"] = self.run(self.stopper.best_step, ["valid"])["valid"]  # logged at its model's step
        at = state.restored_best_step or step  # the step whose model is evaluated (one metrics.jsonl record a step)
        if self.with_ground_truth:
            metrics["test_clean"] = self.run(at, ["test_clean"])["test_clean"]
        metrics["test_observed"] = self.run(at, ["test_observed"])["test_observed"]
        return metrics

    def _restore_best(self, state: TrainState, ck: Checkpointer) -> None:
        """Load the best model (the curves' last point first: the model before the restore)."""
        if self.every and state.last_eval.get("step") != state.step:
            self.run(state.step, [s for s in self.splits() if s != "valid"])
        ck.load(os.path.join(ck.root, "best"), self.model, None)
        state.restored_best_step = self.stopper.best_step
        self.log.print(
            f"restored the best model (validation AUC {self.stopper.best_auc:.4f} at step {self.stopper.best_step})"
        )


def brief(e: Dict[str, Any]) -> Dict[str, Any]:
    """An evaluation in brief for ``summary.json``'s ``evaluations``: AUC, GAUC and logloss per split."""
    return {
        "step": e["step"],
        **{s: {k: m[k] for k in ("auc", "gauc", "logloss")} for s, m in e.items() if s != "step"},
    }


def eval_line(e: Dict[str, Any], stopper: EarlyStopping) -> str:
    """One evaluation as a console line: each split's AUC, GAUC and logloss, and the stopper's state."""
    parts = [f"eval @ step {e['step']}:"]
    for s, m in e.items():
        if s != "step":
            parts.append(f"{s} AUC {m['auc']:.4f} GAUC {m['gauc']:.4f} logloss {m['logloss']:.4f}")
    if stopper.enabled:
        parts.append(f"(best {stopper.best_auc:.4f} @ {stopper.best_step}, {stopper.bad_evals}/{stopper.patience})")
    return "  ".join(parts)

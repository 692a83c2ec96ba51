"""Evaluation: scoring a split on every rank, the evaluator, metrics, early stopping, the selection split and rule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

from denoisrec.trainer import lazy_exports

_EXPORTS: Dict[str, str] = {
    "EarlyStopping": "denoisrec.trainer.evaluation.early_stop",
    "Evaluator": "denoisrec.trainer.evaluation.evaluator",
    "MetricState": "denoisrec.trainer.evaluation.metric_state",
    "all_metrics": "denoisrec.trainer.evaluation.metrics",
    "auc": "denoisrec.trainer.evaluation.metrics",
    "evaluate": "denoisrec.trainer.evaluation.scoring",
    "Selection": "denoisrec.trainer.evaluation.selection",
    "resolve_selection": "denoisrec.trainer.evaluation.selection",
    "Candidate": "denoisrec.trainer.evaluation.selection_rule",
    "choose": "denoisrec.trainer.evaluation.selection_rule",
    "auc_interval": "denoisrec.trainer.evaluation.auc_interval",
}
"""Public name → the module that defines it (imported on first use: no torch until then)."""

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from denoisrec.trainer.evaluation.auc_interval import auc_interval as auc_interval
    from denoisrec.trainer.evaluation.early_stop import EarlyStopping as EarlyStopping
    from denoisrec.trainer.evaluation.evaluator import Evaluator as Evaluator
    from denoisrec.trainer.evaluation.metric_state import MetricState as MetricState
    from denoisrec.trainer.evaluation.metrics import all_metrics as all_metrics
    from denoisrec.trainer.evaluation.metrics import auc as auc
    from denoisrec.trainer.evaluation.scoring import evaluate as evaluate
    from denoisrec.trainer.evaluation.selection import Selection as Selection
    from denoisrec.trainer.evaluation.selection import resolve_selection as resolve_selection
    from denoisrec.trainer.evaluation.selection_rule import Candidate as Candidate
    from denoisrec.trainer.evaluation.selection_rule import choose as choose

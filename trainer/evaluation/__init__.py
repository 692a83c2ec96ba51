"""Evaluation: scoring a split on every rank, the evaluator and its cadence, metric state, metrics, early stopping."""

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
}
"""Public name → the module that defines it (imported on first use: no torch until then)."""

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from denoisrec.trainer.evaluation.early_stop import EarlyStopping as EarlyStopping
    from denoisrec.trainer.evaluation.evaluator import Evaluator as Evaluator
    from denoisrec.trainer.evaluation.metric_state import MetricState as MetricState
    from denoisrec.trainer.evaluation.metrics import all_metrics as all_metrics
    from denoisrec.trainer.evaluation.metrics import auc as auc
    from denoisrec.trainer.evaluation.scoring import evaluate as evaluate

"""The training loop's parts: the step, the log window, the learning-rate schedule, the non-finite guard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

from denoisrec.trainer import lazy_exports

_EXPORTS: Dict[str, str] = {
    "LRSchedule": "denoisrec.trainer.loop.schedule",
    "NonFiniteGuard": "denoisrec.trainer.loop.nonfinite",
    "Stepper": "denoisrec.trainer.loop.steps",
    "TrainLogger": "denoisrec.trainer.loop.log_window",
}
"""Public name → the module that defines it (imported on first use: no torch until then)."""

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from denoisrec.trainer.loop.log_window import TrainLogger as TrainLogger
    from denoisrec.trainer.loop.nonfinite import NonFiniteGuard as NonFiniteGuard
    from denoisrec.trainer.loop.schedule import LRSchedule as LRSchedule
    from denoisrec.trainer.loop.steps import Stepper as Stepper

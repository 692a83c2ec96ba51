"""``TrainState``: where a training job is (step, rows, losses, evaluations, launches), and the run's layout.

Every component reads this one state, and a checkpoint's metadata is written from it
(:meth:`TrainState.load_meta` reads it back on resume).
``RunLayout`` holds what does not change during a launch: steps per epoch, batch sizes, world size, budget.

Example::

    layout = RunLayout(steps_per_epoch=98, batch_size=2048, world_size=2, total_steps=294)
    state = TrainState(step=0)
    state.step = 98; layout.epoch_of(state.step)  # 1 (the epoch the next step is in)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass(frozen=True)
class RunLayout:
    """The launch's fixed shape: ``steps_per_epoch`` of ``batch_size`` rows per rank on ``world_size`` ranks,
    ``total_steps`` in all (``run.epochs`` capped by ``run.max_steps``).
    """

    steps_per_epoch: int
    batch_size: int
    world_size: int
    total_steps: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def epoch_of(self, step: int) -> int:
        """The epoch step ``step + 1`` belongs to (``step`` steps done)."""
        return step // self.steps_per_epoch

    def position(self, step: int) -> Dict[str, int]:
        """A checkpoint's data position after ``step`` steps (:func:`~denoisrec.trainer.run_setup.resume_step`
        maps it to another layout).
        """
        return {
            "step": step,
            "epoch": step // self.steps_per_epoch,
            "batches_in_epoch": step % self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "global_batch": self.global_batch,
            "total_steps": self.total_steps,
        }


@dataclass
class TrainState:
    """The job's mutable state.

    Attributes:
        step: steps done (over all launches).
        start_step: the step this launch started at.
        launch: this launch's number (0 for the first; :mod:`~denoisrec.trainer.checkpoint.run_history`).
        history: the row accounting of earlier launches.
        rows_before: rows trained by earlier launches.
        local_samples: rows this rank trained in this launch.
        first_loss: the loss of the run's first step (before any update).
        last_loss: the last logged window's mean loss.
        pause_seconds: time spent evaluating and checkpointing in this launch.
        evaluations: every periodic evaluation in brief; ``last_eval``: the last one in full.
        checkpoint_path: the newest checkpoint of this run.
        resumed: where this launch resumed from (``None``: a fresh start).
        interrupted: the session ended at ``run.stop_after_steps``.
        restored_best_step: the step of the best model restored for the final evaluation.
        skipped_before: steps earlier launches skipped with ``run.nonfinite=skip``.
    """

    step: int = 0
    start_step: int = 0
    launch: int = 0
    history: List[Any] = field(default_factory=list)
    rows_before: int = 0
    local_samples: int = 0
    first_loss: float = math.nan
    last_loss: float = math.nan
    pause_seconds: float = 0.0
    evaluations: List[Dict[str, Any]] = field(default_factory=list)
    last_eval: Dict[str, Any] = field(default_factory=dict)
    checkpoint_path: Optional[str] = None
    resumed: Optional[Dict[str, Any]] = None
    interrupted: bool = False
    restored_best_step: Optional[int] = None
    skipped_before: int = 0

    def meta(self) -> Dict[str, Any]:
        """The state a checkpoint keeps besides the position (rows trained are added globally by the job)."""
        return {"first_loss": self.first_loss, "launch": self.launch}

    def load_meta(self, meta: Dict[str, Any], start_step: int) -> None:
        """Continue from a checkpoint's metadata at ``start_step``: a new launch of the same run."""
        self.step = self.start_step = start_step
        self.launch = int(meta.get("launch", 0)) + 1
        self.history = list(meta.get("rows_read", []))
        self.rows_before = int(meta.get("rows_trained", 0))
        self.first_loss = float(meta.get("first_loss", math.nan))
        self.skipped_before = int(meta.get("nonfinite_skipped", 0))

"""When the training job checkpoints: every ``run.checkpoint_every`` steps, and at the end of a run or session.

:class:`PeriodicCheckpointer` wraps a :class:`~denoisrec.trainer.checkpoint.checkpointer.Checkpointer` with the cadence
and records the newest checkpoint in the :class:`~denoisrec.trainer.train_state.TrainState`. Saving is
collective: every rank calls :meth:`PeriodicCheckpointer.maybe_save` at every step (the cadence is the same
on every rank).

Example::

    every = PeriodicCheckpointer(Checkpointer(out, keep=2, env=env), every=100, total_steps=294)
    every.due(200)                                # True
    every.maybe_save(state, model, opt, meta_of)  # the path when due, else None
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from torch import nn

from denoisrec.trainer.checkpoint.checkpointer import Checkpointer, step_dir
from denoisrec.trainer.train_state import TrainState

MetaOf = Callable[[int], Dict[str, Any]]  # a checkpoint's metadata after a number of steps


class PeriodicCheckpointer:
    """Args: ``checkpointer``; ``every`` steps between checkpoints (0: only a session's end); ``total_steps``."""

    def __init__(self, checkpointer: Checkpointer, every: int, total_steps: int) -> None:
        self.checkpointer, self.every, self.total_steps = checkpointer, every, total_steps

    def due(self, step: int) -> bool:
        """A periodic checkpoint after ``step`` steps (the last step's is :meth:`save_final`'s)."""
        return self.every > 0 and step % self.every == 0 and step < self.total_steps

    def maybe_save(self, state: TrainState, model: nn.Module, opt: Any, meta_of: MetaOf) -> Optional[str]:
        """Save a checkpoint when one is :meth:`due` after ``state.step``; its path, or ``None``."""
        if not self.due(state.step):
            return None
        state.checkpoint_path = self.checkpointer.save(state.step, model, opt, meta_of(state.step))
        return state.checkpoint_path

    def save_final(self, state: TrainState, model: nn.Module, opt: Any, meta_of: MetaOf) -> Optional[str]:
        """At the end of the run (checkpoints on) or of the session: unless that step is saved already."""
        wanted = (self.every > 0 or state.interrupted) and state.step > 0
        if wanted and state.checkpoint_path != step_dir(self.checkpointer.root, state.step):
            state.checkpoint_path = self.checkpointer.save(state.step, model, opt, meta_of(state.step))
        return state.checkpoint_path

"""The training scalars of one log window (``run.log_every`` steps), for the run log and the console.

Every window (and at the last step) the mean loss, samples/s, learning rate, gradient norm and the denoiser's
statistics are written.

The window keeps device tensors, so the host waits on the device once per log line, not once per step.
Time spent evaluating or checkpointing is taken out of the window (:meth:`TrainLogger.paused`).

Example (inside the recipe)::

    logger = TrainLogger(run_log, progress, log_every=50, layout=layout, opt=opt, schedule=schedule, model=dmp)
    logger.after_step(state, value, rows=2048, skipped=False, out=loss_output)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import nn

from denoisrec.trainer.loop.schedule import LRSchedule
from denoisrec.trainer.module import denoiser_of
from denoisrec.trainer.outputs.loggers import MetricLogger
from denoisrec.trainer.outputs.progress import Progress
from denoisrec.trainer.train_state import RunLayout, TrainState


def denoiser_stats(model: nn.Module, out: Any) -> Dict[str, float]:
    """This step's global stats plus the ground-truth report since the last call, as floats (one transfer)."""
    values: Dict[str, torch.Tensor] = dict(out.stats) if out is not None else {}
    values.update({f"truth_{k}": v for k, v in denoiser_of(model).report().items()})
    if not values:
        return {}
    flat = torch.stack([v.detach().reshape(()).to(torch.float64).cpu() for v in values.values()]).tolist()
    floats = dict(zip(values, flat))
    denoiser_of(model).check_stats(floats)  # e.g. DeCA's collapse guard: the reason, not a run ending at AUC 0.5
    return floats


@dataclass
class Window:
    """Training statistics since the last log line (device tensors: no host sync until read)."""

    loss_sum: Optional[torch.Tensor] = None
    steps: int = 0
    samples: int = 0
    t0: float = 0.0
    skipped: int = 0  # steps skipped by run.nonfinite=skip (not in the loss)

    def add(self, value: torch.Tensor, samples: int) -> None:
        v = value.detach().double()
        self.loss_sum = v if self.loss_sum is None else self.loss_sum + v
        self.steps += 1
        self.samples += samples

    def reset(self) -> None:
        self.loss_sum, self.steps, self.samples, self.t0, self.skipped = None, 0, 0, time.time(), 0


class TrainLogger:
    """Args: ``log`` (the files' :class:`MetricLogger`), ``progress`` (the console's), ``log_every``,
    the launch's ``layout``, the ``opt`` (:class:`~denoisrec.trainer.distributed.sharding.TrainOptimizer`), the LR
    ``schedule`` and the DMP ``model`` (for the denoiser's statistics).
    """

    def __init__(
        self,
        log: MetricLogger,
        progress: Progress,
        log_every: int,
        layout: RunLayout,
        opt: Any,
        schedule: LRSchedule,
        model: nn.Module,
    ) -> None:
        self.log, self.progress, self.log_every, self.layout = log, progress, log_every, layout
        self.opt, self.schedule, self.model = opt, schedule, model
        self.window = Window()
        self.window.reset()
        self.last_out: Any = None

    def after_step(self, state: TrainState, value: torch.Tensor, rows: int, skipped: bool, out: Any) -> None:
        """Add the step to the window; log the window when due (``state.last_loss``), else move the bar."""
        if skipped:
            self.window.skipped += 1
        else:
            self.window.add(value, rows)
        self.last_out = out
        if state.step % self.log_every == 0 or state.step == self.layout.total_steps:
            state.last_loss = self.flush(state.step)
        else:
            self.progress.advance(state.step)

    def paused(self, seconds: float) -> None:
        """Take ``seconds`` of evaluation or checkpointing out of the window's time."""
        self.window.t0 += seconds

    def close(self, state: TrainState) -> None:
        """Log the steps since the last log line (early stop, end of session), close the console."""
        if self.window.steps or self.window.skipped:
            state.last_loss = self.flush(state.step)
        self.progress.close()

    def flush(self, at: int) -> float:
        """Log the window ending after step ``at``; returns its mean loss (one host sync), NaN when
        ``run.nonfinite=skip`` skipped every step of the window (the line then says how many it skipped).
        """
        w = self.window
        loss = float(w.loss_sum.item() / w.steps) if w.loss_sum is not None and w.steps else math.nan
        skips: Dict[str, int] = {"skipped_steps": w.skipped} if w.skipped else {}
        rate = w.samples * self.layout.world_size / max(time.time() - w.t0, 1e-9)
        lr = self.opt.lr_groups[1][1] * self.schedule.multiplier(at - 1)
        gn = self.opt.grad_norm()
        grad: Dict[str, float] = {"grad_norm": float(gn.item())} if gn is not None else {}
        stats = {k: v for k, v in denoiser_stats(self.model, self.last_out).items() if math.isfinite(v)}
        epoch = (at - 1) // self.layout.steps_per_epoch
        self.log.log_dict({"loss": loss, "samples_per_s": rate, "epoch": epoch, "lr": lr, **grad, **stats, **skips}, at)
        self.progress.log_dict({"loss": loss, "samples/s": rate, "lr": lr, **grad, **stats, **skips}, at, epoch=epoch)
        w.reset()
        return loss

"""Non-finite loss or gradients: stop the run (default) or skip the batch, never train on to export NaN.

``run.nonfinite`` chooses the policy:

- ``stop`` (default): every step folds ``¬isfinite(loss)`` (and ``¬isfinite(‖∇‖)`` of the dense gradients
  when ``optim.clip_grad_norm`` computes it) into a device flag, together with the first step it was seen at:
  no host sync per step. The flag is read (one MAX all-reduce, so every rank stops at the same step) every
  ``run.nonfinite_check_every`` steps, before every evaluation and checkpoint, and before the final one and
  the export. A non-finite value therefore stops the run within ``nonfinite_check_every`` steps, with a
  one-line :class:`NonFiniteError` naming the step, before anything non-finite is saved: the last checkpoint
  stays the last good one and no ``model.pt`` is written. Non-finite *gradients* with a finite loss (clipping
  off) show up as a non-finite loss one step later, when the parameters they reached are used.
- ``skip``: a step whose loss is not finite is skipped before its backward pass (no gradient, no update of
  the dense or the fused sparse optimizer; the batch counts as consumed). This reads the loss on the host
  every step (a sync per step) and needs ``run.pipeline`` off. More than ``run.nonfinite_max_skips``
  consecutive skips stop the run as ``stop`` does.
- ``off``: no check.

Example::

    guard = NonFiniteGuard("stop", check_every=10, device=torch.device("cpu"))
    guard.observe(1, torch.tensor(float("nan")))
    guard.check(1)          # NonFiniteError: non-finite training loss at step 1 ...
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from denoisrec.trainer.errors import NonFiniteError

POLICIES = ("stop", "skip", "off")


class NonFiniteGuard:
    """Args:
    policy: ``stop``, ``skip`` or ``off`` (see the module docstring).
    check_every: read the flag every this many steps (``stop``).
    device: where the flag lives (the loss's device).
    max_skips: consecutive skipped steps (``skip``) after which the run stops.
    """

    def __init__(self, policy: str, check_every: int, device: torch.device, max_skips: int = 10) -> None:
        if policy not in POLICIES:
            raise ValueError(f"run.nonfinite={policy!r}: expected one of {POLICIES}")
        if check_every < 1:
            raise ValueError(f"run.nonfinite_check_every={check_every}: must be >= 1")
        if max_skips < 1:
            raise ValueError(f"run.nonfinite_max_skips={max_skips}: must be >= 1")
        self.policy, self.check_every, self.max_skips = policy, check_every, max_skips
        self._first = torch.full((1,), -1, dtype=torch.int64, device=device)  # first bad step (-1: none)
        self.skipped = 0  # steps skipped (skip policy), over the run
        self._run_of_skips = 0

    @property
    def skip(self) -> bool:
        return self.policy == "skip"

    def observe(self, step: int, loss: torch.Tensor, grad_norm: Optional[torch.Tensor] = None) -> None:
        """Fold one step's loss (and gradient norm) into the flag, on the device."""
        if self.policy != "stop":
            return
        bad = ~torch.isfinite(loss.detach()).all()
        if grad_norm is not None:
            bad = bad | ~torch.isfinite(grad_norm.detach()).all()
        self._first = torch.where(bad & (self._first < 0), torch.full_like(self._first, step), self._first)

    def skipped_step(self, step: int, skipped: bool) -> None:
        """Count a step the stepper skipped (``skip``); stop after too many in a row."""
        if not skipped:
            self._run_of_skips = 0
            return
        self.skipped += 1
        self._run_of_skips += 1
        if self._run_of_skips > self.max_skips:
            raise NonFiniteError(
                f"non-finite training loss in {self._run_of_skips} consecutive steps up to step "
                f"{step} (run.nonfinite=skip skipped them); stopped: the last checkpoint is the last "
                "good one and no model was exported. Lower optim.lr or set optim.clip_grad_norm"
            )

    def after_step(self, step: int, loss: torch.Tensor, grad_norm: Optional[torch.Tensor], skipped: bool) -> None:
        """The trainer's one call per step: fold in (``stop``) or count a skip (``skip``), and check when due."""
        if self.skip:
            self.skipped_step(step, skipped)
        else:
            self.observe(step, loss, grad_norm)
        if self.due(step):
            self.check(step)

    def due(self, step: int) -> bool:
        return self.policy == "stop" and step % self.check_every == 0

    def check(self, step: int) -> None:
        """Raise :class:`NonFiniteError` on every rank when any rank saw a non-finite value (a collective)."""
        if self.policy != "stop":
            return
        first = self._first.clone()
        if dist.is_initialized() and dist.get_world_size() > 1:
            # the earliest bad step over ranks: MAX of (-step) among bad ones; ranks without one send -inf-ish
            key = torch.where(first >= 0, -first, torch.full_like(first, -(1 << 62)))
            dist.all_reduce(key, op=dist.ReduceOp.MAX)
            first = torch.where(key > -(1 << 62), -key, torch.full_like(key, -1))
        at = int(first.item())
        if at >= 0:
            raise NonFiniteError(
                f"non-finite training loss or gradient at step {at} (found at step {step}); stopped: the last "
                "checkpoint is the last good one and no model was exported. Lower optim.lr, set "
                "optim.clip_grad_norm, or --set run.nonfinite=skip to skip such batches"
            )

"""The learning-rate schedule: linear warm-up, then constant, linear or cosine decay.

A pure function of the global step, so a resumed run needs only the step to continue the schedule. It
scales every optimizer's base learning rate by the same factor: the dense optimizer's ``optim.lr`` and the
fused sparse optimizer's ``optim.sparse_lr`` (FBGEMM reads the new rate at the next ``zero_grad``/``step``).

For the step about to be taken, ``t`` (0-based), with ``W`` warm-up steps and ``T`` steps in all::

    m(t) = (t + 1) / W                                   t < W
    m(t) = 1                                             decay = none
    m(t) = 1 − (1 − r)·p,  p = (t − W) / max(1, T − W − 1) decay = linear
    m(t) = r + (1 − r)·(1 + cos(π p)) / 2                 decay = cosine

so the last step runs at ``r = min_lr_ratio`` times the base rate.

Example::

    s = LRSchedule(warmup_steps=2, decay="linear", total_steps=6, min_lr_ratio=0.0)
    [s.multiplier(t) for t in range(6)]  # [0.5, 1.0, 1.0, 0.667, 0.333, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

from torch.optim import Optimizer

DECAYS = ("none", "linear", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    """The learning-rate multiplier ``m(t)`` of the module docstring, from warm-up, decay and run length."""

    warmup_steps: int = 0
    decay: str = "none"
    total_steps: int = 1
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise ValueError(f"optim.decay={self.decay!r}: expected one of {DECAYS}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps={self.warmup_steps}: must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio={self.min_lr_ratio}: must lie in [0, 1]")

    def multiplier(self, step: int) -> float:
        """Factor on the base learning rates for the step with 0-based index ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "none":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps - 1)
        p = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        r = self.min_lr_ratio
        if self.decay == "linear":
            return 1.0 - (1.0 - r) * p
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))


def set_lr(groups: Sequence[Tuple[Optimizer, float]], multiplier: float) -> Dict[str, float]:
    """Set ``lr = base × multiplier`` on every parameter group of each ``(optimizer, base)``."""
    for opt, base in groups:
        for g in opt.param_groups:
            g["lr"] = base * multiplier
    return {"lr_multiplier": multiplier}

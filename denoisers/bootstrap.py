"""Bootstrapping: mix the observed label with the model's own belief (Reed et al. 2015; LCD Eq. 2).

Reed et al., "Training Deep Neural Networks on Noisy Labels with Bootstrapping", 2015, with a fixed
weight ``λ``::

    soft:  y* = λ·y + (1 − λ)·p              (default λ = 0.95)
    hard:  y* = λ·y + (1 − λ)·1[p > 0.5]     (default λ = 0.8)

The loss is the mean ``BCE(p, y*)`` over the global batch, applied from the first step. ``y*`` is a
constant (detached) by default; ``attach_target=True`` keeps ``p`` in the soft target's graph, as in Reed's
original objective ``−Σ [λ·y + (1 − λ)·q] log q`` (the hard target has no gradient either way).

Cost per step: one SUM all-reduce (loss, batch size and the correction sum together), as BCE.

Example::

    out = SoftBootstrap(lam=0.5)(torch.tensor([0.0]), torch.tensor([1.0]))
    out.target  # tensor([0.75]) = 0.5·1 + 0.5·σ(0)
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch.distributed import ProcessGroup

from denoisrec.denoisers.base import Denoiser, LossOutput, bce_per_sample, no_decisions, soft_bce
from denoisrec.denoisers.batch import DenoiserBatch


class SoftBootstrap(Denoiser):
    """Soft bootstrapping: ``y* = λ·y + (1 − λ)·p`` (LCD Eq. 2).

    Args:
        lam: weight ``λ`` of the observed label (1 is plain BCE).
        attach_target: keep ``p`` differentiable inside ``y*`` (Reed's original); default detached.
    """

    name = "bootstrap_soft"
    GRID = {"lam": [0.8, 0.9, 0.95]}
    positives_only = False
    hard = False

    def __init__(
        self, lam: float = 0.95, attach_target: bool = False, process_group: Optional[ProcessGroup] = None
    ) -> None:
        super().__init__(process_group)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"{self.name} option lam={lam}: must lie in [0, 1]")
        self.lam = float(lam)
        self.attach_target = bool(attach_target)

    def hparams(self) -> Dict[str, Any]:
        """``{lam, attach_target}``."""
        return {"lam": self.lam, "attach_target": self.attach_target}

    def belief(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B]`` soft belief ``σ(z)`` (detached unless ``attach_target``)."""
        p = torch.sigmoid(logits if self.attach_target else logits.detach())
        return p

    def compute(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor],
        batch: Optional[DenoiserBatch],
    ) -> LossOutput:
        """Bootstrapped BCE (LCD Eq. 2) against ``λ·y + (1 − λ)·belief``: ``[B]`` targets."""
        target = self.lam * labels + (1.0 - self.lam) * self.belief(logits)
        per = soft_bce(logits, target)
        corr = (target.detach() - labels).abs()
        ones = torch.ones_like(per)
        loss, value, sums = self.global_mean(per, ones, ones.sum(), extra=[corr.sum()])
        dropped, _ = no_decisions(labels)
        relabelled = corr > 0.5  # the mixed target crossed 1/2 (never for λ > 1/2)
        stats = {"correction_mean": (sums[2] / sums[1].clamp_min(1)).float()}
        self.track_truth(batch, labels, bce_per_sample(logits.detach(), labels), corr)
        return LossOutput(loss, value, ones, target.detach(), dropped, relabelled, stats)


class HardBootstrap(SoftBootstrap):
    """Hard bootstrapping: ``y* = λ·y + (1 − λ)·1[p > 0.5]`` (LCD Eq. 2 with the arg-max belief).

    Args:
        lam: weight ``λ`` of the observed label.
    """

    name = "bootstrap_hard"
    GRID = {"lam": [0.6, 0.7, 0.8, 0.9]}

    def __init__(self, lam: float = 0.8, process_group: Optional[ProcessGroup] = None) -> None:
        super().__init__(lam=lam, attach_target=False, process_group=process_group)

    def hparams(self) -> Dict[str, Any]:
        """``{lam}``."""
        return {"lam": self.lam}

    def belief(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B]`` hard belief ``1[σ(z) > 0.5]`` (detached, the logits' dtype)."""
        return (logits.detach() > 0).to(logits.dtype)  # p > 0.5 ⟺ z > 0

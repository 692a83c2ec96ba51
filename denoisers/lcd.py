"""LCD: Adaptive Label Correction for Denoising (Wang et al., CIKM 2022), and its reverse LCD-Re.

Each sample's BCE against its observed label is min/max-normalised over the **global** batch (LCD Eq. 4)::

    t = (ℓ − ℓ_min) / (ℓ_max − ℓ_min)        (t = 0 when ℓ_max = ℓ_min)
    ω = F(t; α_B, β_B)                        (the Beta(α_B, β_B) CDF; α_B = β_B = 1 gives ω = t)

and the target is corrected towards the model's own prediction ``p = σ(z)`` (LCD Eq. 3)::

    LCD:     y* = ω·y + (1 − ω)·p
    LCD-Re:  y* = (1 − ω)·y + ω·p              (LCD §3.3.1 ablation; the DART thesis found it better)

``y*`` is a constant (detached) and the loss is the mean ``BCE(p, y*)`` over the global batch. Correction
starts at global step ``start_step`` (the paper applies it from epoch 20 of 25 and finds a late start
best); before that the loss is plain BCE.

Cost per step: one MAX all-reduce (``[−ℓ_min, ℓ_max]``) and one SUM all-reduce (loss, batch size and the
ω / correction sums of the stats together). Before ``start_step``: one SUM all-reduce, as BCE.

Example::

    lcd = LCD(alpha_b=1.0, beta_b=1.0)           # ω = t
    out = lcd(torch.tensor([0.0, 2.0, -2.0]), torch.tensor([1.0, 1.0, 1.0]))
    out.target  # the largest-loss sample (z = −2) keeps y* = y = 1, the smallest (z = 2) gets y* = p
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch.distributed import ProcessGroup

from denoisrec.denoisers import collectives as C
from denoisrec.denoisers.base import Denoiser, LossOutput, bce_per_sample, soft_bce
from denoisrec.denoisers.batch import DenoiserBatch
from denoisrec.denoisers.beta_cdf import BetaCDF


class LCD(Denoiser):
    """LCD: ``y* = ω·y + (1 − ω)·p`` with ``ω`` the Beta CDF of the normalised loss (LCD Eq. 3-4).

    Args:
        alpha_b, beta_b: the Beta distribution's shape (grid (0.5, 0.5), (1, 1), (2, 2); the paper finds
            (1, 1) usually inferior).
        start_step: global step from which the correction applies (BCE before).
    """

    name = "lcd"
    GRID = {"alpha_b": [0.5, 1.0, 2.0], "beta_b": [0.5, 1.0, 2.0]}  # the paper tunes α_B = β_B
    positives_only = False
    reverse = False

    def __init__(
        self,
        alpha_b: float = 2.0,
        beta_b: float = 2.0,
        start_step: int = 0,
        process_group: Optional[ProcessGroup] = None,
    ) -> None:
        super().__init__(process_group)
        if start_step < 0:
            raise ValueError(f"{self.name} option start_step={start_step}: must be >= 0")
        for opt, shape in (("alpha_b", alpha_b), ("beta_b", beta_b)):
            if not shape > 0:
                raise ValueError(f"{self.name} option {opt}={shape}: must be > 0 (a Beta CDF shape)")
        self.cdf = BetaCDF(alpha_b, beta_b)
        self.start_step = int(start_step)

    def hparams(self) -> Dict[str, Any]:
        """``{alpha_b, beta_b, start_step}``."""
        return {"alpha_b": self.cdf.alpha, "beta_b": self.cdf.beta, "start_step": self.start_step}

    def weight_of(self, ell: torch.Tensor) -> torch.Tensor:
        """``[B]`` float64 ``ω = F(t)``, ``t`` the loss min/max-normalised over the global batch.

        Float64 throughout, detached: the largest loss gets ``t = 1`` and ``ω = 1`` exactly, the smallest ``t = 0``.
        """
        # All in float64, the span included: a float32 span rounds differently from the float64 numerator,
        # so the largest loss would get t = 1 − 1e-7 and, where F is steep at 1 (β_B < 1), ω ≈ 1 − 1e-4.
        ell64 = ell.detach().to(torch.float64)
        mm = C.global_min_max(ell64, group=self.process_group)
        lo, span = mm[0], mm[1] - mm[0]
        t = (ell64 - lo) / span.clamp_min(1e-300)
        t = torch.where(span > 0, t, torch.zeros_like(t))
        return self.cdf(t)

    def corrected_target(self, labels: torch.Tensor, p: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        """``[B]`` float64 target: ``ω·y + (1 − ω)·p`` (LCD Eq. 3), or ``(1 − ω)·y + ω·p`` (reverse)."""
        y, p = labels.to(torch.float64), p.to(torch.float64)
        if self.reverse:
            return (1.0 - omega) * y + omega * p
        return omega * y + (1.0 - omega) * p

    def compute(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor],
        batch: Optional[DenoiserBatch],
    ) -> LossOutput:
        """LCD's loss (LCD Eq. 3-4): BCE against the corrected target from ``start_step`` on."""
        ell = bce_per_sample(logits, labels)
        ones = torch.ones_like(ell)
        no = torch.zeros_like(labels, dtype=torch.bool)
        if self.host_step < self.start_step:  # host-side schedule: the step mirror, no device sync
            loss, value, _ = self.global_mean(ell, ones, ones.sum())
            self.track_truth(batch, labels, ell, torch.zeros_like(ell))
            zero = value.new_zeros(())
            return LossOutput(
                loss,
                value,
                ones,
                labels.detach(),
                no,
                no.clone(),
                {"active": zero, "omega_mean": zero, "correction_mean": zero, "relabel_share": zero},
            )
        omega = self.weight_of(ell)
        p = torch.sigmoid(logits.detach())
        target = self.corrected_target(labels, p, omega).to(logits.dtype)
        corr = (target - labels).abs()
        relabelled = corr > 0.5  # the corrected target crossed 1/2: effectively a flipped label
        per = soft_bce(logits, target)
        # One all-reduce: [Σ BCE(p, y*), B, Σ ω, Σ |y* − y|, # relabelled].
        loss, value, sums = self.global_mean(per, ones, ones.sum(), extra=[omega.sum(), corr.sum(), relabelled.sum()])
        n = sums[1].clamp_min(1)
        stats = {
            "active": value.new_ones(()),
            "omega_mean": (sums[2] / n).float(),
            "correction_mean": (sums[3] / n).float(),
            "relabel_share": (sums[4] / n).float(),
        }
        self.track_truth(batch, labels, ell, corr)
        return LossOutput(loss, value, ones, target.detach(), no, relabelled, stats)


class LCDRe(LCD):
    """LCD-Re: ``y* = (1 − ω)·y + ω·p`` (LCD §3.3.1): large-loss samples move towards the prediction."""

    name = "lcd_re"
    reverse = True

"""ADT: Adaptive Denoising Training, the truncated loss T-CE and the reweighted loss R-CE.

Wang et al., "Denoising Implicit Feedback for Recommendation", WSDM 2021.

**T-CE** (ADT Eq. 2-3, Algorithm 1). Drop rate ``ε(T) = min(α·T, ε_max)`` with ``α = ε_max / num_gradual`` (the
reference code's linear ramp). ``num_gradual`` is steps, epochs (``"1ep"``, the default) or a share of the run
(``"30%"``; :mod:`~denoisrec.denoisers.span`): the paper's 30,000 steps never ramp up in a short run. At step ``T``
the ``⌊ε(T)·B⌋`` positives with the largest loss are dropped (``B`` counts the whole global batch, negatives
included; only positives are ever dropped, all of them when fewer exist), and the loss is the mean BCE over the kept
samples::

    L_T-CE = Σ_{i kept} ℓ_i / |kept|

**R-CE** (ADT Eq. 4-6). Each sample is weighted by the model's own confidence in its label,
``w_i = p_i^β`` if ``y_i = 1`` and ``(1 − p_i)^β`` if ``y_i = 0`` (a constant: detached), and::

    L_R-CE = (1/B) Σ_i w_i·ℓ_i        (β = 0 is plain BCE)

Both decide on the global batch; ties in the loss are broken by the sample id (see ``collectives``).

Example::

    tce = TruncatedBCE(eps_max=0.5, num_gradual=0)   # drop ⌊0.5·4⌋ = 2 positives from the first step
    out = tce(torch.tensor([-3.0, 0.0, 2.0, -1.0]), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    out.dropped  # tensor([True, True, False, False]): the two positives with the largest loss
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch.distributed import ProcessGroup

from denoisrec.denoisers import collectives as C
from denoisrec.denoisers.base import Denoiser, DenoiserNeeds, LossOutput, bce_per_sample, no_decisions
from denoisrec.denoisers.batch import DenoiserBatch
from denoisrec.denoisers.span import Span

# Absorbs float64 representation error in ⌊ε·B⌋ when ε·B is an integer on paper (e.g. 0.1·30).
_FLOOR_EPS = 1e-9


def floor_count(rate: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``⌊rate · n⌋`` as int64, computed in float64 on the tensors' device."""
    return torch.floor(rate.to(torch.float64) * n.to(torch.float64) + _FLOOR_EPS).to(torch.int64)


def share_of_batch(rate: torch.Tensor) -> C.KFn:
    """The select's ``k = ⌊rate · B⌋``, with the global batch size ``B`` all-reduced as its first extra."""

    def k(n_pos: torch.Tensor, extra: Optional[torch.Tensor]) -> torch.Tensor:
        assert extra is not None, "radix_select: the batch size travels as the first extra"
        return floor_count(rate, extra[0])

    return k


class TruncatedBCE(Denoiser):
    """ADT T-CE: drop the ``⌊ε(T)·B⌋`` largest-loss positives (ADT Eq. 2-3).

    Args:
        eps_max: the final drop rate ``ε_max`` (paper grid {0.05, 0.1, 0.2}; best in [0.1, 0.3]).
        num_gradual: length of the linear ramp of ``ε`` from 0 to ``ε_max``: steps (paper grid 1k-30k),
            epochs (``"1ep"``, the default: acts in any run of more than one epoch) or a share of the run
            (``"30%"``); 0 starts at ``ε_max``.
    """

    name = "tce"
    GRID = {"eps_max": [0.05, 0.1, 0.2], "num_gradual": [1000, 5000, 10000, 20000, 30000]}
    NEEDS = DenoiserNeeds(run_length=True)  # num_gradual in epochs or as a share of the run

    def __init__(
        self, eps_max: float = 0.2, num_gradual: Union[int, str] = "1ep", process_group: Optional[ProcessGroup] = None
    ) -> None:
        super().__init__(process_group)
        if not 0.0 <= eps_max < 1.0:  # 1 would drop every positive
            raise ValueError(f"tce option eps_max={eps_max}: must lie in [0, 1)")
        self.eps_max = float(eps_max)
        self.ramp = Span.parse("tce option num_gradual", num_gradual)
        self._hint: Optional[torch.Tensor] = None  # the select's last top digit (a guess, never a decision)

    @property
    def num_gradual(self) -> int:
        """The ramp in steps (resolved against the run length for epochs / shares)."""
        try:
            return self.ramp.steps(self.steps_per_epoch, self.total_steps)
        except ValueError as e:
            raise ValueError(f"tce option num_gradual={e}") from None

    def bind_run(self, steps_per_epoch: int, total_steps: int) -> List[str]:
        """Resolve ``num_gradual`` against the run; returns a warning if the ramp outlasts it."""
        super().bind_run(steps_per_epoch, total_steps)
        n = self.num_gradual
        if n > total_steps:
            reached = self.eps_max * total_steps / n
            return [
                f"tce option num_gradual={self.ramp} ({n} steps) is longer than the run ({total_steps} steps): "
                f"the drop rate reaches only {reached:.3g} (eps_max={self.eps_max}); give it in epochs "
                "('1ep') or as a share of the run ('30%')"
            ]
        return []

    def hparams(self) -> Dict[str, Any]:
        """``{eps_max, num_gradual}`` as given (a relative ramp as its text, e.g. ``0.5x``)."""
        return {
            "eps_max": self.eps_max,
            "num_gradual": int(self.ramp.value) if not self.ramp.relative else str(self.ramp),
        }

    def drop_rate(self, step: torch.Tensor) -> torch.Tensor:
        """``ε(T) = min(T · ε_max / num_gradual, ε_max)`` (float64)."""
        n = self.num_gradual
        if n == 0:
            return torch.full((), self.eps_max, dtype=torch.float64, device=step.device)
        ramp = step.to(torch.float64) * self.eps_max / n
        return ramp.clamp(max=self.eps_max)

    def compute(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor],
        batch: Optional[DenoiserBatch],
    ) -> LossOutput:
        """T-CE's loss (ADT Eq. 2-3), the largest-loss global positives dropped; ``[B]`` weights, masks."""
        ell = bce_per_sample(logits, labels)
        pos = labels > 0.5
        eps = self.drop_rate(self.step)
        keys = C.order_keys(ell, sample_ids)
        q = C.fixed_point(ell)
        local = torch.stack([torch.full((), labels.numel(), dtype=torch.int64, device=labels.device), q.sum()])
        # B and Σℓ travel in the select's first all-reduce; k = min(⌊ε·B⌋, |positives|) is formed on device;
        # the dropped positives' Σℓ comes out of the select's rounds: the select is the step's only collective.
        # The previous step's top digit as the hint: the k-th loss moves little between steps, so the
        # select usually decides in its first all-reduce (CPU; see collectives.radix_select).
        sel = C.radix_select(keys, pos, share_of_batch(eps), self.process_group, local, sums=q, hint=self._hint)
        self._hint = sel.top
        n, n_drop = sel.extra[0], sel.k[0]  # type: ignore[index]
        dropped = pos & (keys >= sel.thr[0])
        weight = (~dropped).to(ell.dtype)
        kept = (n - n_drop).to(torch.float64).clamp_min(1e-12)  # B − n_drop, global
        loss = self.scaled((weight * ell).sum(), kept)
        value = ((sel.extra[1] - sel.sums[0]).to(torch.float64) / C.FIXED_POINT / kept).to(ell.dtype)  # type: ignore
        value = C.keep_nonfinite(value, ell)  # the fixed-point sums cap NaN/inf; a diverged step must show
        stats = {
            "eps": eps.float(),
            "drop_share": n_drop.float() / n.clamp_min(1).float(),
            "dropped": n_drop.float(),
        }
        self.track_truth(batch, labels, ell, dropped.to(ell.dtype))
        return LossOutput(loss, value, weight, labels.detach(), dropped, torch.zeros_like(dropped), stats)


class ReweightedBCE(Denoiser):
    """ADT R-CE: weight each sample by ``p^β`` (positives) or ``(1 − p)^β`` (negatives) (ADT Eq. 4-6).

    Args:
        beta: the exponent ``β`` (grid {0.05, 0.1, ..., 0.25, 0.5, 1.0}; best 0.15-0.3; reference 0.2).
    """

    name = "rce"
    positives_only = False
    GRID = {"beta": [0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0]}

    def __init__(self, beta: float = 0.2, process_group: Optional[ProcessGroup] = None) -> None:
        super().__init__(process_group)
        if beta < 0:
            raise ValueError(f"rce option beta={beta}: must be >= 0")
        self.beta = float(beta)

    def hparams(self) -> Dict[str, Any]:
        """``{beta}``."""
        return {"beta": self.beta}

    def compute(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor],
        batch: Optional[DenoiserBatch],
    ) -> LossOutput:
        """R-CE's loss (ADT Eq. 4-6): BCE weighted by ``p^β`` or ``(1 − p)^β``; ``[B]`` weights."""
        ell = bce_per_sample(logits, labels)
        z = logits.detach()
        # p^β = exp(β·log σ(z)), (1 − p)^β = exp(β·log σ(−z)): stable for large |z|.
        log_conf = torch.where(labels > 0.5, F.logsigmoid(z), F.logsigmoid(-z))
        weight = torch.exp(self.beta * log_conf)
        # One all-reduce: [Σ w·ℓ, B, Σ w].
        loss, value, sums = self.global_mean(ell, weight, torch.ones_like(ell).sum(), extra=[weight.sum()])
        dropped, relabelled = no_decisions(labels)
        stats = {"mean_weight": (sums[2] / sums[1].clamp_min(1)).float()}
        self.track_truth(batch, labels, ell, 1.0 - weight)
        return LossOutput(loss, value, weight, labels.detach(), dropped, relabelled, stats)

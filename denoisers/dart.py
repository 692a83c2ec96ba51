"""DART: Discard And Relabel Training (thesis 2023, Eq. 3-7 and Algorithm 1).

"Resolving Training Biases via Data Discarding and Relabeling".

Identification rate (DART Eq. 3), a function of the global step ``T``::

    τ(T) = max(min((T − T_i) / T_m · τ_m, τ_m), 0)

``T_i`` and ``T_m`` are steps (the thesis: ``T_m`` = 20,000), epochs (``"1ep"``) or a share of the run
(``"30%"``; :mod:`~denoisrec.denoisers.span`). The default ``T_m = "1ep"`` ramps to ``τ_m`` over the first
epoch, so the method acts in a short run; a step-valued ramp longer than the run is warned about.

Among the observed positives of the **global** batch (Eq. 4), the ``⌊τ(T)·|positives|⌋`` with the largest
BCE are identified as false positives (Eq. 5; the thesis's reading: a share of the *positives*, not of the
whole batch as in the reference code). Of those, the top ``⌊r·|identified|⌋`` by loss are **relabelled**
to 0 (Eq. 6); the rest are **discarded** (Eq. 7). The loss is the mean BCE over the kept samples with the
relabelled targets::

    L = Σ_{i ∉ discarded} BCE(p_i, y'_i) / (B − |discarded|),   y'_i = 0 if i relabelled else y_i

Both thresholds come from ONE multi-k radix select (``k = [⌊τ·P⌋, ⌊r·⌊τ·P⌋⌋]``, formed on device from
the positives count of the select's first round); ties in the loss are broken by the sample id. Cost per step:
the select's all-reduces only (at most 6; on CPU it stops once a round decides, usually 2): the first
also carries the batch size and Σℓ, every round the per-bin loss sums, from which the loss value is read.

Example::

    dart = DART(t_i=0, t_m=0, tau_m=0.5, r=0.5)  # τ = 0.5 from the first step
    out = dart(torch.tensor([-3.0, -2.0, 1.0, 2.0, 0.0]), torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]))
    out.relabelled  # [True, False, False, False, False]: ⌊0.5·4⌋ = 2 identified, ⌊0.5·2⌋ = 1 relabelled
    out.dropped     # [False, True, False, False, False]: the other identified positive is discarded
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch.distributed import ProcessGroup

from denoisrec.denoisers import collectives as C
from denoisrec.denoisers.adt import floor_count
from denoisrec.denoisers.base import Denoiser, DenoiserNeeds, LossOutput, bce_per_sample
from denoisrec.denoisers.batch import DenoiserBatch
from denoisrec.denoisers.span import Span


class DART(Denoiser):
    """Identify the top ``τ(T)`` share of positives by loss; relabel the top ``r`` of them, discard the rest.

    Args:
        t_i: step ``T_i`` at which identification starts (grid {0, 1000, 2000, 4000}); steps, epochs
            (``"1ep"``) or a share of the run (``"10%"``).
        t_m: length ``T_m`` of the ramp of ``τ`` to ``τ_m`` (grid {5k, 10k, 20k, 40k} steps; default ``"1ep"``,
            one epoch); 0 jumps at ``T_i``.
        tau_m: the upper bound ``τ_m`` (grid {0.005, 0.01, 0.02, 0.04}).
        r: relabelled share of the identified set (grid {0, 0.25, 0.5, 0.75, 1}; 0 only discards).
    """

    name = "dart"
    GRID = {
        "t_i": [0, 1000, 2000, 4000],
        "t_m": [5000, 10000, 20000, 40000],
        "tau_m": [0.005, 0.01, 0.02, 0.04],
        "r": [0.0, 0.25, 0.5, 0.75, 1.0],
    }
    NEEDS = DenoiserNeeds(run_length=True)  # t_i, t_m in epochs or as a share of the run

    def __init__(
        self,
        t_i: Union[int, str] = 0,
        t_m: Union[int, str] = "1ep",
        tau_m: float = 0.04,
        r: float = 0.5,
        process_group: Optional[ProcessGroup] = None,
    ) -> None:
        super().__init__(process_group)
        self.start, self.ramp = Span.parse("dart option t_i", t_i), Span.parse("dart option t_m", t_m)
        if not 0.0 <= tau_m <= 1.0:
            raise ValueError(f"dart option tau_m={tau_m}: must lie in [0, 1]")
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"dart option r={r}: must lie in [0, 1]")
        self.tau_m, self.r = float(tau_m), float(r)
        self._hint: Optional[torch.Tensor] = None  # the select's last top digits (a guess, never a decision)

    def _steps(self, option: str, span: Span) -> int:
        try:
            return span.steps(self.steps_per_epoch, self.total_steps)
        except ValueError as e:
            raise ValueError(f"dart option {option}={e}") from None

    @property
    def t_i(self) -> int:
        """``T_i``: the warm-up before any relabelling, in steps."""
        return self._steps("t_i", self.start)

    @property
    def t_m(self) -> int:
        """``T_m``: the ramp of the relabel rate to ``τ_m``, in steps."""
        return self._steps("t_m", self.ramp)

    def bind_run(self, steps_per_epoch: int, total_steps: int) -> List[str]:
        """Resolve ``t_i``, ``t_m`` against the run; returns warnings if DART does not act within it."""
        super().bind_run(steps_per_epoch, total_steps)
        t_i, t_m = self.t_i, self.t_m
        where = (
            f"dart options t_i={self.start}, t_m={self.ramp} ({t_i} + {t_m} steps) against a run of {total_steps} steps"
        )
        if t_i >= total_steps:
            return [
                f"{where}: identification never starts; give them in epochs ('1ep') or as a share of the run ('30%')"
            ]
        if t_i + t_m > total_steps:
            reached = self.tau_m * min(1.0, (total_steps - t_i) / max(t_m, 1))
            return [
                f"{where}: tau reaches only {reached:.3g} (tau_m={self.tau_m}); give them in epochs ('1ep') "
                "or as a share of the run ('30%')"
            ]
        return []

    def hparams(self) -> Dict[str, Any]:
        """``{t_i, t_m, tau_m, r}`` (relative spans as their text)."""

        def show(span: Span) -> Any:
            return str(span) if span.relative else int(span.value)

        return {"t_i": show(self.start), "t_m": show(self.ramp), "tau_m": self.tau_m, "r": self.r}

    def rate(self, step: torch.Tensor) -> torch.Tensor:
        """``τ(T) = max(min((T − T_i)/T_m · τ_m, τ_m), 0)`` (float64, on the step's device)."""
        t_i, t_m = self.t_i, self.t_m
        t = step.to(torch.float64) - t_i
        if t_m == 0:
            return torch.where(t >= 0, torch.full_like(t, self.tau_m), torch.zeros_like(t))
        return (t / t_m * self.tau_m).clamp(min=0.0, max=self.tau_m)

    def compute(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor],
        batch: Optional[DenoiserBatch],
    ) -> LossOutput:
        """DART's loss (Eq. 4-7): top-loss global positives relabelled or dropped; ``[B]`` targets, masks."""
        ell = bce_per_sample(logits, labels)
        pos = labels > 0.5
        tau = self.rate(self.step)
        r = torch.full((), self.r, dtype=torch.float64, device=logits.device)

        def counts(n_pos: torch.Tensor, extra: Optional[torch.Tensor]) -> torch.Tensor:
            k_identified = floor_count(tau, n_pos)
            return torch.stack([k_identified, floor_count(r, k_identified)])

        keys = C.order_keys(ell, sample_ids)
        q, q0 = C.fixed_point(ell), C.fixed_point(F.softplus(logits.detach()))  # ℓ, and BCE against 0
        local = torch.stack([torch.full((), labels.numel(), dtype=torch.int64, device=labels.device), q.sum()])
        # One select gives both thresholds, B, Σℓ, the identified positives' Σℓ and the relabelled ones'
        # Σ BCE(p, 0): Σ_kept BCE(p, y') = Σℓ − Σ_identified ℓ + Σ_relabelled BCE(p, 0). No other collective.
        sel = C.radix_select(
            keys, pos, counts, self.process_group, local, sums=torch.stack([q, q0]), hint=self._hint
        )  # the last step's top digits: usually decides in one round
        self._hint = sel.top
        identified = pos & (keys >= sel.thr[0])
        relabelled = pos & (keys >= sel.thr[1])
        dropped = identified & ~relabelled
        target = torch.where(relabelled, torch.zeros_like(labels), labels)
        per = bce_per_sample(logits, target)
        weight = (~dropped).to(ell.dtype)
        k_id_i, k_rel_i = sel.k[0], sel.k[1]
        kept = (sel.extra[0] - (k_id_i - k_rel_i)).to(torch.float64).clamp_min(1e-12)  # type: ignore[index]
        loss = self.scaled((weight * per).sum(), kept)
        kept_sum = sel.extra[1] - sel.sums[0] + sel.sums[1]  # type: ignore[index]
        value = C.keep_nonfinite((kept_sum.to(torch.float64) / C.FIXED_POINT / kept).to(ell.dtype), ell)
        n = sel.extra[0].clamp_min(1).to(torch.float64)  # type: ignore[index]
        k_id, k_rel = k_id_i.to(torch.float64), k_rel_i.to(torch.float64)
        stats = {
            "tau": tau.float(),
            "identified_share": (k_id / n).float(),
            "relabel_share": (k_rel / n).float(),
            "drop_share": ((k_id - k_rel) / n).float(),
        }
        self.track_truth(batch, labels, ell, identified.to(ell.dtype))
        return LossOutput(loss, value, weight, target.detach(), dropped, relabelled, stats)

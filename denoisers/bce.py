"""Plain binary cross-entropy: the baseline every denoiser is measured against.

``L = (1/B) Σ_i ℓ_i`` with ``ℓ_i = BCE(σ(z_i), y_i)`` over the global batch of ``B`` samples
(PAPERS.md, "BCE (baseline)").

Example::

    out = BCE()(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert torch.isclose(out.value, torch.tensor(0.6931), atol=1e-4)  # log 2
"""

from __future__ import annotations

from typing import Optional

import torch

from denoisrec.denoisers.base import Denoiser, LossOutput, bce_per_sample, no_decisions
from denoisrec.denoisers.batch import DenoiserBatch


class BCE(Denoiser):
    """Mean BCE over the global batch; no sample is dropped, reweighted or relabelled."""

    name = "bce"

    def compute(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor],
        batch: Optional[DenoiserBatch],
    ) -> LossOutput:
        """The BCE mean over the global batch: ``[B]`` unit weights, no decisions."""
        ell = bce_per_sample(logits, labels)
        weight = torch.ones_like(ell)
        loss, value, _ = self.global_mean(ell, weight, weight.sum())  # one all-reduce: [Σℓ, B]
        dropped, relabelled = no_decisions(labels)
        self.track_truth(batch, labels, ell, torch.zeros_like(ell))
        return LossOutput(loss, value, weight, labels.detach(), dropped, relabelled, {})

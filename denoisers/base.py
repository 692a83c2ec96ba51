"""The denoising contract: ``(logits, labels, sample ids, batch) → LossOutput``.

A denoiser is an ``nn.Module`` whose only job is to turn a batch's logits and observed labels into a
scalar loss plus per-sample decisions. It

- decides on the **global** batch (statistics via :mod:`denoisrec.denoisers.collectives`), so any split of
  the same global batch over any number of ranks gives the same decisions and loss value;
- keeps its schedule state (the global step) in buffers, so it is checkpointed with the model;
- never reads ``clean_labels`` / ``is_noisy`` to decide; it may report against them;
- detaches the weights and corrected targets that the papers treat as constants.

**Gradient scaling.** Data-parallel training averages dense gradients over the ``W`` ranks. For a global
mean ``L = Σ_i w_i·ℓ_i / D`` (``D`` the global denominator) each rank backpropagates
``W · Σ_{i on rank} w_i·ℓ_i / D``; the average of these gradients is exactly ``∇L``, also for uneven
splits. (Model-parallel embedding shards receive the sum over ranks, TorchRec's convention.)

Example::

    d = BCE()
    out = d(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
    out.loss.backward()  # out.value == mean BCE; out.weight == [1, 1]; out.target == labels
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from denoisrec.denoisers import collectives as C


@dataclass
class LossOutput:
    """What a denoiser returns for one batch (``B`` = this rank's batch size).

    Attributes:
        loss: scalar to backpropagate on this rank (see "Gradient scaling" above).
        value: detached global loss, identical on every rank.
        weight: ``[B]`` detached per-sample weight in the global mean; 0 for dropped samples.
        target: ``[B]`` detached BCE target used for each sample (corrected or relabelled).
        dropped: ``[B]`` bool, samples discarded from the loss.
        relabelled: ``[B]`` bool, samples whose target was flipped or corrected.
        stats: detached global scalars (schedule values, shares of handled samples, ...).
    """

    loss: torch.Tensor
    value: torch.Tensor
    weight: torch.Tensor
    target: torch.Tensor
    dropped: torch.Tensor
    relabelled: torch.Tensor
    stats: Dict[str, torch.Tensor] = field(default_factory=dict)


def bce_per_sample(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``ℓ_i = −[y_i log σ(z_i) + (1 − y_i) log(1 − σ(z_i))]`` from logits (numerically stable)."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


class Denoiser(nn.Module):
    """Base class: holds the global step and the process group; subclasses implement :meth:`compute`.

    Args:
        process_group: the data-parallel group statistics are global over (default: the world).
    """

    name: ClassVar[str] = ""

    def __init__(self, process_group: Optional[Any] = None) -> None:
        super().__init__()
        self.process_group = process_group
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor] = None,
        batch: Optional[Any] = None,
    ) -> LossOutput:
        """Loss for one batch at the current global step; advances the step in training mode.

        Args:
            logits: ``[B]`` model outputs before the sigmoid.
            labels: ``[B]`` observed 0/1 labels.
            sample_ids: ``[B]`` stable per-sample keys (deterministic tie-breaking across ranks).
            batch: the whole batch, for denoisers that read features (DeCA) or report diagnostics.
        """
        out = self.compute(logits, labels.to(logits.dtype), sample_ids, batch)
        if self.training:
            self.step.add_(1)
        return out

    def compute(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor],
        batch: Optional[Any],
    ) -> LossOutput:
        raise NotImplementedError

    def global_mean(
        self, per_sample: torch.Tensor, weight: torch.Tensor, denominator: torch.Tensor
    ) -> "tuple[torch.Tensor, torch.Tensor]":
        """``(loss_to_backprop, value)`` for ``Σ weight·per_sample / denominator`` over the global batch.

        ``denominator`` must already be global (and is clamped to at least 1e-12 so an empty global batch
        gives 0, not NaN).
        """
        local = (weight.detach() * per_sample).sum()
        denom = denominator.detach().to(local.dtype).clamp_min(1e-12)
        w = C.world_size(self.process_group)
        value = C.global_sum(local.detach(), self.process_group) / denom
        return local * (w / denom), value

    def global_batch_size(self, labels: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor]":
        """``(B, P)``: global numbers of samples and of observed positives, in one all-reduce."""
        counts = torch.stack([
            torch.tensor(labels.numel(), dtype=torch.int64, device=labels.device),
            (labels > 0.5).sum(dtype=torch.int64),
        ])
        counts = C.global_sum(counts, self.process_group)
        return counts[0], counts[1]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items())

    def hparams(self) -> Dict[str, Any]:
        return {}


def no_decisions(labels: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor]":
    """All-false ``dropped`` and ``relabelled`` masks."""
    z = torch.zeros_like(labels, dtype=torch.bool)
    return z, z.clone()

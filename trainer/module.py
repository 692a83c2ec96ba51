"""``TrainModule``: model and denoiser in one forward, the unit ``DistributedModelParallel`` shards.

TorchRec's ``DLRMTrain`` idiom: ``forward(batch)`` returns ``(loss, outputs)`` so that
``TrainPipelineSparseDist`` can overlap input distribution with compute. Putting the denoiser inside the
module also puts its auxiliary embedding tables (DeCA) under the planner's control; they are folded into the
model's own collection (:mod:`~denoisrec.trainer.distributed.shared_lookup`), so one sharded lookup serves both.

Shapes: ``batch`` as :class:`denoisrec.trainer.data.batch.Batch` → ``loss`` scalar and
``(value, logits [B], LossOutput | None)``.

Example::

    module = TrainModule(model, build_denoiser("tce", num_gradual=1000))
    loss, (value, logits, out) = module(batch)  # the step (trainer/loop/steps.py) runs backward on ``loss``
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from denoisrec.denoisers import Denoiser, LossOutput
from denoisrec.trainer.distributed.sharding import unwrap
from denoisrec.trainer.distributed.shared_lookup import fold_denoiser_tables


class TrainModule(nn.Module):
    """Args: ``model`` maps ``(dense, KJT) → logits [B, 1]``; ``denoiser`` turns logits into the loss."""

    def __init__(self, model: nn.Module, denoiser: Denoiser) -> None:
        super().__init__()
        self.model = model
        self.denoiser = denoiser
        # The denoiser's own tables (DeCA's MFs, the observation model's tower; needs.shared_tables) live in the
        # model's collection: one sharded lookup (trainer/distributed/shared_lookup.py).
        self.shared_lookup = fold_denoiser_tables(model, denoiser)
        if self.shared_lookup is not None:  # every call of the model (also outside this forward) feeds them
            model.register_forward_pre_hook(self.shared_lookup.pre_hook)

    def forward(self, batch: Any) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, Optional[LossOutput]]]:
        # float32 logits for the loss, also under bf16/fp16 autocast
        logits = self.model(batch.dense_features, batch.sparse_features).squeeze(-1).float()
        if self.training:
            out = self.denoiser(logits, batch.labels, batch.sample_ids, batch)
            return out.loss, (out.value, logits.detach(), out)
        # Evaluation: the plain BCE sum on this rank's share (the caller normalises globally).
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels.to(logits.dtype), reduction="sum")
        return loss.detach(), (loss.detach(), logits.detach(), None)


def denoiser_of(model: nn.Module) -> Denoiser:
    """The denoiser of a :class:`TrainModule`, wrapped in DMP or not."""
    denoiser = unwrap(model).denoiser
    assert isinstance(denoiser, Denoiser), f"{type(unwrap(model)).__name__}.denoiser is not a Denoiser"
    return denoiser

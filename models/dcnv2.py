"""DCN-V2 (Wang et al., 2021): a cross network over the embeddings and dense features, with a DNN.

``x0 = [dense ; e_1 ; … ; e_F]`` (``N = n_dense + Σ D_f``). The cross network (TorchRec's ``CrossNet`` for
full rank, ``x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l``, or ``LowRankCrossNet`` with ``W_l = U_l V_l`` of rank
``r``) and the DNN are combined

- **stacked**: ``logit = Linear(DNN(Cross(x0)))``;
- **parallel**: ``logit = Linear([Cross(x0) ; DNN(x0)])``.

Dense features enter the cross network as they are (no bottom MLP), so data without dense features works.

Shapes: ``dense_features [B, n_dense]`` (``n_dense ≥ 0``), KJT with ``F`` keys → logits ``[B, 1]``.

Example::

    ebc = embedding_bag_collection([("user_id", 100), ("item_id", 50)], 8, device=torch.device("cpu"))
    model = DCNv2(ebc, dense_in_features=4, cross_layers=2, low_rank=4, structure="parallel", mlp=[32])
    kjt = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id"], torch.tensor([1, 2, 3, 4]),
                                              torch.tensor([1, 1, 1, 1]))
    model(torch.randn(2, 4), kjt).shape  # torch.Size([2, 1])
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet

from denoisrec.models.embeddings import feature_names, feature_specs, ordered_values
from denoisrec.models.layers import check_sizes
from denoisrec.models.layers import mlp as make_mlp

STRUCTURES = ("stacked", "parallel")


class DCNv2(nn.Module):
    """DCN-V2 over ``ebc`` (see module docstring).

    Args:
        ebc: the sparse arch (tables may differ in width).
        dense_in_features: number of dense features (may be 0).
        cross_layers: number of cross layers.
        low_rank: rank ``r`` of each cross matrix; ``None`` for full rank (``N × N``).
        structure: ``stacked`` or ``parallel``.
        mlp: hidden sizes of the DNN (may be empty: cross network only).
        dropout: dropout after each DNN activation.
    """

    def __init__(
        self,
        ebc: EmbeddingBagCollection,
        dense_in_features: int,
        cross_layers: int = 3,
        low_rank: Optional[int] = None,
        structure: str = "stacked",
        mlp: Sequence[int] = (128, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if structure not in STRUCTURES:
            raise ValueError(f"model option structure={structure!r}: expected one of {STRUCTURES}")
        if cross_layers < 1:
            raise ValueError(f"model option cross_layers={cross_layers}: must be >= 1")
        if low_rank is not None and low_rank < 1:
            raise ValueError(f"model option low_rank={low_rank}: must be >= 1, or null for full rank")
        hidden = check_sizes("mlp", mlp)
        self.sparse_arch = ebc
        self.features = feature_names(ebc)
        self.structure = structure
        width = dense_in_features + sum(d for _, _, d in feature_specs(ebc))
        self.cross: nn.Module = (
            CrossNet(width, cross_layers) if low_rank is None else LowRankCrossNet(width, cross_layers, low_rank)
        )
        self.deep: Optional[nn.Module] = make_mlp(width, hidden, dropout) if hidden else None
        out_in = (hidden[-1] if hidden else width) if structure == "stacked" else width + (hidden[-1] if hidden else 0)
        self.logit = nn.Linear(out_in, 1)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, 1]`` logits: the cross network, stacked or parallel with the deep network."""
        x0 = torch.cat([dense_features, ordered_values(self.sparse_arch(sparse_features), self.features)], dim=1)
        if self.structure == "stacked":
            h = self.cross(x0)
            if self.deep is not None:
                h = self.deep(h)
        else:
            parts = [self.cross(x0)]
            if self.deep is not None:
                parts.append(self.deep(x0))
            h = torch.cat(parts, dim=1)
        return self.logit(h)

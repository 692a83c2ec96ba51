"""Wide & Deep (Cheng et al., 2016): a linear model and a DNN, trained jointly.

``logit = wide(x) + DNN([dense ; e_1 ; … ; e_F])``. The wide part is
:class:`~denoisrec.models.layers.FirstOrder`: a bias, a weight per sparse id and a weight per dense feature.
The sparse ids' weights live in their own sharded tables (``first_order="table"``, the default) or in the
embedding tables' last 4 columns (``"fused"``, one lookup for both, :mod:`denoisrec.models.first_order`). The paper's
hand-made cross-product features enter the same way when the dataset carries them as extra sparse columns.
Dense features enter the DNN as they are, so data without dense features works.

Shapes: ``dense_features [B, n_dense]`` (``n_dense ≥ 0``), KJT with ``F`` keys → logits ``[B, 1]``.

Example::

    ebc = embedding_bag_collection([("user_id", 100), ("item_id", 50)], 8, device=torch.device("cpu"))
    model = WideDeep(ebc, dense_in_features=4, mlp=[32, 16], dropout=0.1)
    kjt = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id"], torch.tensor([1, 2, 3, 4]),
                                              torch.tensor([1, 1, 1, 1]))
    model(torch.randn(2, 4), kjt).shape  # torch.Size([2, 1])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

from denoisrec.models.embeddings import feature_names, feature_specs, ordered_values
from denoisrec.models.first_order import check_layout, fused_collection
from denoisrec.models.layers import FirstOrder, check_sizes
from denoisrec.models.layers import mlp as make_mlp


class WideDeep(nn.Module):
    """Wide & Deep over ``ebc`` (see module docstring).

    Args:
        ebc: the sparse arch (tables may differ in width).
        dense_in_features: number of dense features (may be 0).
        mlp: hidden sizes of the DNN (a final layer of one unit is appended).
        dropout: dropout after each hidden activation of the DNN.
        first_order: ``"table"`` (the wide weights in their own tables) or ``"fused"`` (in the embedding tables,
            each widened by 4).
    """

    def __init__(
        self,
        ebc: EmbeddingBagCollection,
        dense_in_features: int,
        mlp: Sequence[int] = (128, 64),
        dropout: float = 0.0,
        first_order: str = "table",
    ) -> None:
        super().__init__()
        hidden = check_sizes("mlp", mlp)
        self.fused = check_layout(first_order)
        self.sparse_arch = fused_collection(ebc) if self.fused else ebc
        self.features = feature_names(ebc)
        self.dims = [d for _, _, d in feature_specs(ebc)]
        self.wide = FirstOrder(ebc, dense_in_features, fused=self.fused)
        width = dense_in_features + sum(self.dims)
        self.deep = nn.Sequential(make_mlp(width, hidden, dropout), nn.Linear(hidden[-1] if hidden else width, 1))

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, 1]`` logits: the wide (first-order) part plus the deep network."""
        pooled = self.sparse_arch(sparse_features)
        if not self.fused:
            x = torch.cat([dense_features, ordered_values(pooled, self.features)], dim=1)
            return self.wide(dense_features, sparse_features) + self.deep(x)
        by_name = pooled.to_dict()  # each [B, D_f + 4]: the embedding, then the first-order row
        x = torch.cat([dense_features] + [by_name[f][:, :d] for f, d in zip(self.features, self.dims)], dim=1)
        rows = torch.stack([by_name[f][:, d:] for f, d in zip(self.features, self.dims)], dim=1)  # [B, F, 4]
        return self.wide.combine(dense_features, rows.mean(dim=2).sum(dim=1, keepdim=True)) + self.deep(x)

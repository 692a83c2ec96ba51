"""Wide & Deep (Cheng et al., 2016): a linear model and a DNN, trained jointly.

``logit = wide(x) + DNN([dense ; e_1 ; … ; e_F])``. The wide part is
:class:`~denoisrec.models.layers.FirstOrder`: a bias, a weight per sparse id (its own sharded tables) and a
weight per dense feature. The paper's hand-made cross-product features enter the same way when the dataset
carries them as extra sparse columns. Dense features enter the DNN as they are, so data without dense
features works.

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
from denoisrec.models.layers import FirstOrder, check_sizes
from denoisrec.models.layers import mlp as make_mlp


class WideDeep(nn.Module):
    """Wide & Deep over ``ebc`` (see module docstring).

    Args:
        ebc: the sparse arch (tables may differ in width).
        dense_in_features: number of dense features (may be 0).
        mlp: hidden sizes of the DNN (a final layer of one unit is appended).
        dropout: dropout after each hidden activation of the DNN.
    """

    def __init__(
        self, ebc: EmbeddingBagCollection, dense_in_features: int, mlp: Sequence[int] = (128, 64), dropout: float = 0.0
    ) -> None:
        super().__init__()
        hidden = check_sizes("mlp", mlp)
        self.sparse_arch = ebc
        self.features = feature_names(ebc)
        self.wide = FirstOrder(ebc, dense_in_features)
        width = dense_in_features + sum(d for _, _, d in feature_specs(ebc))
        self.deep = nn.Sequential(make_mlp(width, hidden, dropout), nn.Linear(hidden[-1] if hidden else width, 1))

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, 1]`` logits: the wide (first-order) part plus the deep network."""
        x = torch.cat([dense_features, ordered_values(self.sparse_arch(sparse_features), self.features)], dim=1)
        return self.wide(dense_features, sparse_features) + self.deep(x)

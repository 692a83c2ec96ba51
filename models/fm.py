"""FM: the factorization machine (Rendle, 2010) over the shared embeddings.

``logit = b + Σ_f w_f[id_f] + Σ_j u_j x_j + Σ_{i<j} <v_i, v_j>`` where the fields ``v`` are the pooled
sparse embeddings (one per feature) and the dense features as fields ``x_j · v_j``. The first-order weights
``w`` live in their own sharded tables (``first_order="table"``, the default,
:class:`~denoisrec.models.layers.FirstOrder`) or in the embedding tables' last 4 columns (``"fused"``, one lookup
for both: see :mod:`denoisrec.models.first_order`).

Shapes: ``dense_features [B, n_dense]`` (``n_dense ≥ 0``), KJT with ``F`` keys → logits ``[B, 1]``.

Example::

    ebc = embedding_bag_collection([("user_id", 100), ("item_id", 50)], 8, device=torch.device("cpu"))
    model = FM(ebc, dense_in_features=0)
    kjt = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id"], torch.tensor([1, 2, 3, 4]),
                                              torch.tensor([1, 1, 1, 1]))
    model(torch.zeros(2, 0), kjt).shape  # torch.Size([2, 1])
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

from denoisrec.models.embeddings import common_width, feature_names, stacked_fields
from denoisrec.models.first_order import check_layout, fused_collection, split_fields
from denoisrec.models.layers import DenseFields, FirstOrder, FMInteraction


class FM(nn.Module):
    """Factorization machine over ``ebc`` (see module docstring).

    Args:
        ebc: the sparse arch; all tables of one width ``D``.
        dense_in_features: number of dense features (may be 0).
        first_order: ``"table"`` (the first-order rows in their own tables) or ``"fused"`` (in ``ebc``'s
            tables, widened to ``D + 4``).
    """

    # Default table initialisation (uniform ±0.01) when built from a ModelSpec: the pairwise term sums
    # F(F−1)/2 dot products, so TorchRec's ±sqrt(1/n) on small tables starts with logits of several units.
    EMBEDDING_INIT = 0.01

    def __init__(self, ebc: EmbeddingBagCollection, dense_in_features: int, first_order: str = "table") -> None:
        super().__init__()
        self.dim = common_width(ebc, "fm")
        self.fused = check_layout(first_order)
        self.sparse_arch = fused_collection(ebc) if self.fused else ebc
        self.features = feature_names(ebc)
        self.first_order = FirstOrder(ebc, dense_in_features, fused=self.fused)
        self.dense_fields: Optional[DenseFields] = (
            DenseFields(dense_in_features, self.dim) if dense_in_features else None
        )
        self.interaction = FMInteraction()

    def lookup(
        self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(fields [B, F (+ n_dense), D], first-order term [B, 1])``: the sparse fields, then the dense ones."""
        pooled = stacked_fields(self.sparse_arch(sparse_features), self.features)  # [B, F, D (+ 4)]
        if self.fused:
            fields, weights = split_fields(pooled, self.dim)
            first = self.first_order.combine(dense_features, weights)
        else:
            fields, first = pooled, self.first_order(dense_features, sparse_features)
        if self.dense_fields is not None:
            fields = torch.cat([fields, self.dense_fields(dense_features)], dim=1)
        return fields, first

    def fields(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, F (+ n_dense), D]``: the sparse fields, then the dense ones."""
        return self.lookup(dense_features, sparse_features)[0]

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, 1]`` logits: first-order term plus the pairwise interaction of the fields."""
        fields, first = self.lookup(dense_features, sparse_features)
        return first + self.interaction(fields)

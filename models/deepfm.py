"""DeepFM (Guo et al., 2017): an FM and a DNN over the same embeddings.

``logit = FM(x) + DNN([v_1 ; … ; v_n])`` with the FM of :mod:`denoisrec.models.fm` (bias, first-order and
pairwise terms) and the DNN TorchRec's ``torchrec.modules.deepfm.DeepFM`` (flatten the fields, then an MLP
ending in one unit). Dense features are FM fields ``x_j · v_j`` for both parts, so data without dense
features works. ``first_order="fused"`` puts the first-order weights in the embeddings' lookup
(:mod:`denoisrec.models.first_order`).

Shapes: ``dense_features [B, n_dense]`` (``n_dense ≥ 0``), KJT with ``F`` keys → logits ``[B, 1]``.

Example::

    ebc = embedding_bag_collection([("user_id", 100), ("item_id", 50)], 16, device=torch.device("cpu"))
    model = DeepFM(ebc, dense_in_features=4, mlp=[16, 16], dropout=0.2)   # the DART thesis' DeepFM
    kjt = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id"], torch.tensor([1, 2, 3, 4]),
                                              torch.tensor([1, 1, 1, 1]))
    model(torch.randn(2, 4), kjt).shape  # torch.Size([2, 1])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor
from torchrec.modules.deepfm import DeepFM as TorchRecDeepFM

from denoisrec.models.embeddings import common_width
from denoisrec.models.fm import FM
from denoisrec.models.layers import check_sizes
from denoisrec.models.layers import mlp as make_mlp


class DeepFM(nn.Module):
    """DeepFM over ``ebc`` (see module docstring).

    Args:
        ebc: the sparse arch; all tables of one width ``D``.
        dense_in_features: number of dense features (may be 0).
        mlp: hidden sizes of the DNN (a final layer of one unit is appended).
        dropout: dropout after each hidden activation of the DNN.
        first_order: where the FM's first-order weights live (see :class:`~denoisrec.models.fm.FM`).
    """

    EMBEDDING_INIT = FM.EMBEDDING_INIT  # see FM

    def __init__(
        self,
        ebc: EmbeddingBagCollection,
        dense_in_features: int,
        mlp: Sequence[int] = (128, 64),
        dropout: float = 0.0,
        first_order: str = "table",
    ) -> None:
        super().__init__()
        dim = common_width(ebc, "deepfm")
        hidden = check_sizes("mlp", mlp)
        self.fm = FM(ebc, dense_in_features, first_order)
        num_fields = len(ebc.embedding_bag_configs()) + dense_in_features
        self.deep = TorchRecDeepFM(
            dense_module=nn.Sequential(
                make_mlp(num_fields * dim, hidden, dropout), nn.Linear(hidden[-1] if hidden else num_fields * dim, 1)
            )
        )

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, 1]`` logits: FM's first-order and pairwise terms plus the deep network."""
        fields, first = self.fm.lookup(dense_features, sparse_features)
        return first + self.fm.interaction(fields) + self.deep([fields])

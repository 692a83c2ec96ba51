"""DLRM (Naumov et al., 2019): TorchRec's ``torchrec.models.dlrm.DLRM``, configured for denoisrec.

Dense features go through a bottom MLP to the embedding width; the pooled embeddings and the dense
projection interact by pairwise dot products; a top MLP maps them to one logit.

Shapes: ``dense_features [B, n_dense]``, ``sparse_features`` a KJT with ``F`` keys → logits ``[B, 1]``.

Example::

    ebc = embedding_bag_collection([("user_id", 100), ("item_id", 50)], 8, device=torch.device("cpu"))
    model = dlrm(ebc, dense_in_features=4, dense_arch=[16], over_arch=[32, 1])
    kjt = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id"], torch.tensor([1, 2, 3, 4]),
                                              torch.tensor([1, 1, 1, 1]))
    model(torch.randn(2, 4), kjt).shape  # torch.Size([2, 1])
"""

from __future__ import annotations

from typing import List, Sequence

from torchrec import EmbeddingBagCollection
from torchrec.models.dlrm import DLRM


def dlrm(
    ebc: EmbeddingBagCollection,
    dense_in_features: int,
    dense_arch: Sequence[int] = (64,),
    over_arch: Sequence[int] = (128, 64, 1),
) -> DLRM:
    """Build a DLRM over ``ebc``.

    Args:
        ebc: the sparse arch; all tables of one width ``D``.
        dense_in_features: number of dense features (at least 1).
        dense_arch: hidden sizes of the bottom MLP; a final layer of width ``D`` is appended if missing.
        over_arch: sizes of the top MLP; must end with 1.
    """
    dim = ebc.embedding_bag_configs()[0].embedding_dim
    bottom: List[int] = list(dense_arch)
    if not bottom or bottom[-1] != dim:
        bottom.append(dim)
    top = list(over_arch)
    if not top or top[-1] != 1:
        raise ValueError(f"model option over_arch={top}: the top MLP must end with 1 (one logit)")
    if dense_in_features < 1:
        raise ValueError("dlrm needs at least one dense feature (dense_in_features >= 1)")
    return DLRM(
        embedding_bag_collection=ebc,
        dense_in_features=dense_in_features,
        dense_arch_layer_sizes=bottom,
        over_arch_layer_sizes=top,
    )

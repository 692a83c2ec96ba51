"""DLRM (Naumov et al., 2019): TorchRec's ``torchrec.models.dlrm.DLRM``, configured for denoisrec.

Dense features go through a bottom MLP to the embedding width; the pooled embeddings and the dense
projection interact by pairwise dot products; a top MLP maps them to one logit. DLRM needs at least one
dense feature (its dot interaction includes the dense projection): data without dense features (MovieLens,
ModCloth) is an error that names the models that accept it.

Shapes: ``dense_features [B, n_dense]`` (``n_dense ≥ 1``), ``sparse_features`` a KJT with ``F`` keys →
logits ``[B, 1]``.

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

from denoisrec.models.embeddings import common_width
from denoisrec.models.layers import check_sizes


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
    if dense_in_features < 1:
        raise ValueError(
            "model 'dlrm' needs at least one dense feature, and the data's schema lists none "
            '("dense": []); use dcnv2, deepfm, fm or widedeep, which accept data without dense '
            "features"
        )
    dim = common_width(ebc, "dlrm")
    bottom: List[int] = check_sizes("dense_arch", dense_arch)
    if not bottom or bottom[-1] != dim:
        bottom.append(dim)
    top = check_sizes("over_arch", over_arch)
    if not top or top[-1] != 1:
        raise ValueError(f"model option over_arch={top}: the top MLP must end with 1 (one logit)")
    return DLRM(
        embedding_bag_collection=ebc,
        dense_in_features=dense_in_features,
        dense_arch_layer_sizes=bottom,
        over_arch_layer_sizes=top,
    )

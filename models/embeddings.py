"""The sparse arch shared by every model: one ``EmbeddingBagCollection`` table per sparse feature.

Tables are created on the ``meta`` device by default: ``DistributedModelParallel`` materialises each shard
on the rank that owns it, so a table never has to fit on one process before sharding.

Example::

    ebc = embedding_bag_collection([("user_id", 1000), ("item_id", 500)], embedding_dim=16,
                                   device=torch.device("cpu"))
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["user_id", "item_id"],
                                              values=torch.tensor([1, 2, 3, 4]),
                                              lengths=torch.tensor([1, 1, 1, 1]))
    ebc(kjt).values().shape  # torch.Size([2, 32]): B=2 rows, 2 features × 16
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType


def table_name(feature: str, prefix: str = "t_") -> str:
    return f"{prefix}{feature}"


def embedding_bag_collection(
    features: Sequence[Tuple[str, int]],
    embedding_dim: int,
    device: Optional[torch.device] = None,
    pooling: PoolingType = PoolingType.SUM,
    prefix: str = "t_",
) -> EmbeddingBagCollection:
    """One table per ``(feature name, num_embeddings)``, all of width ``embedding_dim``.

    Args:
        features: sparse features in KJT key order.
        embedding_dim: width of every table (DLRM's dot interaction needs one width).
        device: where to allocate (``meta`` by default: DMP materialises the shards).
        pooling: how a multi-hot bag is pooled (SUM, as TorchRec's DLRM).
        prefix: table-name prefix (auxiliary models use their own so table names never collide).
    """
    tables = [
        EmbeddingBagConfig(
            name=table_name(name, prefix),
            embedding_dim=embedding_dim,
            num_embeddings=num,
            feature_names=[name],
            pooling=pooling,
        )
        for name, num in features
    ]
    return EmbeddingBagCollection(tables=tables, device=device or torch.device("meta"))

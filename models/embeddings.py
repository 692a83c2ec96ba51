"""The sparse arch shared by every model: one ``EmbeddingBagCollection`` table per sparse feature.

Tables are created on the ``meta`` device by default: ``DistributedModelParallel`` materialises each shard
on the rank that owns it, so a table never has to fit on one process before sharding.

Shapes: a ``KeyedJaggedTensor`` with ``F`` keys and stride ``B`` → a ``KeyedTensor`` of ``[B, D_1 + … + D_F]``.
Read it with :func:`ordered_values` (by feature name: a sharded collection groups its outputs by sharding)
or :func:`stacked_fields` (``[B, F, D]`` when every table has one width ``D``).

Example::

    ebc = embedding_bag_collection([("user_id", 1000), ("item_id", 500)], embedding_dim=16,
                                   device=torch.device("cpu"))
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["user_id", "item_id"],
                                              values=torch.tensor([1, 2, 3, 4]),
                                              lengths=torch.tensor([1, 1, 1, 1]))
    ordered_values(ebc(kjt), ["user_id", "item_id"]).shape  # torch.Size([2, 32]): B=2 rows, 2 features × 16
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Tuple

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedTensor, PoolingType

# FBGEMM's table-batched kernels (every sharding type, CPU and GPU) need row widths divisible by 4.
MIN_WIDTH = 4
# Table-name prefix of the first-order ("linear") tables of FM, DeepFM and Wide&Deep.
LINEAR_PREFIX = "w_"


def table_name(feature: str, prefix: str = "t_") -> str:
    """The table name of ``feature`` (``<prefix><feature>``)."""
    return f"{prefix}{feature}"


def embedding_bag_collection(
    features: Sequence[Tuple[str, int]],
    embedding_dim: int,
    device: Optional[torch.device] = None,
    pooling: PoolingType = PoolingType.SUM,
    prefix: str = "t_",
    dims: Optional[Mapping[str, int]] = None,
    init_range: Optional[Tuple[float, float]] = None,
) -> EmbeddingBagCollection:
    """One table per ``(feature name, num_embeddings)``, of width ``embedding_dim`` unless ``dims`` says.

    Args:
        features: sparse features in KJT key order.
        embedding_dim: width of every table (DLRM, FM and DeepFM need one width).
        device: where to allocate (``meta`` by default: DMP materialises the shards).
        pooling: how a multi-hot bag is pooled (SUM, as TorchRec's DLRM).
        prefix: table-name prefix (auxiliary models use their own so table names never collide).
        dims: per-feature widths overriding ``embedding_dim`` (each a multiple of 4).
        init_range: ``(min, max)`` of the uniform initialisation; TorchRec's default
            ``±sqrt(1/num_embeddings)`` when ``None``.
    """
    dims = dict(dims or {})
    unknown = set(dims) - {name for name, _ in features}
    if unknown:
        raise ValueError(
            f"model.tables: unknown sparse feature(s) {sorted(unknown)}; the data has {[name for name, _ in features]}"
        )
    tables = []
    for name, num in features:
        dim = int(dims.get(name, embedding_dim))
        if dim <= 0 or dim % MIN_WIDTH:
            raise ValueError(
                f"embedding width {dim} of feature {name!r}: must be a positive multiple of "
                f"{MIN_WIDTH} (FBGEMM's table-batched kernels need it)"
            )
        tables.append(
            EmbeddingBagConfig(
                name=table_name(name, prefix),
                embedding_dim=dim,
                num_embeddings=int(num),
                feature_names=[name],
                pooling=pooling,
                weight_init_min=None if init_range is None else init_range[0],
                weight_init_max=None if init_range is None else init_range[1],
            )
        )
    return EmbeddingBagCollection(tables=tables, device=device or torch.device("meta"))


def feature_specs(ebc: EmbeddingBagCollection) -> List[Tuple[str, int, int]]:
    """``(feature, num_embeddings, embedding_dim)`` of every table, in output order."""
    return [(f, c.num_embeddings, c.embedding_dim) for c in ebc.embedding_bag_configs() for f in c.feature_names]


def ebc_device(ebc: EmbeddingBagCollection) -> torch.device:
    """The device ``ebc`` was created on (``meta`` before sharding)."""
    for p in ebc.parameters():
        return p.device
    return torch.device("meta")


def common_width(ebc: EmbeddingBagCollection, model: str) -> int:
    """The one width of every table; a clear error when ``model`` needs it and the tables differ."""
    widths = {f: d for f, _, d in feature_specs(ebc)}
    if len(set(widths.values())) != 1:
        raise ValueError(
            f"model {model!r} needs one embedding width for every table, got {widths} "
            "(remove the per-table embedding_dim overrides in model.tables)"
        )
    return next(iter(widths.values()))


def model_prefix(ebc: EmbeddingBagCollection) -> str:
    """The model-level prefix of ``ebc``'s table names.

    ``""`` for ``t_<feature>``, ``"prior_"`` for ``prior_t_<feature>`` (a second copy of a model in the same job, e.g.
    DeCA(p)'s prior).
    """
    c = ebc.embedding_bag_configs()[0]
    full = c.name[: len(c.name) - len(c.feature_names[0])]
    return full[: -len("t_")] if full.endswith("t_") else full


def linear_bag_collection(ebc: EmbeddingBagCollection) -> EmbeddingBagCollection:
    """First-order weights ``w[id]`` of every feature of ``ebc``.

    Tables ``<prefix>w_<feature>`` of width 4 (``prefix`` as :func:`model_prefix` reads it from ``ebc``).

    FBGEMM's kernels need widths divisible by 4, so each id owns a row of 4 entries and its weight is their
    mean (see :class:`denoisrec.models.layers.FirstOrder`). The rows start at zero, so the four entries stay
    equal under any element-wise optimizer and the mean behaves as one scalar weight.
    """
    features = [(f, n) for f, n, _ in feature_specs(ebc)]
    return embedding_bag_collection(
        features, MIN_WIDTH, device=ebc_device(ebc), prefix=model_prefix(ebc) + LINEAR_PREFIX, init_range=(0.0, 0.0)
    )


def feature_names(ebc: EmbeddingBagCollection) -> List[str]:
    """The feature names of ``ebc``'s tables, in table order."""
    return [f for f, _, _ in feature_specs(ebc)]


def ordered_values(pooled: KeyedTensor, names: Sequence[str]) -> torch.Tensor:
    """``[B, Σ D_f]``: the pooled embeddings in the order of ``names``.

    A sharded collection returns its features grouped by sharding, not in the order of its tables, so
    models read them by name (as TorchRec's DLRM does).
    """
    # Already in that order (one process, a table-wise plan on one rank): no copy. Not while the training pipeline
    # traces the model (torch.fx): ``pooled`` is then a proxy, whose keys cannot decide a branch.
    if isinstance(pooled, KeyedTensor) and pooled.keys() == list(names):
        return pooled.values()
    by_name = pooled.to_dict()
    return torch.cat([by_name[n] for n in names], dim=1)


def stacked_fields(pooled: KeyedTensor, names: Sequence[str]) -> torch.Tensor:
    """``[B, F, D]`` fields of one width ``D``, in the order of ``names``."""
    values = ordered_values(pooled, names)
    return values.reshape(values.shape[0], len(names), -1)

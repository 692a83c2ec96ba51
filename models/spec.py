"""``ModelSpec``: everything needed to rebuild a model (name, tables, dense width, options), as plain data.

The trainer builds its model from a spec (tables on ``meta``, sharded by DMP), and an exported model file
stores the same spec, so one process can rebuild the unsharded model for inference or as a frozen prior.

Example::

    spec = ModelSpec("deepfm", features=[("user_id", 100), ("item_id", 50)], dense_in_features=0,
                     embedding_dim=8, params={"mlp": [16, 16]})
    model = spec.build(torch.device("cpu"))       # tables materialised on CPU
    ModelSpec.from_dict(spec.to_dict()) == spec    # True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from denoisrec.models.embeddings import embedding_bag_collection
from denoisrec.models.registry import MODELS, build_model


@dataclass
class ModelSpec:
    """What builds a model: its name, sparse features, dense inputs, widths and options.

    Args:
        name: a key of :data:`denoisrec.models.registry.MODELS`.
        features: ``(feature, num_embeddings)`` of every sparse feature, in KJT key order.
        dense_in_features: number of dense features (0 when the data has none).
        embedding_dim: default table width.
        dims: per-feature widths overriding ``embedding_dim``.
        params: the model's options (checked against its constructor).
        embedding_init: tables start uniform in ``[−a, a]``; ``None``: the model's default (its
            ``EMBEDDING_INIT`` attribute: 0.01 for FM and DeepFM, whose pairwise term grows with the square
            of the embeddings), else TorchRec's ``±sqrt(1/num_embeddings)``.
    """

    name: str
    features: List[Tuple[str, int]]
    dense_in_features: int
    embedding_dim: int = 16
    dims: Dict[str, int] = field(default_factory=dict)
    params: Dict[str, Any] = field(default_factory=dict)
    embedding_init: Optional[float] = None

    def init_range(self) -> Optional[Tuple[float, float]]:
        """``(−a, a)``: the tables' uniform init range, or ``None`` for TorchRec's default."""
        a = self.embedding_init
        if a is None:
            a = getattr(MODELS.get(self.name), "EMBEDDING_INIT", None)
        if a is None:
            return None
        if a < 0:
            raise ValueError(f"model.embedding_init={a}: must be >= 0")
        return (-float(a), float(a))

    def build(self, device: Optional[torch.device] = None, table_prefix: str = "") -> nn.Module:
        """The model, with tables on ``device`` (``meta`` by default, for sharding).

        ``table_prefix`` names a second copy's tables apart (``<prefix>t_<feature>``, ``<prefix>w_<feature>``).
        """
        ebc = embedding_bag_collection(
            self.features,
            self.embedding_dim,
            device=device,
            dims=self.dims,
            init_range=self.init_range(),
            prefix=f"{table_prefix}t_",
        )
        return build_model(self.name, ebc, self.dense_in_features, **self.params)

    def to_dict(self) -> Dict[str, Any]:
        """The spec as JSON-ready types (features as lists)."""
        d = asdict(self)
        d["features"] = [list(f) for f in self.features]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelSpec":
        """The spec from :meth:`to_dict`'s output."""
        d = dict(d)
        d["features"] = [(str(n), int(k)) for n, k in d["features"]]
        return cls(**d)

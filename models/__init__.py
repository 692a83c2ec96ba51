"""CTR models on one TorchRec sparse arch. Every model maps ``(dense [B, n_dense], KJT) → logits [B, 1]``.

>>> from denoisrec.models import MODELS
>>> sorted(MODELS)
['dlrm']
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict

from torch import nn
from torchrec import EmbeddingBagCollection

from denoisrec.models.dlrm import dlrm
from denoisrec.models.embeddings import embedding_bag_collection

MODELS: Dict[str, Callable[..., nn.Module]] = {"dlrm": dlrm}


def build_model(name: str, ebc: EmbeddingBagCollection, dense_in_features: int, **params: Any) -> nn.Module:
    """Instantiate model ``name`` over ``ebc`` with options ``params`` (unknown options are an error)."""
    if name not in MODELS:
        raise ValueError(f"--model {name!r}: unknown model, expected one of {sorted(MODELS)}")
    fn = MODELS[name]
    accepted = set(inspect.signature(fn).parameters) - {"ebc", "dense_in_features"}
    unknown = set(params) - accepted
    if unknown:
        raise ValueError(f"model {name!r}: unknown option(s) {sorted(unknown)}; accepted: {sorted(accepted)}")
    return fn(ebc, dense_in_features, **params)


__all__ = ["MODELS", "build_model", "dlrm", "embedding_bag_collection"]

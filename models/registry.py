"""The model registry: name → constructor, and the checked way to build one.

Kept apart from :mod:`denoisrec.models` (the package's public names) so that :mod:`denoisrec.models.spec`
can build a model without importing the package that imports it (the old circle models/__init__ ↔ spec).
Every constructor maps ``(ebc, dense_in_features, **options)`` to a module ``(dense [B, n_dense], KJT) →
logits [B, 1]``.

Example:
>>> from denoisrec.models.registry import MODELS, model_options
>>> sorted(MODELS)
['dcnv2', 'deepfm', 'dlrm', 'fm', 'widedeep']
>>> model_options("fm")
[]
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List

from torch import nn
from torchrec import EmbeddingBagCollection

from denoisrec.models.dcnv2 import DCNv2
from denoisrec.models.deepfm import DeepFM
from denoisrec.models.dlrm import dlrm
from denoisrec.models.fm import FM
from denoisrec.models.widedeep import WideDeep

MODELS: Dict[str, Callable[..., nn.Module]] = {
    "dlrm": dlrm,
    "dcnv2": DCNv2,
    "deepfm": DeepFM,
    "fm": FM,
    "widedeep": WideDeep,
}


def model_options(name: str) -> List[str]:
    """The options model ``name`` accepts (its constructor's arguments after the sparse arch and dense width)."""
    if name not in MODELS:
        raise ValueError(f"--model {name!r}: unknown model, expected one of {sorted(MODELS)}")
    return [p for p in inspect.signature(MODELS[name]).parameters if p not in ("ebc", "dense_in_features")]


def build_model(name: str, ebc: EmbeddingBagCollection, dense_in_features: int, **params: Any) -> nn.Module:
    """Instantiate model ``name`` over ``ebc`` with options ``params`` (unknown options are an error)."""
    accepted = set(model_options(name))
    unknown = set(params) - accepted
    if unknown:
        raise ValueError(f"model {name!r}: unknown option(s) {sorted(unknown)}; accepted: {sorted(accepted)}")
    return MODELS[name](ebc, dense_in_features, **params)


__all__ = ["MODELS", "build_model", "model_options"]

"""CTR models on one TorchRec sparse arch. Every model maps ``(dense [B, n_dense], KJT) → logits [B, 1]``.

| name | model | needs dense features | one table width |
|---|---|---|---|
| ``dlrm`` | DLRM (TorchRec's ``DLRM``) | yes (≥ 1) | yes |
| ``dcnv2`` | DCN-V2, full or low-rank cross network, stacked or parallel | no | no |
| ``deepfm`` | DeepFM: FM + DNN over shared embeddings | no | yes |
| ``fm`` | factorization machine | no | yes |
| ``widedeep`` | Wide & Deep | no | no |

>>> from denoisrec.models import MODELS
>>> sorted(MODELS)
['dcnv2', 'deepfm', 'dlrm', 'fm', 'widedeep']
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List

from torch import nn
from torchrec import EmbeddingBagCollection

from denoisrec.models.dcnv2 import DCNv2
from denoisrec.models.deepfm import DeepFM
from denoisrec.models.dlrm import dlrm
from denoisrec.models.embeddings import embedding_bag_collection
from denoisrec.models.export import LoadedModel, load_model_file, save_model_file
from denoisrec.models.fm import FM
from denoisrec.models.spec import ModelSpec
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


__all__ = ["DCNv2", "DeepFM", "FM", "LoadedModel", "MODELS", "ModelSpec", "WideDeep", "build_model", "dlrm",
           "embedding_bag_collection", "load_model_file", "model_options", "save_model_file"]

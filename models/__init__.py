"""CTR models on one TorchRec sparse arch. Every model maps ``(dense [B, n_dense], KJT) → logits [B, 1]``.

| name | model | needs dense features | one table width |
|---|---|---|---|
| ``dlrm`` | DLRM (TorchRec's ``DLRM``) | yes (≥ 1) | yes |
| ``dcnv2`` | DCN-V2, full or low-rank cross network, stacked or parallel | no | no |
| ``deepfm`` | DeepFM: FM + DNN over shared embeddings | no | yes |
| ``fm`` | factorization machine | no | yes |
| ``widedeep`` | Wide & Deep | no | no |

A new model is one module here and one line in :data:`denoisrec.models.registry.MODELS` (the registry,
kept in its own module so that :mod:`.spec` can build models without importing this package).

>>> from denoisrec.models import MODELS
>>> sorted(MODELS)
['dcnv2', 'deepfm', 'dlrm', 'fm', 'widedeep']
"""

from __future__ import annotations

from denoisrec.models.dcnv2 import DCNv2
from denoisrec.models.deepfm import DeepFM
from denoisrec.models.dlrm import dlrm
from denoisrec.models.embeddings import embedding_bag_collection
from denoisrec.models.fm import FM
from denoisrec.models.model_file import (
    LoadedModel,
    ModelFile,
    load_model_file,
    read_model_file,
    read_weights,
    save_model_file,
)
from denoisrec.models.registry import MODELS, build_model, model_options
from denoisrec.models.spec import ModelSpec
from denoisrec.models.widedeep import WideDeep

__all__ = [
    "DCNv2",
    "DeepFM",
    "FM",
    "LoadedModel",
    "MODELS",
    "ModelFile",
    "ModelSpec",
    "WideDeep",
    "build_model",
    "dlrm",
    "embedding_bag_collection",
    "load_model_file",
    "model_options",
    "read_model_file",
    "read_weights",
    "save_model_file",
]

"""denoisrec.trainer: the training job, runtime ingest, evaluation, serving and the ``denoisrec`` command line.

The public names below are re-exported lazily (importing ``denoisrec.trainer`` imports no torch, so the command
line can check options and print ``--help`` first): ``from denoisrec.trainer import Config, DataSchema``.
The training entry point is ``from denoisrec.trainer.train import train`` (``train(cfg, hooks) -> summary``;
its module shares the name, so it cannot be re-exported here).

Module map:

| where | what |
|---|---|
| ``train`` | the training job: data → sharded model + denoiser → steps → evaluation → checkpoints → summary |
| ``config``, ``options``, ``presets``, ``config_check`` | the config tree, what the CLI accepts, the papers' set-ups |
| ``module``, ``steps``, ``sharding``, ``dist`` | model + denoiser in one forward, the step, planner + DMP, groups |
| ``denoising``, ``prior``, ``train_labels``, ``context`` | the trainer's side of the denoisers (prior, labels) |
| ``evaluate``, ``metric_state``, ``metrics`` | distributed evaluation (metric state gathered to rank 0) |
| ``early_stop``, ``calibration`` | early stopping, Platt calibration of the scores |
| ``checkpoint``, ``checkpoint_files``, ``out_policy``, ``run_lock`` | resume contract, files, one run per ``--out`` |
| ``progress``, ``runlog``, ``console``, ``curves``, ``run_history`` | what a run logs and draws |
| ``export``, ``serving``, ``predict`` | the model file, torch-only serving artefacts, batch scoring |
| ``errors`` | every exception type (a leaf module) |
| ``data/`` | runtime ingest: schema, streaming Parquet reader, validation |
| ``datasets/`` | offline dataset tools: synthetic generator, converters |
| ``commands/``, ``cli`` | the ``denoisrec`` sub-commands (``add_arguments`` + ``run`` each) and the parser |
| ``bench/`` | ``denoisrec bench``: throughput, quality, peers, ingest, serving |

Example:
>>> from denoisrec.trainer import Config, DataError, UsageError
>>> Config().data.batch_size
2048
>>> issubclass(DataError, ValueError) and issubclass(UsageError, ValueError)
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, List

_EXPORTS: Dict[str, str] = {
    "Config": "denoisrec.trainer.config",
    "apply_overrides": "denoisrec.trainer.config",
    "main": "denoisrec.trainer.cli",
    "DataSchema": "denoisrec.trainer.data.schema",
    "Batch": "denoisrec.trainer.data.batch",
    "ParquetBatchReader": "denoisrec.trainer.data.reader",
    "validate_dataset": "denoisrec.trainer.data.validate",
    "generate": "denoisrec.trainer.datasets.synthetic",
    "PRESETS": "denoisrec.trainer.datasets.synthetic",
    "predict_file": "denoisrec.trainer.predict",
    "export_serving": "denoisrec.trainer.serving",
    "CheckpointError": "denoisrec.trainer.errors",
    "DataError": "denoisrec.trainer.errors",
    "UsageError": "denoisrec.trainer.errors",
}
"""Public name → the module that defines it (imported on first use)."""

if TYPE_CHECKING:  # for type checkers and editors; at run time :func:`__getattr__` imports on first use
    # ``name as name``: an explicit re-export (PEP 484), not an unused import
    from denoisrec.trainer.cli import main as main
    from denoisrec.trainer.config import Config as Config
    from denoisrec.trainer.config import apply_overrides as apply_overrides
    from denoisrec.trainer.data.batch import Batch as Batch
    from denoisrec.trainer.data.reader import ParquetBatchReader as ParquetBatchReader
    from denoisrec.trainer.data.schema import DataSchema as DataSchema
    from denoisrec.trainer.data.validate import validate_dataset as validate_dataset
    from denoisrec.trainer.datasets.synthetic import PRESETS as PRESETS
    from denoisrec.trainer.datasets.synthetic import generate as generate
    from denoisrec.trainer.errors import CheckpointError as CheckpointError
    from denoisrec.trainer.errors import DataError as DataError
    from denoisrec.trainer.errors import UsageError as UsageError
    from denoisrec.trainer.predict import predict_file as predict_file
    from denoisrec.trainer.serving import export_serving as export_serving


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'denoisrec.trainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)

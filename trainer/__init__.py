"""denoisrec.trainer: the training job, runtime ingest, evaluation, serving and the ``denoisrec`` command line.

The public names below are re-exported lazily (importing ``denoisrec.trainer`` imports no torch, so the command
line can check options and print ``--help`` first): ``from denoisrec.trainer import Config, DataSchema``.
The training entry point is ``from denoisrec.trainer.train import train`` (``train(cfg, hooks) -> summary``;
its module shares the name, so it cannot be re-exported here).

Layout (each package imports only the ones listed after it, and the top-level modules it needs;
``tests/test_layout.py`` checks it):

| where | what |
|---|---|
| ``cli``, ``__main__``, ``commands/`` | the ``denoisrec`` command line, its sub-commands, torchrun's ``-m`` entry |
| ``train``, ``recipe``, ``run_setup``, ``factory`` | the training job: set-up, model + denoiser, the epoch loop |
| ``tuning`` | ``denoisrec tune``: train the candidates, choose on the trusted signal, write the config |
| ``module``, ``train_state``, ``errors`` | ``TrainModule``, the run's position and layout, every exception type |
| ``bench/`` | ``denoisrec bench``: throughput, quality, peers, ingest, serving |
| ``serving/`` | serving artefacts, batch scoring (``predict``), Platt calibration |
| ``denoising/`` | building the denoiser for a job, DeCA(p)'s prior phase, feature views, observation report |
| ``loop/`` | the step, the log window, the LR schedule, the non-finite guard |
| ``evaluation/`` | scoring, the evaluator, metric state, metrics, early stopping, selection (rule, DeLong interval) |
| ``outputs/`` | run log, metric loggers, progress, console, curves, run summary, warnings file, figure style |
| ``checkpoint/`` | the checkpointer, its cadence, files, identity checks, ``--out`` policy, run lock, run history |
| ``distributed/`` | process groups, sharding (DMP ``wrap``/``unwrap``, optimizers), shared lookup, unsharding |
| ``config/`` | the config tree, its torch-free check, the option catalog, the papers' presets |
| ``datasets/`` | offline dataset tools: synthetic generator, converters |
| ``data/`` | runtime ingest: schema, streaming Parquet reader, validation, training labels |

Example:
>>> from denoisrec.trainer import Config, DataError, UsageError
>>> Config().data.batch_size
2048
>>> issubclass(DataError, ValueError) and issubclass(UsageError, ValueError)
True
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

_EXPORTS: Dict[str, str] = {
    "Config": "denoisrec.trainer.config.tree",
    "apply_overrides": "denoisrec.trainer.config.tree",
    "main": "denoisrec.trainer.cli",
    "DataSchema": "denoisrec.trainer.data.schema",
    "Batch": "denoisrec.trainer.data.batch",
    "ParquetBatchReader": "denoisrec.trainer.data.reader",
    "validate_dataset": "denoisrec.trainer.data.validate",
    "generate": "denoisrec.trainer.datasets.synthetic",
    "PRESETS": "denoisrec.trainer.datasets.synthetic",
    "predict_file": "denoisrec.trainer.serving.predict",
    "export_serving": "denoisrec.trainer.serving.export",
    "CheckpointError": "denoisrec.trainer.errors",
    "DataError": "denoisrec.trainer.errors",
    "UsageError": "denoisrec.trainer.errors",
}
"""Public name → the module that defines it (imported on first use)."""

if TYPE_CHECKING:  # for type checkers and editors; at run time :func:`__getattr__` imports on first use
    # ``name as name``: an explicit re-export (PEP 484), not an unused import
    from denoisrec.trainer.cli import main as main
    from denoisrec.trainer.config.tree import Config as Config
    from denoisrec.trainer.config.tree import apply_overrides as apply_overrides
    from denoisrec.trainer.data.batch import Batch as Batch
    from denoisrec.trainer.data.reader import ParquetBatchReader as ParquetBatchReader
    from denoisrec.trainer.data.schema import DataSchema as DataSchema
    from denoisrec.trainer.data.validate import validate_dataset as validate_dataset
    from denoisrec.trainer.datasets.synthetic import PRESETS as PRESETS
    from denoisrec.trainer.datasets.synthetic import generate as generate
    from denoisrec.trainer.errors import CheckpointError as CheckpointError
    from denoisrec.trainer.errors import DataError as DataError
    from denoisrec.trainer.errors import UsageError as UsageError
    from denoisrec.trainer.serving.export import export_serving as export_serving
    from denoisrec.trainer.serving.predict import predict_file as predict_file


def lazy_exports(package: str, exports: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` that import each of ``exports`` (name → module) on first use.

    Args:
        package: the package's ``__name__``.
        exports: public name → the module that defines it.

    Returns:
        ``(__getattr__, __dir__)`` for the package's namespace (PEP 562).
    """
    namespace = vars(sys.modules[package])  # the package being initialised

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value
        return value

    def dir_() -> List[str]:
        return sorted(set(namespace) | set(exports))

    return getattr_, dir_


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)

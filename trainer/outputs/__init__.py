"""What a run writes and shows: run log, metric loggers, progress, console, curves, summary, warnings, figure style."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

from denoisrec.trainer import lazy_exports

_EXPORTS: Dict[str, str] = {
    "MetricLogger": "denoisrec.trainer.outputs.loggers",
    "Progress": "denoisrec.trainer.outputs.progress",
    "RunLog": "denoisrec.trainer.outputs.runlog",
    "RunSummary": "denoisrec.trainer.outputs.run_summary",
    "WarningsToFile": "denoisrec.trainer.outputs.warnings_file",
    "file_loggers": "denoisrec.trainer.outputs.loggers",
    "finish_run": "denoisrec.trainer.outputs.console",
    "write_curves": "denoisrec.trainer.outputs.curves",
}
"""Public name → the module that defines it (imported on first use: no torch until then)."""

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from denoisrec.trainer.outputs.console import finish_run as finish_run
    from denoisrec.trainer.outputs.curves import write_curves as write_curves
    from denoisrec.trainer.outputs.loggers import MetricLogger as MetricLogger
    from denoisrec.trainer.outputs.loggers import file_loggers as file_loggers
    from denoisrec.trainer.outputs.progress import Progress as Progress
    from denoisrec.trainer.outputs.run_summary import RunSummary as RunSummary
    from denoisrec.trainer.outputs.runlog import RunLog as RunLog
    from denoisrec.trainer.outputs.warnings_file import WarningsToFile as WarningsToFile

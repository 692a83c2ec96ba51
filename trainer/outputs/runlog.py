"""Run outputs: resolved config, JSONL metrics, TensorBoard scalars, console progress, final summary.

Only rank 0 writes. Layout of ``<out>/``: ``config.yaml``, ``plan.json``, ``metrics.jsonl``, ``tb/``,
``summary.json``.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Mapping

from denoisrec.trainer.outputs.loggers import MESSAGE, ConsoleLogger, MetricLogger, file_loggers, jsonable

_jsonable = jsonable  # the old name


class RunLog:
    """Args: ``out`` directory; ``enabled`` is True on rank 0 only; ``append`` continues ``metrics.jsonl``
    and the TensorBoard events (a resumed run); otherwise both start afresh (old events files removed, so
    a re-run into the same folder does not draw its curves twice).

    A :class:`~denoisrec.trainer.outputs.loggers.MetricLogger` itself: ``log_dict`` goes to every file logger
    (:func:`~denoisrec.trainer.outputs.loggers.file_loggers`); ``print`` logs a console line to ``console``
    (a :class:`~denoisrec.trainer.outputs.loggers.ConsoleLogger`: kind ``message``, at the last step logged);
    ``write_json`` writes the JSON outputs.
    """

    def __init__(self, out: str, enabled: bool, append: bool = False) -> None:
        self.out, self.enabled = out, enabled
        self.loggers: List[MetricLogger] = file_loggers(out, append) if enabled else []
        self.console: MetricLogger = ConsoleLogger(enabled)
        self.step = 0  # the last step logged (a message's step)

    def write_json(self, name: str, obj: Any) -> None:
        if self.enabled:
            with open(os.path.join(self.out, name), "w") as f:
                json.dump(jsonable(obj), f, indent=2, default=str)

    def print(self, msg: str) -> None:
        """One console line (rank 0), through the console's :class:`~denoisrec.trainer.outputs.loggers.MetricLogger`."""
        self.console.log(MESSAGE, msg, self.step, kind=MESSAGE)

    def log(self, name: str, data: Any, step: int, kind: str = "train") -> None:
        self.log_dict({name: data}, step, kind)

    def log_dict(self, payload: Mapping[str, Any], step: int, kind: str = "train") -> None:
        self.step = step
        for logger in self.loggers:
            logger.log_dict(payload, step, kind)

    def hparams(self, config: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        """The run's config and final metrics to the sinks that compare runs (TensorBoard's HParams view)."""
        for logger in self.loggers:
            if hasattr(logger, "log_hparams"):
                logger.log_hparams(config, metrics)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
        self.loggers = []

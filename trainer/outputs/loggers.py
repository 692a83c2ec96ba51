"""One interface for the run's scalars: :class:`MetricLogger` (``log``, ``log_dict``, ``close``), as torchtune's
``torchtune/training/metric_logging.py``, and its writers on rank 0.

- :class:`JsonlLogger`: ``<out>/metrics.jsonl``, one record per call ``{"step", "kind", "time", **values}``
  (non-finite values as ``null``).
- :class:`TensorBoardLogger`: ``<out>/tb/`` scalars ``<kind>/<name>`` (when tensorboard is installed).
- :class:`~denoisrec.trainer.outputs.progress.Progress`: the console (a tqdm bar or log lines).
- :class:`ConsoleLogger`: the console's text lines (kind ``message``: the run's notes, the closing lines).
- :class:`~denoisrec.trainer.outputs.runlog.RunLog` fans one call out to the files' loggers; its ``print`` is a
  ``message`` to its :class:`ConsoleLogger`.

``kind`` names the stream: ``train`` or an evaluation split (``valid``, ``test_clean``, ...).

Example::

    log = JsonlLogger("runs/x")
    log.log_dict({"loss": 0.61, "lr": 1e-3}, step=50, kind="train")
    log.log("auc", 0.71, step=98, kind="valid")
    log.close()
    ConsoleLogger().log(MESSAGE, "output folder: runs/x", step=98, kind=MESSAGE)  # prints the line
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Protocol, runtime_checkable

MESSAGE = "message"  # the kind (and name) of a console text line


def jsonable(v: Any) -> Any:
    """``v`` with NaN / inf floats as ``None`` (JSON has neither), containers walked."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


@runtime_checkable
class MetricLogger(Protocol):
    """Where scalars go. ``step``: steps done; ``kind``: the stream (``train``, ``valid``, ...)."""

    def log(self, name: str, data: Any, step: int, kind: str = "train") -> None: ...

    def log_dict(self, payload: Mapping[str, Any], step: int, kind: str = "train") -> None: ...

    def close(self) -> None: ...


class ConsoleLogger:
    """The console's text lines: each value logged with kind ``message`` is printed as it is, one line on
    stdout (flushed); other kinds are not this logger's (the bar's and the files'). ``enabled``: rank 0.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def log(self, name: str, data: Any, step: int, kind: str = "train") -> None:
        self.log_dict({name: data}, step, kind)

    def log_dict(self, payload: Mapping[str, Any], step: int, kind: str = "train") -> None:
        if self.enabled and kind == MESSAGE:
            for text in payload.values():
                print(text, file=sys.stdout, flush=True)  # sys.stdout as it is now (a test may capture it)

    def close(self) -> None:
        pass


class JsonlLogger:
    """``<out>/metrics.jsonl``; ``append`` continues it (a resumed run), otherwise it starts afresh."""

    def __init__(self, out: str, append: bool = False) -> None:
        os.makedirs(out, exist_ok=True)
        self.path = os.path.join(out, "metrics.jsonl")
        self.t0 = time.time()
        self._f: Optional[Any] = open(self.path, "a" if append else "w")

    def log(self, name: str, data: Any, step: int, kind: str = "train") -> None:
        self.log_dict({name: data}, step, kind)

    def log_dict(self, payload: Mapping[str, Any], step: int, kind: str = "train") -> None:
        assert self._f is not None, "JsonlLogger: closed"
        rec = {"step": step, "kind": kind, "time": round(time.time() - self.t0, 3), **payload}
        self._f.write(json.dumps(jsonable(rec)) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
            from denoisrec.trainer.checkpoint.run_history import compact_metrics

            compact_metrics(self.path)  # a re-evaluated step replaces its record


class TensorBoardLogger:
    """``<out>/tb/``; without ``append`` the old events files go (one stream per run, as metrics.jsonl)."""

    def __init__(self, out: str, append: bool = False) -> None:
        tb = os.path.join(out, "tb")
        if not append:
            for old in glob.glob(os.path.join(tb, "events.out.tfevents.*")):
                os.remove(old)
        from torch.utils.tensorboard import SummaryWriter  # ImportError: see :func:`file_loggers`

        self._w: Optional[Any] = SummaryWriter(tb)

    def log(self, name: str, data: Any, step: int, kind: str = "train") -> None:
        self.log_dict({name: data}, step, kind)

    def log_dict(self, payload: Mapping[str, Any], step: int, kind: str = "train") -> None:
        if self._w is None:
            return
        for k, v in payload.items():
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                self._w.add_scalar(f"{kind}/{k}", v, step)

    def log_hparams(self, config: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        """The run's config and final metrics for TensorBoard's HParams view (one row per run, so runs compare).

        Args:
            config: the resolved config tree (nested dicts); every leaf becomes a dotted hparam, lists as text.
            metrics: the final metrics by split (``{"test_clean": {"auc": ...}, ...}``); each number becomes
                ``hparams/<split>_<metric>``.
        """
        if self._w is None:
            return
        from torch.utils.tensorboard.summary import hparams

        h = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat(config).items()}
        m = {
            f"hparams/{split}_{k}": float(v)
            for split, values in metrics.items()
            if isinstance(values, Mapping)
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        # written into this run's own stream (not add_hparams' time-stamped sub-folder), so a run is one row
        for event in hparams(h, m):
            self._w.file_writer.add_summary(event)
        for k, v in m.items():
            self._w.add_scalar(k, v)
        self._w.flush()

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None


def flat(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; ``None`` leaves are left out (TensorBoard takes no null)."""
    out: Dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flat(v, f"{prefix}{k}."))
        elif v is not None:
            out[f"{prefix}{k}"] = v
    return out


def file_loggers(out: str, append: bool) -> List[MetricLogger]:
    """metrics.jsonl, and TensorBoard when it is installed (optional at run time)."""
    loggers: List[MetricLogger] = [JsonlLogger(out, append)]
    try:
        loggers.append(TensorBoardLogger(out, append))
    except ImportError:
        pass
    return loggers


def numeric(values: Dict[str, Any]) -> Dict[str, float]:
    """The numbers of ``values`` (what a scalar logger can draw)."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float))}

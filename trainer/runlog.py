"""Run outputs: resolved config, JSONL metrics, TensorBoard scalars, console progress, final summary.

Only rank 0 writes. Layout of ``<out>/``: ``config.yaml``, ``plan.json``, ``metrics.jsonl``, ``tb/``,
``summary.json``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys
import time
from typing import Any, Dict, Optional


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


class RunLog:
    """Args: ``out`` directory; ``enabled`` is True on rank 0 only; ``append`` continues ``metrics.jsonl``
    and the TensorBoard events (a resumed run); otherwise both start afresh (old events files removed, so
    a re-run into the same folder does not draw its curves twice)."""

    def __init__(self, out: str, enabled: bool, append: bool = False) -> None:
        self.out, self.enabled = out, enabled
        self.t0 = time.time()
        self._tb = None
        self._jsonl = None
        if enabled:
            os.makedirs(out, exist_ok=True)
            self._jsonl = open(os.path.join(out, "metrics.jsonl"), "a" if append else "w")
            tb = os.path.join(out, "tb")
            if not append:  # a new run into the same folder: one events stream, as metrics.jsonl is rewritten
                for old in glob.glob(os.path.join(tb, "events.out.tfevents.*")):
                    os.remove(old)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(tb)
            except ImportError:  # tensorboard is optional at run time
                self._tb = None

    def write_json(self, name: str, obj: Any) -> None:
        if self.enabled:
            with open(os.path.join(self.out, name), "w") as f:
                json.dump(_jsonable(obj), f, indent=2, default=str)

    def print(self, msg: str) -> None:
        if self.enabled:
            print(msg, file=sys.stdout, flush=True)

    def scalars(self, step: int, kind: str, values: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        rec = {"step": step, "kind": kind, "time": round(time.time() - self.t0, 3), **values}
        assert self._jsonl is not None
        self._jsonl.write(json.dumps(_jsonable(rec)) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            from denoisrec.trainer.run_history import compact_metrics

            compact_metrics(os.path.join(self.out, "metrics.jsonl"))  # a re-evaluated step replaces its record
        if self._tb is not None:
            self._tb.close()


def fmt_stats(values: Dict[str, float], keys: Optional[list] = None) -> str:
    keys = keys or sorted(values)
    return " ".join(f"{k}={values[k]:.4g}" for k in keys if k in values)

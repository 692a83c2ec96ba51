"""The typed results of a run: :class:`RunSummary` (``summary.json``) and :class:`SessionSummary`
(``session.json``, a session ended by ``run.stop_after_steps``).

``to_dict()`` gives the JSON written to disk and returned by :func:`~denoisrec.trainer.train.train`: the
fields in declaration order, ``realimp`` only when the run had a baseline.

Example::

    s = SessionSummary(steps=10, total_steps=40, checkpoint="runs/x/checkpoints/step_10", resumed=None,
                       train_seconds=1.5, wall_seconds=3.0)
    s.to_dict()["interrupted"]  # True
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from denoisrec.trainer.data.accounting import format_rows_read


def environment() -> Dict[str, Any]:
    """Python and torch versions, the CPU and its cores."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


@dataclass
class SessionSummary:
    """A session that stopped at ``run.stop_after_steps`` with a checkpoint; the next launch continues."""

    steps: int
    total_steps: int
    checkpoint: Optional[str]
    resumed: Optional[Dict[str, Any]]
    train_seconds: float
    wall_seconds: float
    interrupted: bool = True

    def to_dict(self) -> Dict[str, Any]:
        return {
            "interrupted": self.interrupted,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "checkpoint": self.checkpoint,
            "resumed": self.resumed,
            "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds,
        }


@dataclass
class RunSummary:
    """Everything ``summary.json`` holds (see ``docs/`` for each key)."""

    config: Dict[str, Any]
    world_size: int
    device: str
    backend: str
    precision: str
    pipeline: Dict[str, Any]
    plan: Dict[str, Any]
    steps: int
    total_steps: int
    steps_per_epoch: int
    batch_size_per_rank: int
    epochs_started: int
    rows_trained: Dict[str, Any]
    ranks: Any
    train_rows_in_split: int
    rows_read: List[Any]
    loss: Dict[str, float]
    throughput_samples_per_s: float
    train_seconds: float
    eval_and_checkpoint_seconds: float
    wall_seconds: float
    metrics: Dict[str, Any]
    evaluations: List[Dict[str, Any]]
    early_stopping: Dict[str, Any]
    resumed: Optional[Dict[str, Any]]
    launch: int
    nonfinite_skipped_steps: Any
    observation: Any
    checkpoint: Optional[str]
    model_file: Optional[str]
    environment: Dict[str, Any] = field(default_factory=environment)
    realimp: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.realimp is None:
            del out["realimp"]
        return out


def format_summary(s: Dict[str, Any]) -> str:
    """The closing console lines of a run: steps, rows, throughput, loss, rows read, metrics per split."""
    lines = [
        f"done: {s['steps']} steps, {s['rows_trained']['this_session']:,} rows in {s['train_seconds']:.1f}s "
        f"({s['throughput_samples_per_s']:,.0f} samples/s on {s['world_size']} rank(s)); "
        f"loss {s['loss']['first']:.4f} -> {s['loss']['last']:.4f}",
    ]
    if s.get("rows_read"):
        lines.append(format_rows_read(s["rows_read"]))
    ri = s.get("realimp") or {}
    for name, m in s["metrics"].items():
        extra = f"  RealImp {ri[name]:+.2%}" if isinstance(ri.get(name), float) and not math.isnan(ri[name]) else ""
        lines.append(
            f"  {name:13s} AUC {m['auc']:.4f}  GAUC {m['gauc']:.4f}  logloss {m['logloss']:.4f}  "
            f"NE {m.get('ne', math.nan):.4f}  ECE {m.get('ece', math.nan):.4f}  "
            f"calib {m.get('calibration', math.nan):.3f}  ({m['rows']:,} rows, labels: {m['target']}){extra}"
        )
    if ri:
        lines.append(f"  RealImp against {ri['baseline']}")
    return "\n".join(lines)

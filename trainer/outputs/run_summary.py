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
    """Python, torch, TorchRec, FBGEMM and denoisrec versions, the source's git commit, the CPU and its cores."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchrec": _version("torchrec"),
        "fbgemm_gpu": _version("fbgemm-gpu-cpu") or _version("fbgemm-gpu"),
        "denoisrec": _version("denoisrec"),
        "git_commit": git_commit(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


def _version(dist: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def git_commit(path: Optional[str] = None) -> Optional[str]:
    """The commit of the checkout this source runs from (``+dirty`` with uncommitted changes); ``None`` outside
    a git checkout (an installed wheel) or without git.
    """
    import subprocess

    here = path or os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(
            ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


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
    selection: Optional[Dict[str, Any]] = None
    input_wait: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.realimp is None:
            del out["realimp"]
        if self.selection is None:
            del out["selection"]
        return out


# A run whose step waited for input this share of its training time or more is called input-bound.
INPUT_BOUND_SHARE = 0.1


def input_wait(seconds_per_rank: List[float], train_seconds: float) -> Dict[str, Any]:
    """The ``input_wait`` entry of ``summary.json``: the time the training step waited for the next batch.

    Args:
        seconds_per_rank: each rank's wait, in seconds.
        train_seconds: the session's training time (evaluations and checkpoints excluded).

    Returns:
        ``{"seconds_per_rank", "max_seconds", "share_of_train", "input_bound"}``: the share is the slowest
        rank's wait over the training time; ``input_bound`` when it is at least :data:`INPUT_BOUND_SHARE`.
    """
    worst = max(seconds_per_rank) if seconds_per_rank else 0.0
    share = worst / train_seconds if train_seconds > 0 else 0.0
    return {
        "seconds_per_rank": [round(float(x), 3) for x in seconds_per_rank],
        "max_seconds": round(float(worst), 3),
        "share_of_train": round(share, 4),
        "input_bound": share >= INPUT_BOUND_SHARE,
    }


def format_input_wait(w: Dict[str, Any]) -> str:
    """One console line: how long the step waited for input, and whether training was input-bound."""
    verdict = "input-bound: raise data.workers / data.prefetch" if w["input_bound"] else "not input-bound"
    return (
        f"  input: the step waited {w['max_seconds']:.1f}s for batches ({w['share_of_train']:.1%} of training "
        f"time, slowest rank); {verdict}"
    )


def format_summary(s: Dict[str, Any]) -> str:
    """The closing console lines of a run: steps, rows, throughput, loss, rows read, metrics per split."""
    lines = [
        f"done: {s['steps']} steps, {s['rows_trained']['this_session']:,} rows in {s['train_seconds']:.1f}s "
        f"({s['throughput_samples_per_s']:,.0f} samples/s on {s['world_size']} rank(s)); "
        f"loss {s['loss']['first']:.4f} -> {s['loss']['last']:.4f}",
    ]
    if s.get("nonfinite_skipped_steps"):
        lines.append(
            f"  skipped {s['nonfinite_skipped_steps']} step(s) with a non-finite loss (run.nonfinite=skip): "
            "their batches count as consumed, no update was made"
        )
    if s.get("input_wait"):
        lines.append(format_input_wait(s["input_wait"]))
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
    if s.get("selection"):
        lines += selection_lines(s["selection"])
    return "\n".join(lines)


def selection_lines(sel: Dict[str, Any]) -> List[str]:
    """What the run selected on (with the interval) and which model it exported, and why."""
    lo, hi = sel["ci"]
    ci = f" [{lo:.4f}, {hi:.4f}] ({sel['ci_level']:.0%} DeLong)" if lo is not None and not math.isnan(lo) else ""
    lines = [
        f"selection: select_on={sel['select_on']} ({sel['reason']}): {sel['metric']}: {sel['auc']:.4f}{ci}",
    ]
    if sel.get("exported_step") is not None:
        lines.append(
            f"exported: the model of step {sel['exported_step']} (epoch {sel['exported_epoch']}/{sel['epochs']}): "
            f"{sel['why']}"
        )
    return lines

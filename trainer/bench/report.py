"""What every bench writes: raw numbers and the environment as JSON, a Markdown table, a PNG plot.

``<out>/<name>.json``, ``<out>/<name>.md`` and ``<out>/<name>.png``. The JSON holds everything needed to
recompute the table (raw per-round / per-seed numbers), the exact command line and the environment (CPU
model, cores, load average, library versions, device), so figures from different machines can be told
apart.

Example::

    rep = BenchReport("throughput", params={"batch_size": 2048})
    rep.rows.append({"method": "bce", "samples_per_s": 61234.0})
    rep.markdown = markdown_table(rep.rows, [("method", "method", "{}"), ("samples/s", "samples_per_s", "{:,.0f}")])
    rep.write("runs/bench", plot=lambda fig: fig.add_subplot(111).bar(["bce"], [61234.0]))
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

PACKAGES = (
    "torch",
    "torchrec",
    "fbgemm-gpu-cpu",
    "fbgemm-gpu",
    "numpy",
    "pyarrow",
    "matplotlib",
    "deepctr-torch",
    "torchfm",
    "fuxictr",
)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(pkg: str) -> Optional[str]:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> Optional[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment() -> Dict[str, Any]:
    """CPU model, core counts, load average, library versions, accelerator and the code's commit."""
    import torch

    env: Dict[str, Any] = {
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {p: v for p in PACKAGES if (v := _version(p)) is not None},
        "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "git_commit": _git_commit(),
        "command": " ".join(["denoisrec"] + sys.argv[1:]) if sys.argv else None,
    }
    return env


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """Median, quartiles, min, max and the relative spread ``(p75 − p25) / median`` of ``values``."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        nan = float("nan")
        return {
            "n": 0,
            "median": nan,
            "p25": nan,
            "p75": nan,
            "min": nan,
            "max": nan,
            "rel_spread": nan,
            "mean": nan,
            "std": nan,
        }
    med = float(np.median(v))
    p25, p75 = (float(x) for x in np.percentile(v, [25, 75]))
    return {
        "n": int(v.size),
        "median": med,
        "p25": p25,
        "p75": p75,
        "min": float(v.min()),
        "max": float(v.max()),
        "rel_spread": (p75 - p25) / med if med else float("nan"),
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
    }


def jsonable(v: Any) -> Any:
    """NaN/inf → None, numpy scalars → Python, tuples → lists (recursively)."""
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def fmt(value: Any, spec: str) -> str:
    """``spec.format(value)``; ``—`` for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


Column = Tuple[str, Any, str]  # (header, key or function of the row, format spec)


def markdown_table(rows: Sequence[Dict[str, Any]], columns: Sequence[Column]) -> str:
    """A GitHub Markdown table: one line per row, cells formatted by each column's spec."""
    head = "| " + " | ".join(h for h, _, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for _, key, spec in columns:
            value = key(r) if callable(key) else r.get(key)
            cells.append(fmt(value, spec))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pm(mean: float, std: float, spec: str = "{:.4f}") -> str:
    """``mean ± std`` with the same format for both."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{spec.format(mean)} ± {spec.format(std)}"


@dataclass
class BenchReport:
    """A bench's results. ``rows`` are the table's rows (also saved), ``raw`` anything else worth keeping."""

    name: str
    params: Dict[str, Any] = field(default_factory=dict)
    rows: List[Dict[str, Any]] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict)
    markdown: str = ""
    notes: List[str] = field(default_factory=list)
    env: Dict[str, Any] = field(default_factory=environment)

    def to_dict(self) -> Dict[str, Any]:
        return jsonable(
            {
                "bench": self.name,
                "params": self.params,
                "environment": self.env,
                "rows": self.rows,
                "raw": self.raw,
                "notes": self.notes,
            }
        )

    def render_markdown(self) -> str:
        e = self.env
        lines = [
            f"## denoisrec bench {self.name}",
            "",
            f"`{e.get('command')}`",
            "",
            f"{e.get('cpu_model')}, {e.get('cpu_cores_usable')} usable cores "
            f"(load average {', '.join(f'{x:.2f}' for x in e.get('load_average') or [])}), "
            f"device {e.get('device')}; torch {e['versions'].get('torch')}, "
            f"torchrec {e['versions'].get('torchrec')}; commit {e.get('git_commit')}; {e.get('time_utc')}",
            "",
            self.markdown,
        ]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, out: str, plot: Optional[Callable[[Any], None]] = None) -> Dict[str, str]:
        """Write ``<out>/<name>.{json,md,png}``; return the paths written. ``plot(fig)`` draws the figure.

        Without matplotlib the PNG is not written and a warning says so (``pip install 'denoisrec[bench]'``).
        """
        os.makedirs(out, exist_ok=True)
        paths = {"json": os.path.join(out, f"{self.name}.json"), "md": os.path.join(out, f"{self.name}.md")}
        if plot is not None:
            png = os.path.join(out, f"{self.name}.png")
            if save_plot(png, plot):
                paths["png"] = png
        with open(paths["json"], "w") as f:
            json.dump(self.to_dict(), f, indent=2, default=str)
        with open(paths["md"], "w") as f:
            f.write(self.render_markdown())
        return paths


def explicit_options(a: argparse.Namespace) -> Set[str]:
    """The destinations of the options the user typed (``--batch-size 8`` → ``batch_size``), read from
    ``a.argv`` (set by ``denoisrec``'s ``main``); empty when unknown.
    """
    given: Set[str] = set()
    for tok in getattr(a, "argv", None) or []:
        if tok.startswith("--") and len(tok) > 2:
            given.add(tok[2:].split("=", 1)[0].replace("-", "_"))
    return given


def apply_quick(a: argparse.Namespace, values: Dict[str, Any]) -> None:
    """``--quick``'s values for the options the user did not type: explicit flags win over ``--quick``."""
    if not getattr(a, "quick", False):
        return
    given = explicit_options(a)
    for dest, value in values.items():
        if dest not in given:
            setattr(a, dest, value)


def save_plot(path: str, draw: Callable[[Any], None]) -> bool:
    """Draw with ``draw(figure)`` and save a PNG (Agg backend); False, with a warning, without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(
            f"{path}: not written, matplotlib is not installed (pip install 'denoisrec[bench]')", stacklevel=2
        )
        print(f"warning: {path} not written: matplotlib is not installed", file=sys.stderr)
        return False
    fig = plt.figure(figsize=(10, 5.5))
    try:
        draw(fig)
        if fig.get_layout_engine() is None:  # a figure that set its own (constrained) layout keeps it
            fig.tight_layout()
        fig.savefig(path, dpi=110, bbox_inches="tight")  # legends outside the axes stay in the file
    finally:
        plt.close(fig)
    return True

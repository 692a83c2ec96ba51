"""``denoisrec bench redraw FILE.json``: a bench's figure drawn again from the JSON the bench wrote.

Every bench keeps in ``<bench>.json`` what its plot needs, so a figure can be redrawn (with a newer plotting
code, on another machine) without rerunning the measurement. Benches whose JSON is a
:class:`~denoisrec.trainer.bench.report.BenchReport`: ``quality``, ``peers``, ``serving``, ``throughput``; also a
run's ``observation.json`` (the observation model's diagnostics). A run's ``curves.png`` is redrawn by
``denoisrec report RUN``.

    denoisrec bench redraw runs/bench-q/quality.json                 # rewrites runs/bench-q/quality.png
    denoisrec bench redraw runs/obs/observation.json --out obs.png
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable, Dict, Optional

from denoisrec.trainer.errors import UsageError


def _plots() -> Dict[str, Callable[[Any, Any], None]]:
    from denoisrec.trainer.bench import peers, quality, serving, throughput

    return {"quality": quality.plot, "peers": peers.plot, "serving": serving.plot, "throughput": throughput.plot}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``FILE.json [--out FIG.png]``."""
    p.add_argument("json", metavar="FILE.json", help="a bench's JSON (e.g. runs/bench-q/quality.json)")
    p.add_argument("--out", default=None, help="figure file (default: FILE.png beside FILE.json)")


def read_report(path: str) -> Any:
    """The :class:`~denoisrec.trainer.bench.report.BenchReport` saved in ``path``.

    Raises:
        UsageError: ``path`` is not a bench JSON this command can redraw.
    """
    from denoisrec.trainer.bench.report import BenchReport

    try:
        with open(path) as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise UsageError(
            f"{path}: not JSON ({e.msg} at line {e.lineno}); pass the <bench>.json a bench wrote"
        ) from None
    name = d.get("bench") if isinstance(d, dict) else None
    if name not in _plots():
        raise UsageError(
            f"{path}: not a bench report this command can redraw (its 'bench' is {name!r}; "
            f"known: {', '.join(sorted(_plots()))})"
        )
    return BenchReport(
        name,
        params=d.get("params") or {},
        rows=d.get("rows") or [],
        raw=d.get("raw") or {},
        notes=d.get("notes") or [],
        env=d.get("environment") or {},
    )


def redraw(path: str, out: Optional[str] = None) -> Optional[str]:
    """Draw the figure of the bench JSON (or ``observation.json``) ``path`` into ``out`` (default ``path``
    with ``.png``).

    Returns:
        The PNG's path, or ``None`` without matplotlib (a warning says so).
    """
    from denoisrec.trainer.bench.report import save_plot

    png = out or os.path.splitext(path)[0] + ".png"
    observation = _observation_report(path)
    if observation is not None:
        from denoisrec.trainer.denoising.observation_report import plot

        return plot(observation, png)
    rep = read_report(path)
    draw = _plots()[rep.name]
    return png if save_plot(png, lambda fig: draw(fig, rep)) else None


def _observation_report(path: str) -> Optional[Dict[str, Any]]:
    """``path``'s content when it is a run's ``observation.json`` (a ``learned`` table per feature)."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return d if isinstance(d, dict) and isinstance(d.get("learned"), dict) and "bench" not in d else None


def run(a: argparse.Namespace) -> int:
    """Redraw ``a.json``; print the figure's path."""
    if not os.path.isfile(a.json):
        raise UsageError(f"{a.json}: no such file; pass the <bench>.json a bench wrote into its --out")
    png = redraw(a.json, a.out)
    if png:
        print(f"figure: {png}")
    return 0 if png else 1

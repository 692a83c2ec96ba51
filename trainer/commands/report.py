"""``denoisrec report RUN [RUN ...]``: several runs side by side, as a table and one figure.

For each run directory (``metrics.jsonl`` and ``summary.json`` written by training): the denoiser, the final
clean-test AUC, the best clean-test AUC over the epochs and where it was, the final validation AUC, and the
clean-test AUC by epoch. The figure is :func:`~denoisrec.trainer.outputs.curves.write_curves` with one colour per run.
"BCE vs my denoiser" is one command.

Example::

    make train DENOISER=bce OUT=runs/bce && make train OUT=runs/deca_p
    denoisrec report runs/bce runs/deca_p      # runs/reports/bce-vs-deca_p/{report.png,table.json}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from typing import Any, Dict, List

from denoisrec.trainer.outputs.curves import Series, read_series, write_curves

HELP = "compare runs: a table of clean/valid AUC and one figure of their curves"
DESCRIPTION = """Several runs side by side: per run the method, the final and the best clean-test AUC, the validation
AUC and the clean-test AUC by epoch; one figure with every run's curves (AUC per epoch, loss of noisy vs
clean positives, noise identification). For example, BCE against the recommended set-up:

  make train DENOISER=bce OUT=runs/bce && make train OUT=runs/deca_p
  denoisrec report runs/bce runs/deca_p     (writes runs/reports/bce-vs-deca_p/report.png and table.json)"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``RUN [RUN ...] [--out FIG.png] [--json TABLE.json]``."""
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (their --out)")
    p.add_argument(
        "--out",
        default=None,
        help="figure file (default: reports/<run>-vs-<run>/report.png beside the first run, with table.json: one "
        "folder per comparison, so comparing other runs never overwrites this one)",
    )
    p.add_argument("--json", default=None, help="table as JSON (default: table.json beside the default figure)")


def default_folder(runs: List[str]) -> str:
    """``<parent of the first run>/reports/<a>-vs-<b>[-vs-...]``: one folder per comparison (names of the runs'
    folders, in the order given; a long list is cut and keeps a short hash of the whole so it stays unique).

    Args:
        runs: the run directories compared.

    Returns:
        The comparison's folder (not created).
    """
    names = [os.path.basename(os.path.normpath(r)) or "run" for r in runs]
    name = "-vs-".join(names)
    if len(name) > 80:
        digest = hashlib.sha256("\0".join(os.path.abspath(r) for r in runs).encode()).hexdigest()[:8]
        name = f"{name[:70]}-{digest}"
    return os.path.join(os.path.dirname(os.path.normpath(os.path.abspath(runs[0]))), "reports", name)


def rows(runs: List[str]) -> List[Dict[str, Any]]:
    out = []
    for r in runs:
        s = read_series(r)
        summary = _summary(r)
        metrics = summary.get("metrics") or {}
        best = max(s.clean_auc, key=lambda p: p[1]) if s.clean_auc else None
        out.append(
            {
                "run": r,
                "method": s.name,
                "series": s,
                "clean_auc": (metrics.get("test_clean") or {}).get("auc"),
                "best_clean_auc": best[1] if best else None,
                "best_epoch": best[0] if best else None,
                "valid_auc": (metrics.get("valid") or {}).get("auc"),
                "clean_by_epoch": [round(v, 4) for _, v in s.clean_auc],
            }
        )
    return out


def format_table(table: List[Dict[str, Any]]) -> str:
    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.4f}"

    lines = [
        "| run | method | clean-test AUC | best (epoch) | valid AUC | clean-test AUC by epoch |",
        "|---|---|---|---|---|---|",
    ]
    for t in table:
        best = "–" if t["best_clean_auc"] is None else f"{t['best_clean_auc']:.4f} ({t['best_epoch']:g})"
        lines.append(
            f"| {t['run']} | {t['method']} | {f(t['clean_auc'])} | {best} | {f(t['valid_auc'])} | "
            f"{' → '.join(f'{v:.4f}' for v in t['clean_by_epoch']) or '–'} |"
        )
    return "\n".join(lines)


def run(a: argparse.Namespace) -> int:
    table = rows(a.runs)
    print(format_table(table))
    series: List[Series] = [t["series"] for t in table]
    out, table_json = a.out, a.json
    if out is None:
        folder = default_folder(a.runs)
        os.makedirs(folder, exist_ok=True)
        out, table_json = os.path.join(folder, "report.png"), table_json or os.path.join(folder, "table.json")
    write_curves(series, out, title=" vs ".join(s.name for s in series))
    print(f"figure: {out}")
    if table_json:
        with open(table_json, "w") as f:
            json.dump([{k: v for k, v in t.items() if k != "series"} for t in table], f, indent=2)
        print(f"table: {table_json}")
    return 0


def _summary(run_dir: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}

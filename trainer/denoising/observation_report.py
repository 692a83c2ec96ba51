"""The observation model's diagnostics: learned ``P(ỹ=1 | y, c)`` per context value beside the truth.

After training, a denoiser with a context tower (``--denoiser observation``) reports, per value of each
single-valued context feature, the mean learned ``h = P(ỹ=1 | y=0, c)`` and ``h' = P(ỹ=1 | y=1, c)`` over
recent training rows (:meth:`ObservationModel.context_report`). When ``<data>/stats.json`` holds the
generator's ``observation_truth`` (``denoisrec gen-data``), each value gets its true rates beside them, and
each feature the row-weighted mean and the largest absolute error. Written by rank 0 as
``<out>/observation.json`` and ``<out>/observation.png`` (one panel per feature: learned and true ``h``,
``h'`` against the value).

Example::

    info = write_observation_report(model, "data/small", "runs/obs", env.is_main, log)
    info["errors"]["position"]["h_prime"]["mean_abs"]   # 0.02
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from torch import nn

from denoisrec.trainer.module import denoiser_of

REPORT_JSON, REPORT_PNG = "observation.json", "observation.png"


def read_truth(data_path: str) -> Dict[str, Any]:
    """The generator's ``observation_truth`` from ``<data_path>/stats.json`` (empty when absent)."""
    path = os.path.join(data_path, "stats.json")
    if "://" in data_path or not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f).get("observation_truth", {}) or {}


def compare(learned: Dict[str, Any], truth: Dict[str, Any]) -> Dict[str, Any]:
    """Add the true rates to each learned feature and the errors (row-weighted mean, max) per rate."""
    errors: Dict[str, Any] = {}
    for feat, rec in learned.items():
        t = truth.get(feat)
        if not isinstance(t, dict):
            continue
        by_value = {v: i for i, v in enumerate(t["values"])}
        for rate, rows in (("h", "rows_y0"), ("h_prime", "rows_y1")):
            true_vals: List[Optional[float]] = []
            diffs, weights = [], []
            for v, got in zip(rec["values"], rec[rate]):
                j = by_value.get(v)
                tv = t[rate][j] if j is not None else None
                true_vals.append(tv)
                if tv is not None:
                    diffs.append(abs(got - tv))
                    weights.append(t[rows][j])
            rec[f"true_{rate}"] = true_vals
            if diffs:
                w = sum(weights) or 1
                errors.setdefault(feat, {})[rate] = {
                    "mean_abs": sum(d * x for d, x in zip(diffs, weights)) / w,
                    "max_abs": max(diffs),
                }
    return errors


def plot(report: Dict[str, Any], path: str) -> Optional[str]:
    """One panel per feature: learned (solid) and true (dashed) h and h'. ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    feats = list(report["learned"])
    fig, axes = plt.subplots(1, len(feats), figsize=(3.6 * len(feats), 3.2), squeeze=False)
    for ax, feat in zip(axes[0], feats):
        rec = report["learned"][feat]
        x = rec["values"]
        for rate, colour, label in (("h", "tab:red", "h = P(ỹ=1|y=0,c)"), ("h_prime", "tab:blue", "h' = P(ỹ=1|y=1,c)")):
            ax.plot(x, rec[rate], "-o", ms=3, color=colour, label=f"learned {label}")
            if f"true_{rate}" in rec:
                pts = [(v, t) for v, t in zip(x, rec[f"true_{rate}"]) if t is not None]
                if pts:
                    ax.plot(*zip(*pts), "--", color=colour, alpha=0.7, label=f"true {rate}")
        ax.set_title(feat)
        ax.set_ylim(0, 1)
        ax.set_xlabel("value")
    axes[0][0].set_ylabel("P(observed positive)")
    axes[0][-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_observation_report(
    model: nn.Module, data_path: str, out_dir: str, is_main: bool, log: Any = None
) -> Optional[Dict[str, Any]]:
    """Collect the tower's per-context-value rates (a collective: every rank calls it), compare them with
    the generator's truth and write the JSON and the plot on rank 0. ``None`` for other denoisers.
    """
    d = denoiser_of(model)
    if not d.needs.context_tower:
        return None
    learned = d.context_report()
    if not is_main:
        return {}
    report: Dict[str, Any] = {"learned": learned}
    report["errors"] = compare(learned, read_truth(data_path))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, REPORT_JSON), "w") as f:
        json.dump(report, f, indent=1)
    png = plot(report, os.path.join(out_dir, REPORT_PNG)) if learned else None
    info = {"json": os.path.join(out_dir, REPORT_JSON), "png": png, "errors": report["errors"]}
    if log is not None:
        errs = "; ".join(
            f"{k}: |h| {v['h']['mean_abs']:.3f}, |h'| {v['h_prime']['mean_abs']:.3f}"
            for k, v in report["errors"].items()
            if "h" in v and "h_prime" in v
        )
        log.print(
            f"observation model: learned P(ỹ=1 | y, c) per context value -> {info['json']}"
            + (f" (mean abs error vs the generator's truth: {errs})" if errs else "")
        )
    return info

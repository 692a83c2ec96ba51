"""The observation model's diagnostics: learned ``P(ỹ=1 | y, c)`` per context value beside the truth.

After training, a denoiser with a context tower (``--denoiser observation``) reports, per value of each
single-valued context feature, the mean learned ``h = P(ỹ=1 | y=0, c)`` and ``h' = P(ỹ=1 | y=1, c)`` over
recent training rows (:meth:`ObservationModel.context_report`). When ``<data>/stats.json`` holds the
generator's ``observation_truth`` (``denoisrec gen-data``), each value gets its true rates beside them, and
each feature its errors, split in two because they mean different things:

- the **offset**: the row-weighted mean of ``learned − true`` (signed). Every feature averages over the same
  rows, so a level error of the whole noise model (``f`` squashed, every ``h`` a little low) shows as the
  same offset in every feature; the report gives it once, as the ``common_offset`` (the mean over features);
- the **shape error**: the row-weighted mean (and the largest) ``|learned − true − offset|``, how well the
  per-value pattern is learnt once the level is set aside. ``mean_abs`` (offset and shape together) stays.

:func:`level_report` sets the learnt ``f`` against the trusted labels (the schema's ``trusted_label``):
the mean ``f`` on the trusted valid rows and during training against the trusted positive rate (with its
binomial interval), which pins the level the noise model alone cannot identify.

Written by rank 0 as ``<out>/observation.json`` and ``<out>/observation.png`` (one panel per feature:
learned and true ``h``, ``h'`` against the value).

Example::

    info = write_observation_report(model, "data/small", "runs/obs", env.is_main, log)
    info["common_offset"]["h"], info["errors"]["position"]["h_prime"]["shape_mean_abs"]   # -0.085, 0.004
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple

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
    """Add the true rates to each learned feature and the errors per rate: ``mean_abs`` and ``max_abs`` of
    ``learned − true``, its signed row-weighted mean ``offset``, and the shape error once the offset is removed
    (``shape_mean_abs``, ``shape_max_abs``).
    """
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
                    diffs.append(got - tv)
                    weights.append(t[rows][j])
            rec[f"true_{rate}"] = true_vals
            if diffs:
                w = sum(weights) or 1
                offset = sum(d * x for d, x in zip(diffs, weights)) / w
                errors.setdefault(feat, {})[rate] = {
                    "mean_abs": sum(abs(d) * x for d, x in zip(diffs, weights)) / w,
                    "max_abs": max(abs(d) for d in diffs),
                    "offset": offset,
                    "shape_mean_abs": sum(abs(d - offset) * x for d, x in zip(diffs, weights)) / w,
                    "shape_max_abs": max(abs(d - offset) for d in diffs),
                }
    return errors


def common_offset(errors: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """Per rate, the offset every feature shares: the mean of the features' offsets, and their spread
    (largest minus smallest; near 0 when the offset is a level of the whole model, not of one feature).
    """
    out: Dict[str, Dict[str, float]] = {}
    for rate in ("h", "h_prime"):
        offs = [e[rate]["offset"] for e in errors.values() if rate in e]
        if offs:
            out[rate] = {"offset": sum(offs) / len(offs), "spread": max(offs) - min(offs), "features": len(offs)}
    return out


def diagnostics_line(json_path: str, errors: Dict[str, Any], offset: Dict[str, Dict[str, float]]) -> str:
    """The console line: the common offset once, then each feature's shape error."""
    head = f"observation model: learned P(ỹ=1 | y, c) per context value -> {json_path}"
    if not offset or "h" not in offset or "h_prime" not in offset:
        return head
    shapes = "; ".join(
        f"{k}: |h| {v['h']['shape_mean_abs']:.3f}, |h'| {v['h_prime']['shape_mean_abs']:.3f}"
        for k, v in errors.items()
        if "h" in v and "h_prime" in v
    )
    return (
        f"{head} (vs the generator's truth: common offset h {offset['h']['offset']:+.3f}, "
        f"h' {offset['h_prime']['offset']:+.3f}, the same in every feature within "
        f"{max(offset['h']['spread'], offset['h_prime']['spread']):.3f}; per-value shape error after it: {shapes})"
    )


def level_report(trusted: Optional[Dict[str, Any]], f_mean_train: Optional[float]) -> Optional[Dict[str, Any]]:
    """``f``'s level against the trusted labels: ``trusted`` is the run's ``valid_trusted`` metrics (rows,
    positives, calibration = mean predicted / positive rate); ``f_mean_train`` the last training ``f_mean``.
    Returns the trusted positive rate with its 95% normal interval, the mean ``f`` on those rows, the
    training ``f_mean``, and their differences (``None`` without trusted rows).
    """
    if not trusted or not trusted.get("rows") or trusted.get("positives") is None:
        return None
    n, pos = int(trusted["rows"]), int(trusted["positives"])
    rate = pos / n
    half = 1.959964 * math.sqrt(rate * (1 - rate) / n)
    f_trusted = float(trusted["calibration"]) * rate if not math.isnan(trusted.get("calibration", math.nan)) else None
    out: Dict[str, Any] = {"trusted_rows": n, "trusted_positive_rate": rate, "interval": [rate - half, rate + half]}
    out["f_mean_trusted_rows"] = f_trusted
    out["f_mean_train"] = f_mean_train
    out["f_minus_rate_trusted_rows"] = None if f_trusted is None else f_trusted - rate
    out["f_minus_rate_train"] = None if f_mean_train is None else f_mean_train - rate
    return out


def level_line(level: Dict[str, Any]) -> str:
    """The console line of :func:`level_report`."""
    lo, hi = level["interval"]
    parts = [f"observation model: f against the trusted labels: positive rate {level['trusted_positive_rate']:.3f}"]
    parts[0] += f" [{lo:.3f}, {hi:.3f}] on {level['trusted_rows']:,} valid rows"
    if level["f_mean_trusted_rows"] is not None:
        parts.append(f"mean f there {level['f_mean_trusted_rows']:.3f} ({level['f_minus_rate_trusted_rows']:+.3f})")
    if level["f_mean_train"] is not None:
        parts.append(f"f_mean in training {level['f_mean_train']:.3f} ({level['f_minus_rate_train']:+.3f})")
    return "; ".join(parts)


def last_train_stat(out_dir: str, key: str) -> Optional[float]:
    """The last training record's ``key`` in ``<out>/metrics.jsonl`` (``None`` when absent)."""
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    value = None
    with open(path) as f:
        for line in f:
            if f'"{key}"' in line:
                rec = json.loads(line)
                if rec.get("kind") == "train" and isinstance(rec.get(key), (int, float)):
                    value = float(rec[key])
    return value


def plot(report: Dict[str, Any], path: str) -> Optional[str]:
    """Draw :func:`observation_figure` into ``path`` (PNG); ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from denoisrec.trainer.outputs import plot_style

    fig, title = observation_figure(report)
    plot_style.save(fig, path, title, dpi=110)
    plt.close(fig)
    return path


def observation_figure(report: Dict[str, Any]) -> Tuple[Any, str]:
    """One panel per feature: learned (solid) and true (dashed) h and h' against the feature's value.

    Integer x ticks where the values are ids (hour, position, ...); one legend for all panels, beside them.

    Returns:
        The figure and its title.
    """
    import matplotlib.pyplot as plt

    from denoisrec.trainer.outputs import plot_style

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
                    ax.plot(*zip(*pts), "--", color=colour, alpha=0.7, label=f"true {rate} (generator)")
        ax.set_title(feat, fontsize=10)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"{feat} value")
        ax.grid(alpha=0.3)
        if plot_style.all_integers(x):
            plot_style.integer_ticks(ax, "x")
        if len(x) == 1:
            ax.set_xlim(x[0] - 1, x[0] + 1)
    axes[0][0].set_ylabel("P(observed positive)")
    fig.tight_layout()
    plot_style.legend_outside(axes[0][-1], "right", fontsize=8)
    truth = any(f"true_{r}" in rec for rec in report["learned"].values() for r in ("h", "h_prime"))
    title = "observation model: learned noise rates per context value" + (
        " (solid) vs the generator's truth (dashed)" if truth else " (no truth in this data's stats.json)"
    )
    return fig, title


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
    report["common_offset"] = common_offset(report["errors"])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, REPORT_JSON), "w") as f:
        json.dump(report, f, indent=1)
    png = plot(report, os.path.join(out_dir, REPORT_PNG)) if learned else None
    info = {
        "json": os.path.join(out_dir, REPORT_JSON),
        "png": png,
        "errors": report["errors"],
        "common_offset": report["common_offset"],
    }
    if log is not None:
        log.print(diagnostics_line(info["json"], report["errors"], report["common_offset"]))
    return info


def add_level(info: Optional[Dict[str, Any]], metrics: Dict[str, Any], out_dir: str, log: Any = None) -> None:
    """After the final evaluation (rank 0): add :func:`level_report` to ``info`` and ``observation.json``,
    and print its line, when the run scored trusted valid rows (``metrics["valid_trusted"]``).
    """
    if not info:
        return
    level = level_report(metrics.get("valid_trusted"), last_train_stat(out_dir, "f_mean"))
    if level is None:
        return
    info["level"] = level
    path = info["json"]
    with open(path) as f:
        report = json.load(f)
    report["level"] = level
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    if log is not None:
        log.print(level_line(level))

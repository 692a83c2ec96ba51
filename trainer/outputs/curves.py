"""What denoising does, drawn from a run's ``metrics.jsonl``: ``curves.png`` and the one-line AUC curve.

Three panels, x in epochs (``step / steps_per_epoch``):

1. **AUC**: clean-test AUC (against the ground-truth labels) and validation AUC (observed labels). Plain BCE
   memorises the noise: its clean AUC falls after the first epoch while the observed one stays flat.
2. **Loss of positives**: mean BCE of truly noisy vs truly clean observed positives (``truth_loss_*``): the
   gap is what loss-based denoisers select on.
3. **Noise identification**: precision and recall of what the denoiser handles (dropped, relabelled,
   down-weighted) against ``is_noisy``, beside the precision of handling at random (the noise share).

The same series are TensorBoard scalars (``test_clean/auc``, ``valid/auc``, ``train/truth_*``).
Runs without ground truth draw the panels they have.

Example::

    series = read_series("runs/default")
    write_curves(series, "runs/default/curves.png", title="dlrm + bce")
    auc_line(series)  # 'clean-test AUC by epoch: 0.9061 -> 0.9070 -> 0.8961 (valid, observed: 0.70 ...)'
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

Points = List[Tuple[float, float]]


@dataclass
class Series:
    """A run's curves; x in epochs."""

    name: str
    clean_auc: Points = field(default_factory=list)
    valid_auc: Points = field(default_factory=list)
    loss_noisy: Points = field(default_factory=list)
    loss_clean: Points = field(default_factory=list)
    precision: Points = field(default_factory=list)
    recall: Points = field(default_factory=list)
    random_precision: Points = field(default_factory=list)
    valid_target: str = "observed"


_TRAIN_KEYS = {
    "truth_loss_noisy_pos": "loss_noisy",
    "truth_loss_clean_pos": "loss_clean",
    "truth_precision": "precision",
    "truth_recall": "recall",
    "truth_random_precision": "random_precision",
}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_series(run: str, steps_per_epoch: Optional[int] = None, name: Optional[str] = None) -> Series:
    """The curves of run directory ``run`` (``steps_per_epoch`` from its ``summary.json`` when not given).

    A re-run into the same directory rewrites ``metrics.jsonl``; a resumed one appends: a later record for a
    step already seen replaces the earlier one.
    """
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run}: no metrics.jsonl (not a denoisrec run directory?)")
    spe = steps_per_epoch or _summary(run).get("steps_per_epoch") or 1
    s = Series(name or _label(run))
    by: Dict[Tuple[str, str], Dict[int, float]] = {}
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind, step = rec.get("kind"), rec.get("step")
            if not isinstance(step, int):
                continue
            if kind in ("test_clean", "valid") and _finite(rec.get("auc")):
                by.setdefault((kind, "auc"), {})[step] = float(rec["auc"])
            elif kind == "train":
                for k, attr in _TRAIN_KEYS.items():
                    if _finite(rec.get(k)):
                        by.setdefault(("train", attr), {})[step] = float(rec[k])
    for (kind, key), points in by.items():
        attr = {"test_clean": "clean_auc", "valid": "valid_auc"}.get(kind, key)
        setattr(s, attr, [(st / spe, v) for st, v in sorted(points.items())])
    if not s.precision:  # the method handled nothing (BCE): its recall of 0 says nothing
        s.recall = []
    cfg = _summary(run).get("config") or {}
    if (cfg.get("data") or {}).get("train_label") == "clean_label":
        s.valid_target = "clean"
    return s


def _summary(run: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(run, "summary.json")) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}


def _label(run: str) -> str:
    cfg = _summary(run).get("config") or {}
    d = cfg.get("denoiser") or {}
    if not d:
        return os.path.basename(os.path.normpath(run))
    params = " ".join(f"{k}={v}" for k, v in (d.get("params") or {}).items())
    return f"{d.get('name')}{' ' + params if params else ''}"


def auc_line(s: Series) -> str:
    """``clean-test AUC by epoch: a -> b -> c (valid AUC, observed labels: x -> y -> z)``; '' without evals."""

    def chain(points: Points) -> str:
        return " -> ".join(f"{v:.4f}" for _, v in points)

    if s.clean_auc:
        out = f"clean-test AUC by epoch: {chain(s.clean_auc)}"
        if s.valid_auc:
            out += f"  (valid AUC, {s.valid_target} labels: {chain(s.valid_auc)})"
        return out
    return f"valid AUC by epoch ({s.valid_target} labels): {chain(s.valid_auc)}" if s.valid_auc else ""


def write_curves(series: Sequence[Series], path: str, title: str = "") -> str:
    """Draw ``series`` (one run, or several side by side) into ``path`` (PNG); return ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from denoisrec.trainer.outputs import plot_style

    fig = curves_figure(series)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    plot_style.save(fig, path, title or "what denoising does, per epoch", dpi=80)
    plt.close(fig)
    return path


def curves_figure(series: Sequence[Series]) -> Any:
    """The three panels of ``series`` as a matplotlib figure (no title: :func:`write_curves` adds it).

    x in epochs from 0 with whole-epoch ticks; a series of one to three points gets larger markers and its
    values written beside them; legends sit under the panels; a method that handles no positives (BCE) draws
    no noise identification, and the panel says so.
    """
    import matplotlib.pyplot as plt

    from denoisrec.trainer.outputs import plot_style

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    many = len(series) > 1
    drawn: List[Points] = [[], [], []]
    no_decisions: List[str] = []
    for i, s in enumerate(series):
        # one run: a colour per quantity; several: a colour per run, the line style tells the quantity
        c1, c2 = (colors[i % len(colors)],) * 2 if many else (colors[2], colors[3])
        tag = f"{_short(s.name)}: " if many else ""  # the title carries the full names and options
        _line(axes[0], s.clean_auc, c1, "-", "o", f"{tag}clean test (true labels)")
        _line(axes[0], s.valid_auc, c2, "--", "s", f"{tag}valid ({s.valid_target} labels)")
        _line(axes[1], s.loss_noisy, colors[i % len(colors)] if many else colors[3], "-", ".", f"{tag}noisy positives")
        _line(axes[1], s.loss_clean, colors[i % len(colors)] if many else colors[2], ":", ".", f"{tag}clean positives")
        for ax_i, pts in ((0, s.clean_auc), (0, s.valid_auc), (1, s.loss_noisy), (1, s.loss_clean)):
            drawn[ax_i] += pts
        if s.precision:
            _line(axes[2], s.precision, c1, "-", ".", f"{tag}precision")
            _line(axes[2], s.recall, colors[i % len(colors)] if many else colors[0], "--", ".", f"{tag}recall")
            _line(axes[2], s.random_precision, "grey" if not many else c1, ":", None, f"{tag}random (noise share)")
            drawn[2] += s.precision + s.recall + s.random_precision
        elif s.loss_noisy or s.random_precision:  # ground truth, but the method drops / reweights nothing
            no_decisions.append(_short(s.name))
    for j, (ax, t, y) in enumerate(
        (
            (axes[0], "AUC per epoch", "AUC"),
            (axes[1], "loss of observed positives", "mean BCE"),
            (axes[2], "noise identification (what the method handles)", "share of positives"),
        )
    ):
        ax.set_title(t, fontsize=10)
        if not ax.lines:
            why = "nothing to draw\n(no ground truth in this data)"
            if j == 2 and no_decisions:
                why = f"{', '.join(no_decisions)}: handles no positives\n(nothing to identify)"
            plot_style.empty(ax, why)
            continue
        ax.set_xlabel("epoch")
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        plot_style.integer_ticks(ax, "x")
        plot_style.pad_short(ax, drawn[j], x_from=0.0, min_y_span=0.02 if j == 0 else 0.05)
        plot_style.legend_outside(ax, "below", ncol=2 if many else 1)
        if j == 2 and no_decisions:
            ax.text(
                0.99,
                0.01,
                f"not drawn: {', '.join(no_decisions)} (handles no positives)",
                ha="right",
                va="bottom",
                transform=ax.transAxes,
                fontsize=7,
                color="0.35",
            )
    for ax, spec in zip(axes, ("{:.4f}", "{:.3f}", "{:.3f}")):
        # one run: every short series gets its numbers; several: only lone points (labels would collide)
        plot_style.label_short(ax, spec, most=1 if many else plot_style.SHORT)
    fig.tight_layout()
    return fig


def _short(name: str, width: int = 24) -> str:
    """A run's method without its options, for legends (``observation form=... `` → ``observation``)."""
    head = name.split()[0] if name.split() else name
    return head if len(head) <= width else head[: width - 1] + "…"


def _line(ax: Any, points: Points, color: str, style: str, marker: Optional[str], label: str) -> None:
    if points:
        xs, ys = zip(*points)
        short = len(points) <= 3  # a lone point has no line to see: larger markers
        marker = ("o" if marker in (None, ".") else marker) if short else marker
        ax.plot(xs, ys, linestyle=style, marker=marker, color=color, label=label, markersize=6 if short else 4)

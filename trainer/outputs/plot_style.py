"""The conventions every denoisrec figure follows, so each reads at a glance.

Integer ticks on integer axes (epochs, steps, context values); short series (one to three points) drawn with
markers, their values written beside them and the axis padded around them instead of a flat ±0.1 band; legends
outside the data (beside or below the axes, kept in the saved file); a title on every figure; an empty panel
that says why it is empty.

Example::

    fig, ax = plt.subplots()
    ax.plot([1], [0.9412], marker="o", label="clean test")
    integer_ticks(ax, "x")
    pad_short(ax, [(1, 0.9412)], x_from=0)
    label_short(ax, "{:.4f}")
    legend_outside(ax, "below")
    save(fig, "curves.png", title="dlrm + bce")
"""

from __future__ import annotations

import math
from typing import Any, Iterable, List, Optional, Sequence, Tuple

SHORT = 3  # a series with at most this many points gets its values written beside them


def integer_ticks(ax: Any, axis: str = "x") -> None:
    """Ticks at whole numbers only on ``axis`` (``"x"`` or ``"y"``) of ``ax``."""
    from matplotlib.ticker import MaxNLocator

    # min_n_ticks=1: a narrow view (one point at step 10: 9.45-10.55) still gets its one whole-number tick
    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def all_integers(values: Iterable[Any]) -> bool:
    """Whether every value is a whole number (ints, or floats such as 3.0)."""
    vals = list(values)
    return bool(vals) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and float(v).is_integer()
        for v in vals
    )


def pad_short(
    ax: Any, points: Sequence[Tuple[float, float]], x_from: Optional[float] = None, min_y_span: float = 0.02
) -> None:
    """Axis limits that show few points sensibly.

    x: from ``x_from`` (e.g. epoch 0) when given, to the last x plus a quarter of a unit, so a single point
    sits inside the panel and not on a 1.9-2.1 axis. y: at least ``min_y_span`` around the data, so a flat
    or single-valued series is not blown up to fill the panel.

    Args:
        ax: the axes.
        points: every (x, y) drawn on ``ax``.
        x_from: the left end of the x axis (``None``: matplotlib's).
        min_y_span: the smallest y range shown.
    """
    if not points:
        return
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    lo = x_from if x_from is not None else min(xs) - 0.25
    hi = max(xs) + 0.35 if max(xs) > lo else lo + 1  # room for the values written beside the last points
    ax.set_xlim(lo, hi)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < min_y_span:
        mid = (y0 + y1) / 2
        ax.set_ylim(mid - min_y_span / 2, mid + min_y_span / 2)
    else:
        pad = 0.1 * (y1 - y0)
        ax.set_ylim(y0 - pad, y1 + pad)


def label_short(ax: Any, fmt: str = "{:.4f}", most: int = SHORT) -> None:
    """Write each point's value beside it on every line of ``ax`` with at most ``most`` points, in the
    line's colour: one or two dots are read by their numbers, not against the axis.
    """
    for line in list(ax.lines):
        xs, ys = line.get_xdata(), line.get_ydata()
        if not 0 < len(xs) <= most:
            continue
        for x, y in zip(xs, ys):
            ax.annotate(
                fmt.format(float(y)),
                (x, y),
                textcoords="offset points",
                xytext=(5, 3),
                fontsize=7,
                color=line.get_color(),
            )


def legend_outside(
    ax: Any, where: str = "right", handles: Optional[List[Any]] = None, fontsize: float = 7, ncol: int = 1
) -> Any:
    """A legend outside ``ax``'s data area: to its ``"right"`` or ``"below"`` it (under the x label).

    Returns:
        The legend, or ``None`` when there is nothing to label.
    """
    if handles is None and not ax.get_legend_handles_labels()[0]:
        return None
    kw: dict = {"fontsize": fontsize, "ncol": ncol, "frameon": False}
    if handles is not None:
        kw["handles"] = handles
    if where == "below":
        return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), borderaxespad=0.0, **kw)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)


def empty(ax: Any, why: str) -> None:
    """An empty panel that says why it is empty (no ticks to misread)."""
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def save(fig: Any, path: str, title: str, dpi: int = 100) -> str:
    """Give ``fig`` its title and save it with everything outside the axes (legends) kept; return ``path``."""
    fig.suptitle(title, fontsize=10, y=1.0, va="bottom")  # above the panels' own titles, kept by the tight box
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path

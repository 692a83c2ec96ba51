"""Progress on rank 0: a tqdm bar (samples/s, loss, lr, denoiser statistics) or plain log lines.

``mode``: ``bar`` (tqdm), ``log`` (one line every ``log_every`` steps, for files and CI), ``none``, or ``auto``
(``bar`` when stderr is a terminal, else ``log``). :class:`Progress` is the console's
:class:`~denoisrec.trainer.outputs.loggers.MetricLogger` (``log_dict(values, step, epoch=...)``). Messages go through
:meth:`Progress.write`, so they never tear the bar. The bar moves every step (:meth:`Progress.advance`, no host sync)
and its postfix stays short (:data:`BAR_KEYS`: loss, samples/s, and the denoiser's noise precision / recall when
known); every value still goes to ``metrics.jsonl`` and TensorBoard.

Example::

    with Progress(total=294, initial=0, enabled=env.is_main, mode="auto") as p:
        p.update(step, {"loss": 0.61, "samples/s": 62000.0, "lr": 1e-3})
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Mapping, Optional

MODES = ("auto", "bar", "log", "none")
BAR_KEYS = {"loss": "loss", "samples/s": "samples/s", "truth_precision": "noise prec", "truth_recall": "rec"}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def log_fields(values: Dict[str, Any]) -> str:
    """A log line's fields: loss, samples/s, lr, grad norm, then the ground-truth diagnostics in brief
    (``noise prec/rec 0.73/0.72 (random 0.35) pos loss noisy/clean 2.46/0.32``); the denoiser's own
    statistics are in ``metrics.jsonl`` and TensorBoard.
    """
    parts = [f"{k} {_fmt(values[k])}" for k in ("loss", "samples/s", "lr", "grad_norm") if k in values]
    if "truth_precision" in values:  # absent when the method handled nothing (BCE)
        pr = "/".join(_fmt(values.get(k, float("nan"))) for k in ("truth_precision", "truth_recall"))
        rnd = f" (random {_fmt(values['truth_random_precision'])})" if "truth_random_precision" in values else ""
        parts.append(f"noise prec/rec {pr}{rnd}")
    if "truth_loss_noisy_pos" in values and "truth_loss_clean_pos" in values:
        parts.append(
            f"pos loss noisy/clean {_fmt(values['truth_loss_noisy_pos'])}/{_fmt(values['truth_loss_clean_pos'])}"
        )
    return " ".join(parts)


def clock(seconds: float) -> str:
    """``75.2`` → ``1:15``; ``3725`` → ``1:02:05``."""
    s = int(round(max(seconds, 0.0)))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class Progress:
    """Training progress on stderr: a live bar on a terminal, periodic log lines otherwise, or nothing."""

    def __init__(self, total: int, initial: int, enabled: bool, mode: str = "auto", desc: str = "train") -> None:
        if mode not in MODES:
            raise ValueError(f"run.progress={mode!r}: expected one of {MODES}")
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.enabled, self.mode, self.total = enabled, mode, total
        self._bar: Optional[Any] = None
        self._last = initial
        self._initial, self._t0 = initial, time.monotonic()  # for a log line's elapsed time and ETA
        if enabled and mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)

    def update(self, step: int, values: Dict[str, Any], epoch: Optional[int] = None) -> None:
        """Report progress up to ``step`` (1-based count of steps done) with the window's ``values``."""
        if not self.enabled:
            return
        if self._bar is not None:
            shown = {k: v for k, v in values.items() if k != "truth_recall" or "truth_precision" in values}
            self._bar.set_postfix({short: _fmt(shown[k]) for k, short in BAR_KEYS.items() if k in shown}, refresh=False)
            self._bar.update(step - self._last)
        elif self.mode == "log":
            head = f"step {step:>6}/{self.total}" + (f" epoch {epoch}" if epoch is not None else "")
            print(head + " " + log_fields(values) + " | " + self.timing(step), flush=True)
        self._last = step

    def timing(self, step: int, now: Optional[float] = None) -> str:
        """``elapsed 1:05 ETA 2:10``: this session's time so far, and the rest at its mean pace since the start."""
        elapsed = (time.monotonic() if now is None else now) - self._t0
        done = step - self._initial
        eta = f" ETA {clock(elapsed / done * (self.total - step))}" if done > 0 else ""
        return f"elapsed {clock(elapsed)}{eta}"

    def log(self, name: str, data: Any, step: int, kind: str = "train") -> None:
        self.log_dict({name: data}, step, kind)

    def log_dict(self, payload: Mapping[str, Any], step: int, kind: str = "train", epoch: Optional[int] = None) -> None:
        """The :class:`~denoisrec.trainer.outputs.loggers.MetricLogger` call: a training window moves the bar
        (or prints a log line); other kinds are summed up by their own console lines.
        """
        if kind == "train":
            self.update(step, dict(payload), epoch=epoch)

    def advance(self, step: int) -> None:
        """Move the bar to ``step`` between log steps (the postfix keeps the last window's values)."""
        if self.enabled and self._bar is not None:
            self._bar.update(step - self._last)
            self._last = step

    def write(self, msg: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(msg)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

"""Post-hoc calibration: Platt scaling of a trained model's logits, fitted on the validation split.

Denoisers that truncate or relabel the loss (T-CE, DART, LCD, DeCA) move the model's scores away from the
observed click rate while keeping (or improving) their ranking. A monotone map of the logit fitted on the
observed validation labels restores calibrated probabilities without touching the ranking:

    p_cal = σ(a·z + b),  (a, b) = argmin  −Σ_i [y_i log σ(a z_i + b) + (1 − y_i) log(1 − σ(a z_i + b))]

(Platt, 1999). Why Platt and not isotonic regression: with ``a > 0`` it is strictly increasing, so AUC and
GAUC are unchanged exactly (isotonic is piecewise constant and creates ties that change both); two numbers
fit stably on any validation size and export as two constants in the serving module; and the
miscalibration the denoisers cause is mostly a shift and a scale of the logit. Its limit: it cannot fix a
non-sigmoid shape of the reliability curve (isotonic can).

The fit is Newton's method with step halving on the two parameters in float64 (the problem is convex);
``a`` must come out positive (a fit with ``a ≤ 0`` means the model ranks no better than chance on validation, an error).

Example::

    c = fit_platt(valid_logits, valid_labels)     # Platt(a=0.61, b=-0.35, ...)
    c.save("runs/x/calibrator.json")
    load_calibrator("runs/x/calibrator.json").apply(test_logits)   # calibrated logits a·z + b
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict

import numpy as np
from scipy.special import expit

METHOD = "platt"


@dataclass
class Platt:
    """``σ(a·z + b)`` of a logit ``z``; ``info`` records what it was fitted on."""

    a: float
    b: float
    info: Dict[str, Any] = field(default_factory=dict)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated logits ``a·z + b`` (same dtype family as the input, float64 for float64)."""
        z = np.asarray(logits)
        return (self.a * z.astype(np.float64) + self.b).astype(z.dtype if z.dtype.kind == "f" else np.float64)

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"method": METHOD, **asdict(self)}, f, indent=2)


def fit_platt(logits: np.ndarray, labels: np.ndarray, iters: int = 50, tol: float = 1e-10) -> Platt:
    """Fit ``(a, b)`` by Newton's method on the mean logloss of ``σ(a·z + b)`` (see the module docstring)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.size == 0 or z.size != y.size:
        raise ValueError(f"calibration: need as many labels as logits, got {y.size} and {z.size} (and at least 1)")
    if y.min() == y.max():
        raise ValueError("calibration: the validation labels have one class only; Platt scaling needs both")
    x = np.stack([z, np.ones_like(z)], axis=1)  # [N, 2]

    def loss(t: np.ndarray) -> float:
        s = x @ t
        return float(np.mean(np.logaddexp(0.0, s) - y * s))  # mean BCE of σ(s), stable for any |s|

    theta = np.array([1.0, 0.0])
    current = loss(theta)
    for _ in range(iters):
        p = expit(x @ theta)
        grad = x.T @ (p - y) / z.size
        hess = (x * (p * (1 - p))[:, None]).T @ x / z.size + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        # damped Newton: halve the step until the loss does not rise (saturated logits, e.g. of a T-CE model,
        # make the full step overshoot)
        scale = 1.0
        while scale > 1e-10 and loss(theta - scale * step) > current:
            scale *= 0.5
        theta = theta - scale * step
        new = loss(theta)
        if np.abs(scale * step).max() < tol or current - new < tol * 1e-3:
            current = new
            break
        current = new
    a, b = float(theta[0]), float(theta[1])
    if not np.isfinite([a, b]).all() or a <= 0:
        raise ValueError(
            f"calibration: the Platt fit gave a={a:.4g}; the model does not rank the validation "
            "rows better than chance, so a monotone calibrator cannot be fitted"
        )
    return Platt(a, b, {"rows": int(z.size), "positive_rate": float(y.mean())})


def load_calibrator(path: str) -> Platt:
    """A calibrator written by :meth:`Platt.save` (``denoisrec export --calibrate``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no calibrator file (written by denoisrec export --calibrate platt)")
    try:
        with open(path) as f:
            d = json.load(f)
        if d.get("method") != METHOD:
            raise ValueError(f"method {d.get('method')!r}, expected {METHOD!r}")
        return Platt(float(d["a"]), float(d["b"]), dict(d.get("info", {})))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a calibrator file ({e})") from e

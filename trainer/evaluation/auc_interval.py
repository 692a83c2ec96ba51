"""Confidence intervals for AUC: DeLong's variance, for one scorer and for the paired difference of two.

The paired difference is of two scorers on the same rows.

DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated receiver operating
characteristic curves: a nonparametric approach", *Biometrics* 44(3), 837-845, eq. (2)-(4): with ``m`` positives
``X_i`` and ``n`` negatives ``Y_j`` and ``ψ(x, y) = 1[x > y] + ½·1[x = y]``, the structural components are

    V10_i = (1/n) Σ_j ψ(X_i, Y_j),      V01_j = (1/m) Σ_i ψ(X_i, Y_j),      AUC = mean(V10) = mean(V01)

    Var(AUC) = S10 / m + S01 / n,        S10, S01: the sample variances (ddof 1) of V10 and V01,

and for scorers ``a`` and ``b`` on the same rows ``Var(AUC_a − AUC_b) = Var_a + Var_b − 2·Cov_ab`` with the
covariances of the components. The components come from mid-ranks in ``O(N log N)`` (Sun & Xu 2014, "Fast
implementation of DeLong's algorithm", *IEEE Signal Processing Letters* 21(11), 1389-1393):
``V10_i = (R_i − R^X_i) / n`` and ``V01_j = 1 − (R_j − R^Y_j) / m`` with ``R`` the mid-rank among all rows and
``R^X`` / ``R^Y`` among the positives / negatives. The interval is the normal one, ``AUC ± z·√Var``, clipped to
``[0, 1]``.

Example::

    iv = auc_interval(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    iv["auc"], iv["lo"], iv["hi"]          # 0.75 and its 95% interval
    d = paired_difference(labels, scores_a, scores_b)   # d["diff"] ± d["half_width"]
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np
from scipy.stats import norm, rankdata


def _components(labels: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """DeLong's ``V10`` (per positive) and ``V01`` (per negative) of one scorer."""
    pos = np.asarray(labels) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    x, y = s[pos], s[~pos]
    m, n = x.size, y.size
    r_all = rankdata(np.concatenate([x, y]))
    v10 = (r_all[:m] - rankdata(x)) / n
    v01 = 1.0 - (r_all[m:] - rankdata(y)) / m
    return v10, v01


def z_value(level: float) -> float:
    """The two-sided normal quantile of a ``level`` interval (1.96 for 0.95)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level {level}: expected a number in (0, 1)")
    return float(norm.ppf(0.5 + level / 2.0))


def auc_interval(labels: np.ndarray, scores: np.ndarray, level: float = 0.95) -> Dict[str, float]:
    """AUC with DeLong's standard error and its ``level`` normal interval: ``{auc, se, lo, hi, level,
    positives, negatives}``; NaN values when a class has fewer than two rows.
    """
    pos = int((np.asarray(labels) > 0.5).sum())
    neg = int(np.asarray(labels).size) - pos
    out = {"auc": math.nan, "se": math.nan, "lo": math.nan, "hi": math.nan, "level": level}
    out.update(positives=pos, negatives=neg)
    if pos < 2 or neg < 2:
        return out
    v10, v01 = _components(labels, scores)
    a = float(v10.mean())
    se = math.sqrt(float(v10.var(ddof=1)) / pos + float(v01.var(ddof=1)) / neg)
    z = z_value(level)
    out.update(auc=a, se=se, lo=max(0.0, a - z * se), hi=min(1.0, a + z * se))
    return out


def paired_difference(
    labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95
) -> Dict[str, float]:
    """``AUC_a − AUC_b`` of two scorers of the same rows, with DeLong's paired standard error and the half
    width of its ``level`` interval: ``{diff, se, half_width, level}`` (NaN when a class has under two rows).
    """
    pos = int((np.asarray(labels) > 0.5).sum())
    neg = int(np.asarray(labels).size) - pos
    if pos < 2 or neg < 2:
        return {"diff": math.nan, "se": math.nan, "half_width": math.nan, "level": level}
    a10, a01 = _components(labels, scores_a)
    b10, b01 = _components(labels, scores_b)
    s10 = np.cov(np.stack([a10, b10]), ddof=1)
    s01 = np.cov(np.stack([a01, b01]), ddof=1)
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / pos + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / neg
    se = math.sqrt(max(float(var), 0.0))
    return {"diff": float(a10.mean() - b10.mean()), "se": se, "half_width": z_value(level) * se, "level": level}

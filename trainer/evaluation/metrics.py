"""Ranking and calibration metrics on gathered predictions: AUC, GAUC, logloss, RealImp, calibration, NE, ECE.

Calibration is the mean predicted over the observed rate; NE the normalised entropy.

The ranking metrics are exact (no binning): AUC is the Mann-Whitney statistic with average ranks for tied
scores, so the result does not depend on the order in which ranks' predictions were gathered. ECE bins the
predicted probabilities into :data:`ECE_BINS` equal-width bins.

Example::

    auc(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.4, 0.3]))  # 1.0
"""

from __future__ import annotations

import math
from typing import Dict

import numpy as np
from scipy.stats import rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    labels = np.asarray(labels) > 0.5
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Group AUC: per-group AUC weighted by the group's number of impressions; groups with one class are
    skipped. NaN when no group has both classes.
    """
    labels = np.asarray(labels) > 0.5
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups)
    if labels.size == 0:
        return float("nan")
    # The work arrays are released as soon as they are used: on rank 0 this is evaluation's peak memory.
    order = np.lexsort((scores, groups))
    g, s, y = groups[order], scores[order], labels[order]
    del order
    n = g.size
    new_group = np.r_[True, g[1:] != g[:-1]]
    del g
    group_idx = np.cumsum(new_group)
    group_idx -= 1
    group_start = np.flatnonzero(new_group)
    pos = np.arange(n)
    pos -= group_start[group_idx]
    pos_in_group = pos + 1.0  # 1-based rank within the group
    del pos
    # Average ranks over runs of equal (group, score).
    new_tie = np.r_[True, s[1:] != s[:-1]]
    new_tie |= new_group
    del s, new_group
    tie_idx = np.cumsum(new_tie)
    tie_idx -= 1
    del new_tie
    tie_sum = np.bincount(tie_idx, weights=pos_in_group)
    del pos_in_group
    tie_cnt = np.bincount(tie_idx)
    ranks = (tie_sum / tie_cnt)[tie_idx]
    del tie_idx, tie_sum, tie_cnt
    n_groups = group_start.size
    n_pos = np.bincount(group_idx, weights=y, minlength=n_groups)
    n_all = np.bincount(group_idx, minlength=n_groups).astype(np.float64)
    n_neg = n_all - n_pos
    rank_pos = np.bincount(group_idx, weights=ranks * y, minlength=n_groups)
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return float("nan")
    per_group = (rank_pos[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2.0) / (n_pos[ok] * n_neg[ok])
    return float(np.sum(per_group * n_all[ok]) / np.sum(n_all[ok]))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``probs`` (clipped to [eps, 1 - eps])."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.size == 0:
        return float("nan")
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean predicted probability over the observed positive rate, ``Σ p_i / Σ y_i`` (1 is calibrated on
    average; above 1 over-predicts). NaN without positives.
    """
    labels = np.asarray(labels, dtype=np.float64)
    pos = labels.sum()
    if labels.size == 0 or pos == 0:
        return float("nan")
    return float(np.asarray(probs, dtype=np.float64).sum() / pos)


def normalized_entropy(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Normalised entropy: the logloss over the entropy of the background rate ``r = mean(y)``.

    He et al., 2014, "Practical lessons from predicting clicks on ads at Facebook",

        NE = −(1/N) Σ_i [y_i log p_i + (1 − y_i) log(1 − p_i)] / −[r log r + (1 − r) log(1 − r)].

    Below 1 beats predicting the base rate for every row. NaN when ``r`` is 0 or 1.
    """
    labels = np.asarray(labels, dtype=np.float64)
    if labels.size == 0:
        return float("nan")
    r = labels.mean()
    if r <= 0.0 or r >= 1.0:
        return float("nan")
    return logloss(labels, probs, eps) / float(-(r * np.log(r) + (1 - r) * np.log(1 - r)))


ECE_BINS = 10


def ece(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-width probability bins (Naeini et al., 2015):
    ``ECE = Σ_b (n_b / N) |mean(y)_b − mean(p)_b|``; bin ``b`` holds ``b/bins ≤ p < (b+1)/bins`` (the last
    bin includes 1).
    """
    labels = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if labels.size == 0 or not np.isfinite(p).all():  # a diverged model's scores have no calibration
        return float("nan")
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    gap = np.abs(np.bincount(idx, weights=labels, minlength=bins) - np.bincount(idx, weights=p, minlength=bins))
    return float(gap.sum() / labels.size)  # Σ_b (n_b/N)·|Σy/n_b − Σp/n_b| = Σ_b |Σy − Σp| / N


def real_imp(auc_new: float, auc_base: float) -> float:
    """RealImp = (AUC_new − 0.5) / (AUC_base − 0.5) − 1 (relative improvement over random)."""
    if math.isnan(auc_new) or math.isnan(auc_base) or auc_base == 0.5:
        return float("nan")
    return (auc_new - 0.5) / (auc_base - 0.5) - 1.0


def all_metrics(labels: np.ndarray, logits: np.ndarray, groups: np.ndarray) -> Dict[str, float]:
    """Every metric of one split from its labels, logits and group ids (GAUC's groups)."""
    probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    return {
        "auc": auc(labels, probs),
        "gauc": gauc(labels, probs, groups),
        "logloss": logloss(labels, probs),
        "calibration": calibration(labels, probs),
        "ne": normalized_entropy(labels, probs),
        "ece": ece(labels, probs),
        "rows": int(np.asarray(labels).size),
        "positive_rate": float(np.mean(np.asarray(labels) > 0.5)) if np.asarray(labels).size else float("nan"),
    }

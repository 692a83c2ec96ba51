"""Metrics against scikit-learn on random predictions with ties."""

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from denoisrec.trainer.evaluation.metrics import auc, gauc, logloss, real_imp


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_logloss_match_sklearn(seed: int) -> None:
    r = np.random.default_rng(seed)
    y = r.integers(0, 2, 3000)
    s = np.round(r.random(3000) * 0.5 + 0.4 * y, 2)  # rounding makes ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    p = np.clip(r.random(3000), 0.01, 0.99)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_gauc_is_impression_weighted_per_user_auc(seed: int) -> None:
    r = np.random.default_rng(seed)
    n = 4000
    g = r.integers(0, 60, n)
    y = r.integers(0, 2, n)
    y[g == 7] = 1  # a one-class user: skipped
    s = np.round(r.random(n) + 0.3 * y + 0.01 * g, 2)
    num = den = 0.0
    for u in np.unique(g):
        m = g == u
        if 0 < y[m].sum() < m.sum():
            num += roc_auc_score(y[m], s[m]) * m.sum()
            den += m.sum()
    assert gauc(y, s, g) == pytest.approx(num / den, abs=1e-12)
    perm = r.permutation(n)
    assert gauc(y[perm], s[perm], g[perm]) == pytest.approx(gauc(y, s, g), abs=1e-12)


def test_degenerate_inputs_give_nan_and_realimp() -> None:
    assert np.isnan(auc(np.ones(4), np.arange(4)))
    assert np.isnan(gauc(np.ones(4), np.arange(4), np.zeros(4)))
    assert real_imp(0.8, 0.75) == pytest.approx(0.3 / 0.25 - 1)


def test_calibration_ne_and_ece_against_hand_and_loop_references() -> None:
    from denoisrec.trainer.evaluation.metrics import all_metrics, calibration, ece, normalized_entropy

    # Hand case: y = (1, 0, 0, 1), p = (0.9, 0.2, 0.05, 0.6).
    y = np.array([1, 0, 0, 1])
    p = np.array([0.9, 0.2, 0.05, 0.6])
    assert calibration(y, p) == pytest.approx(1.75 / 2)
    ll = -(np.log(0.9) + np.log(0.8) + np.log(0.95) + np.log(0.6)) / 4
    assert normalized_entropy(y, p) == pytest.approx(ll / np.log(2))  # base rate 0.5: entropy ln 2
    # 10 bins: 0.05 → bin 0 (y 0), 0.2 → bin 2 (y 0), 0.6 → bin 6 (y 1), 0.9 → bin 9 (y 1)
    assert ece(y, p) == pytest.approx((0.05 + 0.2 + 0.4 + 0.1) / 4)
    # Two rows in one bin: |mean y − mean p| weighted by the bin's share.
    assert ece(np.array([1, 0]), np.array([0.31, 0.35])) == pytest.approx(abs(0.5 - 0.33))
    assert np.isnan(ece(np.array([1, 0]), np.array([0.3, np.nan])))  # diverged scores: no ECE, no crash
    assert np.isnan(calibration(np.zeros(3), p[:3])) and np.isnan(normalized_entropy(np.ones(3), p[:3]))

    # Random case against a per-bin loop and sklearn's logloss; a perfectly calibrated predictor has NE < 1.
    r = np.random.default_rng(0)
    p = r.random(5000)
    y = (r.random(5000) < p).astype(np.int64)
    want = (
        sum(
            abs(y[m].mean() - p[m].mean()) * m.sum()
            for b in range(10)
            if (m := (np.minimum(np.floor(p * 10), 9) == b)).any()
        )
        / y.size
    )
    assert ece(y, p) == pytest.approx(want, abs=1e-12)
    rate = y.mean()
    assert normalized_entropy(y, p) == pytest.approx(
        log_loss(y, p) / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)), rel=1e-9
    )
    assert normalized_entropy(y, p) < 0.9 and ece(y, p) < 0.03
    m = all_metrics(y, np.log(p / (1 - p)), np.zeros(y.size))
    assert {"auc", "gauc", "logloss", "calibration", "ne", "ece", "rows", "positive_rate"} <= set(m)
    assert m["calibration"] == pytest.approx(p.sum() / y.sum(), rel=1e-9)

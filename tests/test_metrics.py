"""Metrics against scikit-learn on random predictions with ties."""

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from denoisrec.trainer.metrics import auc, gauc, logloss, real_imp


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

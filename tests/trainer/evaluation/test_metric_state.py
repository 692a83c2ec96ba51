"""Evaluation as metric state: exact metrics on 1, 2 and 3 real gloo ranks (uneven shares, one empty) equal the
all-gather evaluation it replaces and one process scoring every row, bit for bit; bad updates fail clearly.
"""

import sys

import numpy as np
import pytest
import torch
from conftest import DIST_DIR, torchrun

from denoisrec.trainer.evaluation.metric_state import MetricState
from denoisrec.trainer.evaluation.metrics import all_metrics


@pytest.mark.dist
def test_metric_state_on_three_and_two_ranks_equals_all_gather_and_one_process() -> None:
    proc = torchrun("metric_state_ranks.py", 3, [])
    assert "metric state OK on 3 rank(s) and a 2-rank subgroup" in proc.stdout


def test_metric_state_on_one_rank_equals_all_gather_and_one_process() -> None:
    sys.path.insert(0, str(DIST_DIR))
    try:
        import metric_state_ranks as driver
    finally:
        sys.path.remove(str(DIST_DIR))
    driver.check_evaluate(0, 1)
    driver.check_state(0, 1)


def test_one_process_state_equals_metrics_of_all_rows() -> None:
    r = np.random.default_rng(3)
    z = np.round(r.normal(size=1000), 1).astype(np.float32)
    y = (r.random(1000) < 0.4).astype(np.float32)
    g = r.integers(0, 9, 1000)
    state = MetricState()
    for a in range(0, 1000, 300):
        state.update(
            torch.from_numpy(z[a : a + 300]).to(torch.bfloat16).float(), {"observed": y[a : a + 300]}, g[a : a + 300]
        )
    want = all_metrics(y, torch.from_numpy(z).to(torch.bfloat16).double().numpy(), g)
    assert state.rows == 1000 and state.compute()["observed"] == want
    assert state.rows == 0 and np.isnan(state.compute()["observed"]["auc"])  # compute ended the pass


def test_bad_updates_fail_with_a_clear_error() -> None:
    state = MetricState(("observed", "clean"))
    with pytest.raises(ValueError, match=r"no labels for target\(s\) \['clean'\]"):
        state.update(np.zeros(3, np.float32), {"observed": np.zeros(3)})
    with pytest.raises(ValueError, match="3 logits but 2 clean labels"):
        state.update(np.zeros(3, np.float32), {"observed": np.zeros(3), "clean": np.zeros(2)})
    with pytest.raises(ValueError, match="float64 logits would be rounded"):
        state.update(np.zeros(3), {"observed": np.zeros(3), "clean": np.zeros(3)})
    with pytest.raises(ValueError, match="distinct target names"):
        MetricState(("observed", "observed"))

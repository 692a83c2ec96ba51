"""DeCA(p)'s prior validation AUC (``trainer/denoising/prior.py:prior_valid_auc``) through ``MetricState`` (gather to
rank 0, scalar broadcast): the same value on every rank as the all-gather AUC it replaces and as one process
scoring every row, on 1 and 3 ranks with uneven shares (driver: ``tests/dist/prior_ranks.py``).
"""

import numpy as np
import pytest
from conftest import launch
from prior_ranks import aucs, rows

from denoisrec.trainer.evaluation.metrics import auc


@pytest.mark.parametrize("world", [1, 3])
def test_prior_valid_auc_equals_the_all_gather_auc_on_every_rank(world: int) -> None:
    r = rows(0)
    one_process = auc(r["observed"], 1.0 / (1.0 + np.exp(-r["logits"].astype(np.float64))))
    assert 0.6 < one_process < 0.95  # a real ranking, not a degenerate 0.5 or NaN
    for rank, (new, old, eval_mode, training_after) in enumerate(launch(aucs, world, 0)):
        assert new == old == one_process, (rank, new, old, one_process)
        assert eval_mode and training_after, rank

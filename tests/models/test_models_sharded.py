"""Every model sharded on 2 gloo ranks (one launch): forward equals the unsharded model, one step
trains every table and dense tensor, the fused first-order layout starts and steps as the separate one
(tests/dist/models_sharded.py does the checks).
"""

from pathlib import Path

import pytest
from conftest import launch
from models_sharded import launched


@pytest.mark.dist
def test_every_model_sharded_on_two_ranks(tiny_data: Path) -> None:
    report, other = launch(launched, 2, str(tiny_data))
    assert other == []  # rank 1 ran every case too (a failed check there fails the launch)
    assert {r["model"] for r in report} == {"dlrm", "dcnv2", "deepfm", "fm", "fm/table", "widedeep"}
    assert {r["sharding"] for r in report} == {"table_wise", "column_wise", "data_parallel", "fused-vs-table"}
    by = {(r["model"], r["sharding"]): r for r in report}
    assert by[("dlrm", "table_wise")]["tables"] == 17  # one table per sparse feature of the tiny preset
    assert by[("fm", "table_wise")]["tables"] == 17  # the first-order rows inside the embedding tables
    assert by[("fm/table", "table_wise")]["tables"] == 2 * 17  # + the first-order tables of their own
    assert by[("widedeep", "data_parallel")]["tables"] == 17
    assert all(r["max_abs_diff"] < 1e-5 for r in report), [r for r in report if r["max_abs_diff"] >= 1e-5]
    # One Adagrad step (fused sparse + dense) from the same weights: the fused layout trains as the old one.
    assert by[("deepfm", "fused-vs-table")]["max_abs_diff"] < 1e-6, by[("deepfm", "fused-vs-table")]

"""Every model sharded on 2 gloo ranks (one torchrun launch): forward equals the unsharded model, one step
trains every table and dense tensor (tests/dist/models_sharded.py does the checks)."""

import json
from pathlib import Path

import pytest

from conftest import torchrun


@pytest.mark.dist
def test_every_model_sharded_on_two_ranks(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    torchrun("models_sharded.py", 2, ["--data", str(tiny_data), "--out", str(out)])
    report = json.loads(out.read_text())
    assert {r["model"] for r in report} == {"dlrm", "dcnv2", "deepfm", "fm", "widedeep"}
    assert {r["sharding"] for r in report} == {"table_wise", "column_wise", "data_parallel"}
    by = {(r["model"], r["sharding"]): r for r in report}
    assert by[("dlrm", "table_wise")]["tables"] == 17          # one table per sparse feature of the tiny preset
    assert by[("fm", "table_wise")]["tables"] == 2 * 17        # + the first-order tables
    assert by[("widedeep", "data_parallel")]["tables"] == 2 * 17
    assert all(r["max_abs_diff"] < 1e-5 for r in report)

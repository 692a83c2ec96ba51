"""Row accounting with real gloo processes: for 1, 2 and 3 ranks, the rows read in an epoch, by id, are the
split's rows exactly once, the ranks take the same number of steps, the epochs differ in order, and the gathered
per-epoch report (the run summary's) says so.
"""

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from conftest import launch
from reader_accounting import launched


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,003 training rows: files of 2,500, 2,500 and 3 rows, row groups of 500 (and one of 3)."""
    from denoisrec.trainer.datasets.synthetic import PRESETS, generate, scaled

    out = tmp_path_factory.mktemp("odd")
    generate(str(out), scaled(PRESETS["tiny"], 5003), seed=1)
    return out


@pytest.mark.dist
@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_row_read_exactly_once_per_epoch(odd_data: Path, world: int) -> None:
    epochs = 2
    ranks = launch(launched, world, str(odd_data), 700, epochs)
    split_ids = np.sort(ds.dataset(odd_data / "train").to_table(columns=["row_id"]).column("row_id").to_numpy())
    assert len(split_ids) == 5003 and all(r["total_rows"] == 5003 for r in ranks)
    orders = []
    for e in range(epochs):
        ids = np.concatenate([r["ids"][e] for r in ranks])
        assert np.array_equal(np.sort(ids), split_ids), f"epoch {e}: duplicated or missing rows"
        assert len({r["steps"][e] for r in ranks}) == 1, f"epoch {e}: ranks took different step counts"
        assert ranks[0]["steps"][e] == -(-max(len(r["ids"][e]) for r in ranks) // 700)
        for r in ranks:  # every rank gathered the same report: its rows, per rank, complete
            summary = r["rows_read"][e]
            assert summary["total"] == 5003 and summary["complete"], summary
            assert summary["per_rank"] == [len(q["ids"][e]) for q in ranks], summary
        orders.append(ids)
    assert not np.array_equal(orders[0], orders[1]), "the epochs were read in the same order"
    assert "rows read, epoch 1: 5,003 of 5,003" in ranks[0]["printed"]

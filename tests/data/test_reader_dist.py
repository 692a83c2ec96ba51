"""Row accounting with real torchrun processes: for 1, 2 and 3 ranks, the rows read in an epoch, by id, are the
split's rows exactly once, and the gathered per-epoch report (the run summary's) says so."""

from pathlib import Path

import pytest

from conftest import torchrun


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
    proc = torchrun("reader_accounting.py", world, ["--data", str(odd_data), "--batch-size", "700"])
    assert f"ACCOUNTING OK world={world} rows=5003" in proc.stdout
    assert "rows read, epoch 1: 5,003 of 5,003" in proc.stdout

"""The training feed across epochs: same batches with and without look-ahead, the next epoch read ahead,
exact per-epoch accounting, resume mid-epoch, and nothing left running when it is closed.
"""

import threading
from pathlib import Path
from typing import List

import pytest

from denoisrec.trainer.data.epochs import epoch_batches
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema


def _reader(tiny_data: Path, rank: int = 0, world: int = 3) -> ParquetBatchReader:
    schema = DataSchema.load(str(tiny_data))
    return ParquetBatchReader(
        str(tiny_data / "train"),
        schema,
        700,
        rank,
        world,
        shuffle=True,
        seed=1,
        shuffle_buffer=1500,
        prefetch=2,
        block_rows=300,
    )


def _ids(batches) -> List[List[int]]:  # type: ignore[no-untyped-def]
    return [b.sample_ids.tolist() for b in batches]


def _ahead_threads() -> List[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("denoisrec-epoch-")]


@pytest.mark.parametrize("start", [0, 4])
def test_lookahead_changes_no_batch_and_accounts_every_epoch(tiny_data: Path, start: int) -> None:
    r = _reader(tiny_data)
    spe = len(r)  # 2,000 rows per rank, batches of 700: 3 steps
    total = 3 * spe
    plain, ahead = [], []
    got_plain = _ids(epoch_batches(r, start, total, plain, lookahead=0))
    got_ahead = _ids(epoch_batches(r, start, total, ahead, lookahead=2))
    assert got_plain == got_ahead and len(got_ahead) == total - start
    assert [rep.epoch for rep in ahead] == [e for e in range(3) if (e + 1) * spe > start]
    assert all(rep.complete for rep in ahead)  # a resumed epoch counts the batches it skipped as skipped
    assert ahead[0].batches_skipped == start % spe and ahead[0].batches_read == spe - start % spe
    for rep in ahead[-2:]:
        assert rep.rows_read + rep.rows_skipped == rep.planned_rows and rep.batches_read + rep.batches_skipped == spe
    assert r.epoch == 2
    # and the epochs are those of reading each epoch on its own
    for e in range(start // spe, 3):
        r.set_epoch(e)
        whole = _ids(r)
        mine = got_ahead[max(0, e * spe - start) : (e + 1) * spe - start]
        assert whole[len(whole) - len(mine) :] == mine


def test_next_epoch_is_read_while_the_current_one_ends(tiny_data: Path) -> None:
    r = _reader(tiny_data)
    spe = len(r)
    reports: list = []
    feed = epoch_batches(r, 0, 2 * spe, reports, lookahead=1)
    seen = []
    for _ in feed:
        seen.append(_ahead_threads())
    assert seen[spe - 2] == ["denoisrec-epoch-1"]  # opened with one step of epoch 0 left
    assert all(not s for s in seen[: spe - 2])
    assert [rep.epoch for rep in reports] == [0, 1] and all(rep.complete for rep in reports)
    assert not _ahead_threads()


def test_closing_during_lookahead_stops_it_and_reports_only_what_was_trained(tiny_data: Path) -> None:
    r = _reader(tiny_data)
    spe = len(r)
    reports: list = []
    feed = epoch_batches(r, 0, 3 * spe, reports, lookahead=2)
    for i, _ in enumerate(feed):
        if i == spe - 1:  # the last batch of epoch 0: epoch 1 is being read ahead
            assert _ahead_threads()
            break
    feed.close()
    assert [rep.epoch for rep in reports] == [0] and reports[0].batches_read == spe
    for t in threading.enumerate():
        if t.name.startswith("denoisrec-"):
            t.join(timeout=10)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("denoisrec-")]


def test_budget_ending_inside_an_epoch_reports_a_partial_epoch(tiny_data: Path) -> None:
    r = _reader(tiny_data, rank=2)
    spe = len(r)
    reports: list = []
    n = len(list(epoch_batches(r, 0, spe + 1, reports, lookahead=5)))
    assert n == spe + 1 and [rep.epoch for rep in reports] == [0, 1]
    assert reports[0].complete and not reports[1].complete and reports[1].batches_read == 1
    assert not _ahead_threads()

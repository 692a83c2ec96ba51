"""The Parquet reader: disjoint, complete, equal-step shares; clear errors on bad input."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from denoisrec.trainer.data.reader import DataError, ParquetBatchReader, steps_per_epoch
from denoisrec.trainer.data.schema import DataSchema


def _ids(reader: ParquetBatchReader) -> tuple:
    batches = list(reader)
    return [b.sample_ids.numpy() for b in batches], [b.size for b in batches]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [500, 700, 4096])
@pytest.mark.parametrize("shuffle", [False, True])
def test_shares_are_disjoint_complete_and_equal_in_steps(tiny_data: Path, world: int, batch_size: int,
                                                          shuffle: bool) -> None:
    schema = DataSchema.load(str(tiny_data))
    total = ds.dataset(str(tiny_data / "train")).count_rows()
    seen, steps = [], set()
    for rank in range(world):
        r = ParquetBatchReader(str(tiny_data / "train"), schema, batch_size, rank, world, shuffle=shuffle, seed=5)
        ids, sizes = _ids(r)
        steps.add(len(sizes))
        assert len(sizes) == len(r) == steps_per_epoch(total, world, batch_size)
        assert all(s == batch_size for s in sizes[:-1]) and 0 <= sizes[-1] <= batch_size
        assert sum(sizes) == r.epoch_plan().rank_rows
        seen.append(np.concatenate(ids))
    assert len(steps) == 1, "ranks must take the same number of steps"
    allids = np.concatenate(seen)
    assert len(allids) == total and len(np.unique(allids)) == total
    shares = [len(s) for s in seen]
    assert max(shares) - min(shares) <= 1


def test_shuffle_changes_order_per_epoch_but_is_deterministic(tiny_data: Path) -> None:
    schema = DataSchema.load(str(tiny_data))
    r = ParquetBatchReader(str(tiny_data / "train"), schema, 1000, shuffle=True, seed=1)
    e0 = np.concatenate(_ids(r)[0])
    r.set_epoch(1)
    e1 = np.concatenate(_ids(r)[0])
    r2 = ParquetBatchReader(str(tiny_data / "train"), schema, 1000, shuffle=True, seed=1)
    r2.set_epoch(1)
    assert not np.array_equal(e0, e1)
    assert np.array_equal(e1, np.concatenate(_ids(r2)[0]))
    assert np.array_equal(np.sort(e0), np.sort(e1))


def test_batch_contents_match_the_file(tiny_data: Path) -> None:
    schema = DataSchema.load(str(tiny_data))
    table = ds.dataset(str(tiny_data / "train")).to_table()
    by_id = {int(r): i for i, r in enumerate(table.column("row_id").to_numpy())}
    b = next(iter(ParquetBatchReader(str(tiny_data / "train"), schema, 64, 1, 3)))
    rows = [by_id[int(i)] for i in b.sample_ids]
    kjt = b.sparse_features.to_dict()
    assert kjt["item_id"].values().tolist() == table.column("item_id").to_numpy()[rows].tolist()
    tags = table.column("item_tags").to_pylist()
    jt = kjt["item_tags"]
    assert jt.lengths().tolist() == [len(tags[r]) for r in rows]
    assert jt.values().tolist() == [v for r in rows for v in tags[r]]
    np.testing.assert_allclose(b.dense_features[:, 3].numpy(), table.column("genre_affinity").to_numpy()[rows])
    assert b.labels.tolist() == table.column("label").to_numpy()[rows].astype(float).tolist()
    assert b.clean_labels is not None and b.is_noisy is not None and b.dense_features.shape == (64, 4)


def _copy_with(tiny_data: Path, tmp: Path, fn) -> Path:  # type: ignore[no-untyped-def]
    """A one-file split whose table is ``fn(original table)``."""
    t = pq.read_table(sorted((tiny_data / "train").glob("*.parquet"))[0])
    (tmp / "split").mkdir()
    pq.write_table(fn(t), tmp / "split" / "part-00000.parquet", row_group_size=500)
    return tmp / "split"


def _reader(path: Path, tiny_data: Path, **kw) -> ParquetBatchReader:  # type: ignore[no-untyped-def]
    return ParquetBatchReader(str(path), DataSchema.load(str(tiny_data)), 256, **kw)


def test_missing_column_names_file_and_column(tiny_data: Path, tmp_path: Path) -> None:
    split = _copy_with(tiny_data, tmp_path, lambda t: t.drop_columns(["item_genre"]))
    with pytest.raises(DataError, match=r"part-00000\.parquet: missing column 'item_genre'"):
        _reader(split, tiny_data)


def test_mistyped_column_names_file_and_column(tiny_data: Path, tmp_path: Path) -> None:
    def to_str(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index("hour")
        return t.set_column(i, "hour", t.column("hour").cast(pa.string()))
    split = _copy_with(tiny_data, tmp_path, to_str)
    with pytest.raises(DataError, match=r"part-00000\.parquet: column 'hour' has type string"):
        _reader(split, tiny_data)


def test_label_outside_0_1_names_row_group(tiny_data: Path, tmp_path: Path) -> None:
    def bad_label(t: pa.Table) -> pa.Table:
        lab = t.column("label").to_numpy().copy()
        lab[1700] = 2
        return t.set_column(t.schema.get_field_index("label"), "label", pa.array(lab))
    split = _copy_with(tiny_data, tmp_path, bad_label)
    with pytest.raises(DataError, match=r"row group 3: column 'label' has value 2"):
        list(_reader(split, tiny_data))


def test_out_of_range_id_is_rejected_or_hashed(tiny_data: Path, tmp_path: Path) -> None:
    def big_id(t: pa.Table) -> pa.Table:
        v = t.column("item_id").to_numpy().copy()
        v[10] = 10_000_000
        return t.set_column(t.schema.get_field_index("item_id"), "item_id", pa.array(v))
    split = _copy_with(tiny_data, tmp_path, big_id)
    with pytest.raises(DataError, match=r"column 'item_id' has id 10000000 outside the table \[0, 200\)"):
        list(_reader(split, tiny_data))
    schema = DataSchema.load(str(tiny_data))
    schema.oov_policy = "hash"
    r = ParquetBatchReader(str(split), schema, 256)
    first = next(iter(r))
    assert first.sparse_features["item_id"].values()[10].item() == 10_000_000 % 200
    assert r.oov_hashed == 1


def test_empty_split_and_corrupt_file_are_clear_errors(tiny_data: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty split"):
        _reader(tmp_path / "empty", tiny_data)
    (tmp_path / "bad").mkdir()
    data = sorted((tiny_data / "train").glob("*.parquet"))[0].read_bytes()
    (tmp_path / "bad" / "part-00000.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"part-00000\.parquet: not a readable Parquet file"):
        _reader(tmp_path / "bad", tiny_data)

"""Hostile input: every case is an error naming file, row group and column, or a counted, documented repair."""

from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.errors import DataError


def _first_file(tiny_data: Path) -> Path:
    return sorted((tiny_data / "train").glob("*.parquet"))[0]


def _split_with(tiny_data: Path, tmp: Path, fn: Callable[[pa.Table], pa.Table]) -> Path:
    """A one-file split (2,500 rows in 500-row groups) whose table is ``fn(original table)``."""
    (tmp / "split").mkdir()
    pq.write_table(fn(pq.read_table(_first_file(tiny_data))), tmp / "split" / "part-00000.parquet", row_group_size=500)
    return tmp / "split"


def _set(t: pa.Table, name: str, values) -> pa.Table:  # type: ignore[no-untyped-def]
    return t.set_column(t.schema.get_field_index(name), name, values)


def _reader(path: Path, tiny_data: Path, schema: DataSchema = None, **kw) -> ParquetBatchReader:  # type: ignore
    return ParquetBatchReader(str(path), schema or DataSchema.load(str(tiny_data)), 256, **kw)


FILE = r"part-00000\.parquet"


def test_missing_column_names_file_and_column(tiny_data: Path, tmp_path: Path) -> None:
    split = _split_with(tiny_data, tmp_path, lambda t: t.drop_columns(["item_genre"]))
    with pytest.raises(DataError, match=FILE + r": missing column 'item_genre' \(expected integer"):
        _reader(split, tiny_data)


def test_mistyped_column_names_file_and_column(tiny_data: Path, tmp_path: Path) -> None:
    split = _split_with(tiny_data, tmp_path, lambda t: _set(t, "hour", t.column("hour").cast(pa.string())))
    with pytest.raises(DataError, match=FILE + r": column 'hour' has type string, expected integer"):
        _reader(split, tiny_data)


@pytest.mark.parametrize("column", ["item_id", "label", "row_id", "item_tags"])
def test_null_in_id_or_label_column_names_row_group_column_and_row(
    tiny_data: Path, tmp_path: Path, column: str
) -> None:
    def null_at_1234(t: pa.Table) -> pa.Table:
        v = t.column(column).to_pylist()
        v[1234] = None
        return _set(t, column, pa.array(v, type=t.schema.field(column).type))

    split = _split_with(tiny_data, tmp_path, null_at_1234)
    # row 1,234 of the file is row 234 of row group 2 (500-row groups)
    with pytest.raises(
        DataError,
        match=FILE + rf": row group 2: column '{column}' has 1 null value\(s\) \(first at "
        r"row 234 of the row group \(row 1,234 of the file\)\)",
    ):
        list(_reader(split, tiny_data))


def test_null_inside_a_list_is_an_error(tiny_data: Path, tmp_path: Path) -> None:
    def null_element(t: pa.Table) -> pa.Table:
        v = t.column("item_tags").to_pylist()
        v[700] = [v[700][0], None]
        return _set(t, "item_tags", pa.array(v, type=pa.list_(pa.int64())))

    split = _split_with(tiny_data, tmp_path, null_element)
    with pytest.raises(
        DataError,
        match=FILE + r": row group 1: column 'item_tags' has 1 null id\(s\) inside its "
        r"lists \(first at row 200 of the row group",
    ):
        list(_reader(split, tiny_data))


def test_label_outside_0_1_names_row_group_column_and_value(tiny_data: Path, tmp_path: Path) -> None:
    def bad_label(t: pa.Table) -> pa.Table:
        lab = t.column("label").to_numpy().copy()
        lab[1700] = 2
        return _set(t, "label", pa.array(lab))

    split = _split_with(tiny_data, tmp_path, bad_label)
    with pytest.raises(
        DataError,
        match=FILE + r": row group 3: column 'label' has 1 value\(s\) outside \{0, 1\} "
        r"\(first: 2 at row 200 of the row group",
    ):
        list(_reader(split, tiny_data))


def test_float_label_nan_is_not_a_label(tiny_data: Path, tmp_path: Path) -> None:
    def nan_label(t: pa.Table) -> pa.Table:
        lab = t.column("clean_label").to_numpy().astype(np.float32)
        lab[3] = np.nan
        return _set(t, "clean_label", pa.array(lab))

    split = _split_with(tiny_data, tmp_path, nan_label)
    with pytest.raises(DataError, match=r"row group 0: column 'clean_label' has 1 value\(s\) outside \{0, 1\}"):
        list(_reader(split, tiny_data))


def _splitmix64(x: int) -> int:
    """Steele, Lea & Flood's splitmix64, on Python ints (the reference for the OOV hash)."""
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_out_of_table_ids_are_rejected_or_hashed_never_clipped(tiny_data: Path, tmp_path: Path) -> None:
    def oov(t: pa.Table) -> pa.Table:
        v = t.column("item_id").to_numpy().copy()
        v[10], v[11] = 10_000_000, -3
        tags = t.column("item_tags").to_pylist()
        tags[12] = [5, 64]  # item_tags has 64 ids: 64 is one past the end
        return _set(_set(t, "item_id", pa.array(v)), "item_tags", pa.array(tags, type=pa.list_(pa.int64())))

    split = _split_with(tiny_data, tmp_path, oov)
    with pytest.raises(
        DataError,
        match=FILE + r": row group 0: column 'item_id' has 2 id\(s\) outside the table "
        r"\[0, 200\) \(first: 10000000 at row 10 of the row group .*set oov_policy to 'hash'",
    ):
        list(_reader(split, tiny_data))
    schema = DataSchema.load(str(tiny_data)).with_policies(oov_policy="hash")
    r = _reader(split, tiny_data, schema)
    first = next(iter(r))
    items = first.sparse_features["item_id"].values()
    assert items[10].item() == _splitmix64(10_000_000) % 200
    assert items[11].item() == _splitmix64((1 << 64) - 3) % 200  # -3 as a 64-bit pattern
    original = pq.read_table(_first_file(tiny_data)).column("item_id").to_numpy()[:20]
    assert items[:10].tolist() == original[:10].tolist()  # ids inside the table are untouched
    tags = first.sparse_features["item_tags"]
    start = int(tags.lengths()[:12].sum())
    assert tags.values()[start : start + 2].tolist() == [5, _splitmix64(64) % 64]
    r2 = _reader(split, tiny_data, schema)
    list(r2)
    assert r2.epoch_report().oov_hashed == {"item_id": 2, "item_tags": 1}


def test_a_feature_can_hash_while_the_schema_rejects(tiny_data: Path, tmp_path: Path) -> None:
    split = _split_with(tiny_data, tmp_path, lambda t: _set(t, "hour", pa.array(t.column("hour").to_numpy() + 24)))
    d = DataSchema.load(str(tiny_data)).to_dict()
    next(f for f in d["sparse"] if f["name"] == "hour")["oov_policy"] = "hash"
    r = _reader(split, tiny_data, DataSchema.from_dict(d))
    assert sum(b.size for b in r) == 2500 and r.epoch_report().oov_hashed == {"hour": 2500}


def test_nan_and_inf_dense_values_are_rejected_or_imputed_and_counted(tiny_data: Path, tmp_path: Path) -> None:
    def bad_dense(t: pa.Table) -> pa.Table:
        v = t.column("duration").to_numpy().copy()
        v[600], v[601], v[2400] = np.nan, np.inf, -np.inf
        a = t.column("genre_affinity").to_pylist()
        a[5] = None  # a null dense value counts like NaN
        return _set(_set(t, "duration", pa.array(v)), "genre_affinity", pa.array(a, pa.float32()))

    split = _split_with(tiny_data, tmp_path, bad_dense)
    with pytest.raises(
        DataError,
        match=FILE + r": row group 0: column 'genre_affinity' has 1 NaN, infinite or null "
        r"value\(s\) \(first: nan at row 5 of the row group",
    ):
        list(_reader(split, tiny_data))
    schema = DataSchema.load(str(tiny_data)).with_policies(nan_policy="impute")
    schema.impute_value = -7.0
    r = _reader(split, tiny_data, schema, shuffle=False)
    dense = np.concatenate([b.dense_features.numpy() for b in r])
    j = schema.dense.index("duration")
    assert dense[600, j] == dense[601, j] == dense[2400, j] == -7.0
    assert dense[5, schema.dense.index("genre_affinity")] == -7.0 and np.isfinite(dense).all()
    assert r.epoch_report().nan_imputed == {"duration": 3, "genre_affinity": 1}


def test_corrupt_truncated_and_zero_byte_files(tiny_data: Path, tmp_path: Path) -> None:
    data = _first_file(tiny_data).read_bytes()
    cases = {"truncated": data[: len(data) // 2], "garbage": b"PAR1" + bytes(range(256)) * 4, "zero": b""}
    for name, content in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "part-00000.parquet").write_bytes(content)
    for name in ("truncated", "garbage"):
        with pytest.raises(DataError, match=FILE + r": not a readable Parquet file, corrupt or truncated"):
            _reader(tmp_path / name, tiny_data)
    with pytest.raises(DataError, match=FILE + r": empty file \(0 bytes\), not a Parquet file"):
        _reader(tmp_path / "zero", tiny_data)


def test_corrupt_page_names_row_group_and_column(tiny_data: Path, tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    path = tmp_path / "s" / "part-00000.parquet"
    path.write_bytes(_first_file(tiny_data).read_bytes())
    rg = pq.read_metadata(path).row_group(2)
    col = next(rg.column(c) for c in range(rg.num_columns) if rg.column(c).path_in_schema == "item_id")
    raw = bytearray(path.read_bytes())
    off = col.dictionary_page_offset or col.data_page_offset
    raw[off : off + 24] = b"\xff" * 24  # destroy the page header of item_id in row group 2
    path.write_bytes(bytes(raw))
    r = _reader(tmp_path / "s", tiny_data, prefetch=2)
    seen = 0
    with pytest.raises(DataError, match=FILE + r": row group 2 could not be read .*failing column\(s\): 'item_id'"):
        for b in r:
            seen += b.size
    assert seen == 1000 - 1000 % 256  # the batches before the bad row group were delivered


def test_empty_files_are_listed_and_an_empty_split_is_an_error(tiny_data: Path, tmp_path: Path) -> None:
    t = pq.read_table(_first_file(tiny_data))
    (tmp_path / "mixed").mkdir()
    pq.write_table(t.slice(0, 0), tmp_path / "mixed" / "part-00000.parquet")
    pq.write_table(t.slice(0, 300), tmp_path / "mixed" / "part-00001.parquet")
    r = _reader(tmp_path / "mixed", tiny_data)
    assert sum(b.size for b in r) == 300
    assert [Path(p).name for p in r.epoch_report().empty_files] == ["part-00000.parquet"]
    (tmp_path / "allempty").mkdir()
    pq.write_table(t.slice(0, 0), tmp_path / "allempty" / "part-00000.parquet")
    with pytest.raises(DataError, match=r"allempty: empty split, 1 file\(s\) hold no rows"):
        _reader(tmp_path / "allempty", tiny_data)
    (tmp_path / "nofiles").mkdir()
    (tmp_path / "nofiles" / "_SUCCESS").write_text("")
    with pytest.raises(DataError, match=r"nofiles: empty split, no \.parquet files found"):
        _reader(tmp_path / "nofiles", tiny_data)
    with pytest.raises(DataError, match=r"missing: no such file or directory"):
        _reader(tmp_path / "missing", tiny_data)


def test_bad_schema_options_name_the_option(tiny_data: Path) -> None:
    d = DataSchema.load(str(tiny_data)).to_dict()
    with pytest.raises(ValueError, match=r"nan_policy='zero'"):
        DataSchema.from_dict({**d, "nan_policy": "zero"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colour'\]"):
        DataSchema.from_dict({**d, "colour": 1})
    with pytest.raises(ValueError, match=r"config data.schema: invalid schema"):
        DataSchema.from_config({"sparse": [{"name": "a"}]}, str(tiny_data))
    inline = DataSchema.from_config(d, "/nonexistent")  # an inline mapping needs no schema.json
    assert inline.sparse_names == DataSchema.load(str(tiny_data)).sparse_names

"""The trusted-label column through the data path: schema, reader (every split, every shuffle mode), the
``valid_random`` split, ``validate``'s checks on it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from trusted_data import COLUMN, add_trusted, trusted_rows

from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema, SparseFeature
from denoisrec.trainer.data.splits import split_readers
from denoisrec.trainer.data.validate import format_report, validate_dataset
from denoisrec.trainer.errors import DataError


@pytest.fixture()
def trusted_data(tiny_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "trusted"
    shutil.copytree(tiny_data, root)
    add_trusted(root, fraction={"valid": 0.4, "train": 0.05})
    return root


def test_schema_names_the_trusted_column_and_never_as_a_feature(tmp_path: Path) -> None:
    s = DataSchema(sparse=[SparseFeature("user_id", 10)], trusted_label="t")
    s.save(str(tmp_path / "schema.json"))
    assert DataSchema.load(str(tmp_path)).trusted_label == "t"
    assert DataSchema(sparse=[SparseFeature("user_id", 10)]).trusted_label is None  # absent: none
    assert s.columns(with_trusted=True)[-1] == "t" and "t" not in s.columns()
    with pytest.raises(ValueError, match="'t' is the trusted_label and also listed under 'dense'"):
        DataSchema(sparse=[SparseFeature("user_id", 10)], dense=["t"], trusted_label="t")
    with pytest.raises(ValueError, match="trusted_label and also listed under 'sparse'"):
        DataSchema(sparse=[SparseFeature("t", 10)], trusted_label="t")


@pytest.mark.parametrize("world", [1, 3])
@pytest.mark.parametrize("mode", [dict(shuffle=False), dict(shuffle=True, shuffle_buffer=900)])
def test_reader_carries_trusted_labels_with_nan_where_null(trusted_data: Path, world: int, mode: dict) -> None:
    schema = DataSchema.load(str(trusted_data))
    for split in ("train", "valid", "valid_random"):
        truth = trusted_rows(trusted_data / split)
        by_id = dict(zip(truth["row_id"].tolist(), truth["trusted"].tolist()))
        ids, got = [], []
        for rank in range(world):
            r = ParquetBatchReader(str(trusted_data / split), schema, 333, rank, world, seed=3, **mode)
            for b in r:
                assert b.trusted_labels is not None and b.trusted_labels.dtype.is_floating_point
                assert b.trusted_labels.shape == b.labels.shape
                ids.append(b.sample_ids.numpy().copy())
                got.append(b.trusted_labels.numpy().copy())
        ids_a, got_a = np.concatenate(ids), np.concatenate(got)
        want = np.array([by_id[i] for i in ids_a.tolist()], dtype=np.float32)
        assert len(ids_a) == len(truth["row_id"])
        np.testing.assert_array_equal(np.isnan(got_a), np.isnan(want))
        np.testing.assert_array_equal(got_a[~np.isnan(want)], want[~np.isnan(want)])
    valid = trusted_rows(trusted_data / "valid")
    assert 0.3 < np.mean(~np.isnan(valid["trusted"])) < 0.5  # the fixture's 40%, some nulls and some labels


def test_batch_to_keeps_trusted_labels_and_none_without_the_column(trusted_data: Path, tiny_data: Path) -> None:
    import torch

    b = next(iter(ParquetBatchReader(str(trusted_data / "valid"), DataSchema.load(str(trusted_data)), 64)))
    moved = b.to(torch.device("cpu"))
    assert moved.trusted_labels is not None
    np.testing.assert_array_equal(moved.trusted_labels.numpy(), b.trusted_labels.numpy())
    plain = next(iter(ParquetBatchReader(str(tiny_data / "valid"), DataSchema.load(str(tiny_data)), 64)))
    assert plain.trusted_labels is None and plain.to(torch.device("cpu")).trusted_labels is None
    # predict-style readers (no evaluation columns) do not read it
    r = ParquetBatchReader(str(trusted_data / "valid"), DataSchema.load(str(trusted_data)), 64, with_ground_truth=False)
    assert COLUMN not in r.columns and next(iter(r)).trusted_labels is None


def test_split_readers_add_valid_random_when_present(trusted_data: Path, tiny_data: Path) -> None:
    import torch

    cfg = Config()
    cfg.data.path = str(trusted_data)
    schema = DataSchema.load(str(trusted_data))
    readers = split_readers(cfg.data, schema, 0, 1, 0, torch.device("cpu"))
    assert set(readers) == {"train", "valid", "test", "valid_random"}
    assert readers["valid_random"].total_rows == readers["test"].total_rows
    cfg.data.path = str(tiny_data)
    assert set(split_readers(cfg.data, DataSchema.load(str(tiny_data)), 0, 1, 0, torch.device("cpu"))) == {
        "train",
        "valid",
        "test",
    }


def test_valid_random_with_another_schema_is_one_line_naming_the_split(trusted_data: Path) -> None:
    import torch

    for f in (trusted_data / "valid_random").glob("*.parquet"):
        pq.write_table(pq.read_table(f).drop_columns(["duration"]), f)
    cfg = Config()
    cfg.data.path = str(trusted_data)
    with pytest.raises(DataError, match=r"split 'valid_random' .*schema of 'valid'.*missing column 'duration'") as e:
        split_readers(cfg.data, DataSchema.load(str(trusted_data)), 0, 1, 0, torch.device("cpu"))
    assert "\n" not in str(e.value)
    report = validate_dataset(str(trusted_data))
    assert not report.ok
    lines = format_report(report).splitlines()
    assert any("split 'valid_random' has another schema than 'valid' (missing ['duration'])" in x for x in lines)


def test_validate_counts_trusted_rows_and_accepts_nulls(trusted_data: Path) -> None:
    report = validate_dataset(str(trusted_data))
    assert report.ok, format_report(report)
    by = {s.split: s for s in report.splits}
    assert set(by) == {"train", "valid", "test", "valid_random"}
    truth = trusted_rows(trusted_data / "valid")["trusted"]
    assert by["valid"].trusted_rows == int((~np.isnan(truth)).sum())
    assert by["valid"].trusted_positives == int((truth == 1).sum())
    assert by["test"].trusted_rows == 0
    assert "trusted label(s)" in format_report(report)


def _rewrite_trusted(root: Path, split: str, values: pa.Array) -> None:
    for f in sorted((root / split).glob("*.parquet"))[:1]:
        t = pq.read_table(f)
        n = t.num_rows
        t = t.drop_columns([COLUMN]).append_column(COLUMN, values.slice(0, n) if len(values) >= n else values)
        pq.write_table(t, f)


def test_trusted_column_not_binary_is_an_error_naming_it(trusted_data: Path) -> None:
    f = sorted((trusted_data / "valid").glob("*.parquet"))[0]
    n = pq.read_metadata(f).num_rows
    vals = np.zeros(n, np.float32)
    vals[4] = 2.0  # an even row: not masked to null
    _rewrite_trusted(trusted_data, "valid", pa.array(vals, mask=np.arange(n) % 2 == 1))
    report = validate_dataset(str(trusted_data))
    bad = [i.line() for i in report.all_issues() if i.column == COLUMN and i.level == "error"]
    assert len(bad) == 1 and "1 value(s) outside {0, 1, null} (e.g. 2.0)" in bad[0], bad
    schema = DataSchema.load(str(trusted_data))
    with pytest.raises(DataError, match=r"column 'trusted_label' \(the trusted label\) has 1 value\(s\) outside"):
        list(ParquetBatchReader(str(trusted_data / "valid"), schema, 500))


def test_all_null_trusted_column_is_an_error(tiny_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "nulls"
    shutil.copytree(tiny_data, root)
    add_trusted(root, fraction={}, random_split=False)
    report = validate_dataset(str(root))
    errors = [i.line() for i in report.all_issues() if i.level == "error"]
    assert errors == [
        "ERROR   schema: column 'trusted_label': the trusted label column is null on every row (train, valid, "
        "test); fill it on the rows with a trusted label, or set trusted_label to null in the schema"
    ]


def test_trusted_rows_only_in_train_warns_that_valid_cannot_select(tiny_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "trainonly"
    shutil.copytree(tiny_data, root)
    add_trusted(root, fraction={"train": 0.1}, random_split=False)
    report = validate_dataset(str(root))
    assert report.ok
    assert [i.message for i in report.all_issues() if i.level == "warning" and i.column == COLUMN] == [
        "no trusted label in the valid split: eval.select_on=trusted has nothing to select on"
    ]
    schema = json.loads((root / "schema.json").read_text())
    assert schema["trusted_label"] == COLUMN

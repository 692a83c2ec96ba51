"""``denoisrec validate``: a clean dataset passes; a broken one gets every problem reported, not just the first."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from denoisrec.trainer.cli import main


def test_clean_dataset_passes(tiny_data: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = main(["validate", str(tiny_data), "--unique-ids", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "OK: the dataset matches its schema" in out
    assert "train: 3 file(s), 12 row groups (500 rows/row group), 6,000 rows" in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["ok"] and [s["rows"] for s in r["splits"]] == [6000, 1500, 1500]
    assert all(s["rows_checked"] == s["rows"] for s in r["splits"])


def test_broken_dataset_reports_every_problem(tiny_data: Path, tmp_path: Path, capsys) -> None:  # type: ignore
    ds = tmp_path / "ds"
    shutil.copytree(tiny_data, ds)
    shutil.rmtree(ds / "test")  # a missing split
    train = sorted((ds / "train").glob("*.parquet"))
    t = pq.read_table(train[0])
    lab = t.column("label").to_numpy().copy()
    lab[[3, 1203]] = 5  # row groups 0 and 2
    dur = t.column("duration").to_numpy().copy()
    dur[42] = np.nan
    item = t.column("item_id").to_numpy().copy()
    item[7] = 999
    t = t.set_column(t.schema.get_field_index("label"), "label", pa.array(lab))
    t = t.set_column(t.schema.get_field_index("duration"), "duration", pa.array(dur))
    t = t.set_column(t.schema.get_field_index("item_id"), "item_id", pa.array(item))
    pq.write_table(t, train[0], row_group_size=500)
    pq.write_table(t.drop_columns(["scene"]).slice(0, 10), train[1])  # a file without a column
    train[2].write_bytes(train[2].read_bytes()[:100])  # a truncated file
    pq.write_table(t.slice(0, 0), ds / "train" / "part-00009.parquet")  # an empty file (a warning)
    rc = main(["validate", str(ds), "--unique-ids"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "part-00000.parquet: row groups 0, 2: column 'label': 2 value(s) outside {0, 1} (e.g. 5)" in out
    assert (
        "part-00000.parquet: row group 0: column 'duration': 1 NaN, infinite or null value(s) (first at row 42" in out
    )
    assert "part-00000.parquet: row group 0: column 'item_id': 1 id(s) outside the table [0, 200) (e.g. 999)" in out
    assert "part-00001.parquet: missing column 'scene'" in out
    assert "part-00002.parquet: not a readable Parquet file" in out
    assert "part-00009.parquet: empty file (0 rows)" in out
    assert "missing split 'test'" in out
    assert "FAILED: 6 error(s), 1 warning(s)" in out
    # the same data under the repairing policies: the OOV id and the NaN become notes
    rc = main(
        [
            "validate",
            str(ds),
            "--split",
            "train",
            "--oov-policy",
            "hash",
            "--nan-policy",
            "impute",
            "--schema",
            str(ds / "schema.json"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1 and "NOTE    " in out and "oov_policy 'hash' hashes them" in out
    assert "FAILED: 3 error(s), 1 warning(s)" in out


def test_duplicate_sample_ids_are_found(tiny_data: Path, tmp_path: Path, capsys) -> None:  # type: ignore
    ds = tmp_path / "dup"
    shutil.copytree(tiny_data, ds)
    shutil.copy(sorted((ds / "train").glob("*.parquet"))[0], ds / "valid" / "copy.parquet")
    assert main(["validate", str(ds), "--unique-ids"]) == 1
    assert "column 'row_id': 2,500 duplicate sample id(s)" in capsys.readouterr().out


def test_splits_without_valid_are_not_an_all_null_trusted_column(tmp_path: Path, capsys) -> None:  # type: ignore
    """gen-data puts trusted labels in valid only: `validate --split train` is no all-null error, valid alone is OK."""
    from denoisrec.trainer.datasets.synthetic import generate, preset_by_name, scaled

    data = tmp_path / "d"
    generate(str(data), scaled(preset_by_name("tiny"), 4000))
    assert main(["validate", str(data), "--split", "train"]) == 0, capsys.readouterr().out
    assert main(["validate", str(data), "--split", "valid"]) == 0
    empty = pq.read_table(next((data / "valid").glob("*.parquet")))
    col = empty.schema.get_field_index("trusted_label")
    nulls = pa.nulls(empty.num_rows, empty.schema.field(col).type)
    for f in (data / "valid").glob("*.parquet"):
        t = pq.read_table(f)
        pq.write_table(t.set_column(col, "trusted_label", pa.nulls(t.num_rows, nulls.type)), f)
    capsys.readouterr()
    assert main(["validate", str(data), "--split", "valid"]) != 0
    assert "null on every row (valid)" in capsys.readouterr().out

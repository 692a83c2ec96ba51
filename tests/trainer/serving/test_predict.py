"""`denoisrec predict`: an exported model file scores Parquet files on one process."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from denoisrec.models import ModelSpec, save_model_file
from denoisrec.trainer.cli import main
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema


@pytest.fixture()
def model_file(tiny_data: Path, tmp_path: Path) -> Path:
    schema = DataSchema.load(str(tiny_data))
    spec = ModelSpec(
        "widedeep", [(f.name, f.num_embeddings) for f in schema.sparse], len(schema.dense), 8, params={"mlp": [8]}
    )
    torch.manual_seed(3)
    model = spec.build(torch.device("cpu"))
    path = tmp_path / "model.pt"
    save_model_file(str(path), spec, model.state_dict(), schema.to_dict())
    return path


def test_predict_scores_every_row_in_order(tiny_data: Path, model_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "scores.parquet"
    assert (
        main(
            [
                "predict",
                "--model-file",
                str(model_file),
                "--data",
                str(tiny_data / "test"),
                "--out",
                str(out),
                "--batch-size",
                "400",
            ]
        )
        == 0
    )
    assert "scored 1,500 rows from 1 file(s) with widedeep" in capsys.readouterr().out
    t = pq.read_table(out)
    assert t.column_names == ["row_id", "logit", "score"]  # default: the schema's sample id
    logit = t.column("logit").to_numpy()
    assert np.allclose(t.column("score").to_numpy(), 1 / (1 + np.exp(-logit)), atol=1e-6)
    # The same rows in the same order as the trainer's reader, scored by the same model.
    schema = DataSchema.load(str(tiny_data))
    batch = next(iter(ParquetBatchReader(str(tiny_data / "test"), schema, 1500)))
    assert np.array_equal(t.column("row_id").to_numpy(), batch.sample_ids.numpy())
    from denoisrec.models import load_model_file

    m = load_model_file(str(model_file)).model.eval()
    with torch.no_grad():
        want = m(batch.dense_features, batch.sparse_features).squeeze(1).numpy()
    assert np.allclose(logit, want, atol=1e-5)


def test_predict_without_labels_and_clear_errors(tiny_data: Path, model_file: Path, tmp_path: Path, capsys) -> None:
    src = pq.read_table(next((tiny_data / "test").glob("*.parquet")))
    pq.write_table(src.drop_columns(["label", "clean_label", "is_noisy"]), tmp_path / "unlabelled.parquet")
    out = tmp_path / "s.parquet"
    assert (
        main(
            [
                "predict",
                "--model-file",
                str(model_file),
                "--data",
                str(tmp_path / "unlabelled.parquet"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert pq.read_table(out).column_names == ["row_id", "logit", "score"]

    assert main(["predict", "--model-file", str(model_file), "--data", str(tiny_data), "--out", str(out)]) == 2
    assert "a dataset root" in capsys.readouterr().err
    pq.write_table(src.drop_columns(["item_id"]), tmp_path / "broken.parquet")
    assert (
        main(
            ["predict", "--model-file", str(model_file), "--data", str(tmp_path / "broken.parquet"), "--out", str(out)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "broken.parquet: missing feature column(s) ['item_id']" in err


def test_predict_keeps_columns_and_names_bad_ones(tiny_data: Path, model_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "keep.parquet"
    src = pq.read_table(next((tiny_data / "test").glob("*.parquet")))
    assert (
        main(
            [
                "predict",
                "--model-file",
                str(model_file),
                "--data",
                str(tiny_data / "test"),
                "--out",
                str(out),
                "--keep-columns",
                "user_id,item_id,row_id",
                "--batch-size",
                "333",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "columns: user_id, item_id, row_id, logit, score" in printed and "NE " in printed
    t = pq.read_table(out)
    assert t.column_names == ["user_id", "item_id", "row_id", "logit", "score"]
    for c in ("user_id", "item_id", "row_id"):  # copied with their types, row for row
        assert t.column(c).type == src.column(c).type
        assert np.array_equal(t.column(c).to_numpy(), src.column(c).to_numpy())
    for bad, msg in (
        ("user_id,nope", "--keep-columns 'nope' is not a column of this file"),
        ("row_id,,user_id", "an empty column name"),
        ("row_id,row_id", "named twice"),
        ("score", "collide with the output column"),
    ):
        assert (
            main(
                [
                    "predict",
                    "--model-file",
                    str(model_file),
                    "--data",
                    str(tiny_data / "test"),
                    "--out",
                    str(tmp_path / "x.parquet"),
                    "--keep-columns",
                    bad,
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.parquet").exists()


def test_predict_shards_rows_over_three_ranks(tiny_data: Path, model_file: Path, tmp_path: Path, capsys) -> None:
    """3 torchrun ranks on 1,001 rows in 2 files (uneven shares): every row scored once, in order, as by one process."""
    from conftest import torchrun

    src = pq.read_table(next((tiny_data / "test").glob("*.parquet")))
    data = tmp_path / "in"
    data.mkdir()
    pq.write_table(src.slice(0, 601), data / "a.parquet", row_group_size=250)
    pq.write_table(src.slice(601, 400), data / "b.parquet", row_group_size=128)
    one = tmp_path / "one.parquet"
    assert (
        main(
            [
                "predict",
                "--model-file",
                str(model_file),
                "--data",
                str(data),
                "--out",
                str(one),
                "--keep-columns",
                "row_id,user_id",
            ]
        )
        == 0
    )
    one_line = [ln for ln in capsys.readouterr().out.splitlines() if "labels observed " in ln]
    proc = torchrun(
        "-m denoisrec.trainer.serving.predict_cli",
        3,
        [
            "--model-file",
            str(model_file),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "three"),
            "--keep-columns",
            "row_id,user_id",
            "--batch-size",
            "100",
            "--device",
            "cpu",
        ],
    )
    assert "scored 1,001 rows (rank 0: 333, rank 1: 334, rank 2: 334)" in proc.stdout
    parts = [pq.read_table(tmp_path / "three" / f"part-{r:05d}.parquet") for r in range(3)]
    assert [p.num_rows for p in parts] == [333, 334, 334]
    import pyarrow as pa

    got, want = pa.concat_tables(parts), pq.read_table(one)
    assert np.array_equal(got.column("row_id").to_numpy(), src.column("row_id").to_numpy()[:1001])
    assert np.allclose(got.column("logit").to_numpy(), want.column("logit").to_numpy(), atol=1e-6)
    # the metrics are over all ranks' rows: the same as one process
    assert [ln for ln in proc.stdout.splitlines() if "labels observed " in ln] == one_line and one_line

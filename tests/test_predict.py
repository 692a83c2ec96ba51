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
    spec = ModelSpec("widedeep", [(f.name, f.num_embeddings) for f in schema.sparse], len(schema.dense), 8,
                     params={"mlp": [8]})
    torch.manual_seed(3)
    model = spec.build(torch.device("cpu"))
    path = tmp_path / "model.pt"
    save_model_file(str(path), spec, model.state_dict(), schema.to_dict())
    return path


def test_predict_scores_every_row_in_order(tiny_data: Path, model_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "scores.parquet"
    assert main(["predict", "--model-file", str(model_file), "--data", str(tiny_data / "test"), "--out", str(out),
                 "--batch-size", "400"]) == 0
    assert "scored 1,500 rows from 1 file(s) with widedeep" in capsys.readouterr().out
    t = pq.read_table(out)
    assert t.column_names == ["row_id", "user_id", "label", "clean_label", "logit", "score"]
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
    assert main(["predict", "--model-file", str(model_file), "--data", str(tmp_path / "unlabelled.parquet"),
                 "--out", str(out)]) == 0
    assert pq.read_table(out).column_names == ["row_id", "user_id", "logit", "score"]

    assert main(["predict", "--model-file", str(model_file), "--data", str(tiny_data), "--out", str(out)]) == 2
    assert "a dataset root" in capsys.readouterr().err
    pq.write_table(src.drop_columns(["item_id"]), tmp_path / "broken.parquet")
    assert main(["predict", "--model-file", str(model_file), "--data", str(tmp_path / "broken.parquet"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "broken.parquet: missing feature column(s) ['item_id']" in err

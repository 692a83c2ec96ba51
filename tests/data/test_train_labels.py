"""`data.train_label`: train on the observed label (default) or on the ground truth (the Clean oracle)."""

from pathlib import Path

import pytest
import torch

from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema, SparseFeature
from denoisrec.trainer.data.train_labels import check_train_label, select_train_labels


def test_clean_label_replaces_the_training_labels_only(tiny_data: Path) -> None:
    schema = DataSchema.load(str(tiny_data))
    batch = next(iter(ParquetBatchReader(str(tiny_data / "train"), schema, 300)))
    assert not torch.equal(batch.labels, batch.clean_labels)  # tiny data has noise in its first 300 rows
    clean = select_train_labels(batch, "clean_label")
    assert torch.equal(clean.labels, batch.clean_labels) and torch.equal(clean.is_noisy, batch.is_noisy)
    assert torch.equal(clean.sample_ids, batch.sample_ids)
    assert select_train_labels(batch, "label") is batch


def test_bad_train_label_options_are_named() -> None:
    plain = DataSchema(sparse=[SparseFeature("user_id", 10)], clean_label=None, is_noisy=None)
    with pytest.raises(ValueError, match="data.train_label='noisy'"):
        check_train_label("noisy", plain)
    with pytest.raises(ValueError, match="data.train_label=clean_label: the dataset .* has no ground truth"):
        check_train_label("clean_label", plain)
    check_train_label("label", plain)

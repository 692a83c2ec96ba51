"""The synthetic generator: deterministic, and noisy the way the brief says."""

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.datasets.synthetic import PRESETS, generate, scaled


def _read(root: Path, split: str = "train"):
    return ds.dataset(str(root / split), format="parquet").to_table()


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    p = PRESETS["tiny"]
    generate(str(tmp_path / "a"), p, seed=3)
    generate(str(tmp_path / "b"), p, seed=3)
    generate(str(tmp_path / "c"), p, seed=4)
    for split in ("train", "valid", "test"):
        assert _read(tmp_path / "a", split).equals(_read(tmp_path / "b", split))
    assert not _read(tmp_path / "a").equals(_read(tmp_path / "c"))


def test_output_does_not_depend_on_file_layout(tmp_path: Path) -> None:
    p = PRESETS["tiny"]
    generate(str(tmp_path / "a"), p, seed=1)
    generate(str(tmp_path / "b"), dataclasses.replace(p, rows_per_file=10_000, row_group_size=1_000), seed=1)
    assert _read(tmp_path / "a").equals(_read(tmp_path / "b"))
    assert len(list((tmp_path / "b" / "train").glob("*.parquet"))) == 1


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("noise")
    stats = generate(str(out), scaled(PRESETS["tiny"], 40_000), seed=0)
    return out, stats, _read(out)


def test_noise_rates_and_ground_truth(noisy) -> None:
    out, stats, t = noisy
    label = t.column("label").to_numpy()
    clean = t.column("clean_label").to_numpy()
    is_noisy = t.column("is_noisy").to_numpy()
    np.testing.assert_array_equal(is_noisy, (label != clean).astype(np.int8))
    fp_share = (is_noisy[label == 1]).mean()
    assert 0.30 <= fp_share <= 0.40, fp_share  # "roughly 30-40% of observed positives are false"
    assert 0.0 < (is_noisy[label == 0]).mean() < fp_share  # false negatives exist too
    assert stats["train"]["noisy_positive_rate"] == pytest.approx(fp_share)
    pos = t.column("position").to_numpy()
    assert pos.min() >= 1 and pos.max() <= 30


def test_attention_decays_down_the_list(noisy) -> None:
    _, _, t = noisy
    pos = t.column("position").to_numpy()
    noisy_rows = t.column("is_noisy").to_numpy()
    top, bottom = noisy_rows[pos <= 5].mean(), noisy_rows[pos >= 26].mean()
    assert bottom > top + 0.1, (top, bottom)


def test_clean_label_follows_preference_features(noisy) -> None:
    """Noisy positives are songs the user does not like: their genre affinity is lower than clean ones'."""
    _, _, t = noisy
    label = t.column("label").to_numpy()
    is_noisy = t.column("is_noisy").to_numpy()
    aff = t.column("genre_affinity").to_numpy()
    assert aff[(label == 1) & (is_noisy == 1)].mean() < aff[(label == 1) & (is_noisy == 0)].mean() - 0.3


def test_schema_matches_columns(noisy) -> None:
    out, _, t = noisy
    schema = DataSchema.load(str(out))
    assert set(schema.columns()) <= set(t.column_names)
    assert {"label", "clean_label", "is_noisy", "user_id", "row_id"} <= set(t.column_names)
    multi = [f.name for f in schema.sparse if f.multi_hot]
    assert multi == ["item_tags", "user_recent_genres"]
    for f in schema.sparse:
        col = t.column(f.name)
        vals = col.combine_chunks().flatten().to_numpy() if f.multi_hot else col.to_numpy()
        assert vals.min() >= 0 and vals.max() < f.num_embeddings, f.name
    rid = t.column("row_id").to_numpy()
    assert len(np.unique(rid)) == len(rid)


def test_product_preset_has_lcd_product_shape() -> None:
    """LCD Table 1: 3.64M users, 117K items, 77.11M / 10.89M / 10.96M rows, 69 features."""
    p = PRESETS["product"]
    assert (p.n_users, p.n_items) == (3_640_000, 117_000)
    assert (p.train_rows, p.valid_rows, p.test_rows) == (77_110_000, 10_890_000, 10_960_000)
    from denoisrec.trainer.datasets.synthetic import schema_for

    s = schema_for(p)
    assert len(s.sparse) + len(s.dense) == 69
    assert [f.name for f in s.sparse if f.multi_hot] == [
        "item_tags",
        "user_recent_genres",
        "user_recent_items",
        "list_cat_0",
    ]
    sizes = {f.name: f.num_embeddings for f in s.sparse}
    assert sizes["user_id"] == 3_640_000 and sizes["item_id"] == sizes["user_recent_items"] == 117_000
    assert p.row_group_size * 4 <= p.rows_per_file  # several row groups per file: row-group sharding has work


def test_product_shaped_data_streams_through_reader_and_validate(tmp_path: Path, capsys) -> None:
    """A scaled-down product preset (same features and writer settings): compact int32 ids, list<int32>,
    every row readable and valid.
    """
    from denoisrec.trainer.data.reader import ParquetBatchReader
    from denoisrec.trainer.data.validate import validate_dataset

    p = dataclasses.replace(
        PRESETS["product"],
        n_users=3000,
        n_items=500,
        train_rows=9000,
        valid_rows=1000,
        test_rows=1000,
        rows_per_file=4000,
        row_group_size=1000,
    )
    generate(str(tmp_path), p, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "gen-data train: 9,000/9,000 rows" in err and "ETA" in err
    t = _read(tmp_path)
    assert t.schema.field("user_id").type == "int32" and t.schema.field("row_id").type == "int64"
    assert str(t.schema.field("user_recent_items").type) == "list<element: int32>"
    lens = np.diff(t.column("user_recent_items").combine_chunks().offsets.to_numpy())
    assert lens.min() == 0 and lens.max() == 10
    assert validate_dataset(str(tmp_path)).ok
    schema = DataSchema.load(str(tmp_path))
    r = ParquetBatchReader(str(tmp_path / "train"), schema, 2048, shuffle=True, shuffle_buffer=3000)
    rows = sum(b.size for b in r)
    b = next(iter(r))
    assert rows == 9000 and b.dense_features.shape == (2048, 16) and len(b.sparse_features.keys()) == 53

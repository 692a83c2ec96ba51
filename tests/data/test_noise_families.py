"""The generator's noise families, truth files, trusted labels and random bucket.

Each family's data must reproduce its truth: the per-row click probability the test derives from
``noise_truth.json`` (and, for the context part, ``noise_model.json``'s examination form) matches the observed
click rates of every group within sampling error, and ``stats.json``'s rates are the data's.
"""

import dataclasses
import json
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.denoisers.noise_file import NoiseModel
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.datasets.noise_families import FAMILIES, SHIFTED_PARAMS, NoiseSpec
from denoisrec.trainer.datasets.synthetic import (
    NOISE_MODEL_FILE,
    PRESETS,
    generate,
    scaled,
    with_noise,
    with_trusted,
)

ROWS = 40_000
TABLES = {"position": 31, "scene": 6, "device": 4, "hour": 24}


def _read(root: Path, split: str = "train"):
    return ds.dataset(str(root / split), format="parquet").to_table()


def _exam_probability(doc: Dict, t, clean: np.ndarray) -> np.ndarray:
    """``P(ỹ=1 | y, c)`` of the examination part, from the truth file (through the noise-file reader)."""
    nm = NoiseModel.from_dict(doc, TABLES, "truth")
    cols = [t.column(f).to_numpy().astype(np.int64) for f in TABLES]
    kjt = KeyedJaggedTensor.from_lengths_sync(
        list(TABLES), torch.from_numpy(np.concatenate(cols)), torch.ones(len(TABLES) * len(clean), dtype=torch.int32)
    )
    e = 1.0 / (1.0 + np.exp(-nm.attention_logit(kjt).numpy().astype(np.float64)))
    return np.where(clean == 1, 1.0 - (1.0 - e) * nm.q1, (1.0 - e) * nm.q0)


def _expected(truth: Dict, t) -> np.ndarray:
    """Each row's ``P(ỹ=1 | y, row)`` from the truth file alone (its steps in order, docstring recursion)."""
    clean = t.column("clean_label").to_numpy().astype(np.float64)
    p = _exam_probability(truth["examination"], t, clean) if "examination" in truth["steps"] else clean.copy()
    par = truth["params"]
    item, user = t.column("item_id").to_numpy(), t.column("user_id").to_numpy()
    for step in truth["steps"]:
        if step == "context_item":
            cells = {tuple(c) for c in truth["context_item_cells"]}
            sg = zip(t.column("scene").to_numpy().tolist(), t.column("item_genre").to_numpy().tolist())
            m = np.array([c in cells for c in sg])
            p01, p10 = np.where(m, par["cell_fp"], 0.0), np.where(m, par["cell_fn"], 0.0)
        elif step == "clickbait":
            p01, p10 = np.where(np.isin(item, truth["clickbait_items"]), par["clickbait_rate"], 0.0), 0.0
        elif step == "random_clickers":
            k = np.isin(user, truth["random_clickers"])
            p01, p10 = np.where(k, par["clicker_rate"], 0.0), np.where(k, 1.0 - par["clicker_rate"], 0.0)
        else:
            continue
        p = p * (1.0 - p10) + (1.0 - p) * p01
    return p


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Tuple[Path, Dict]]:
    base = scaled(PRESETS["tiny"], ROWS)
    out = {}
    for name in FAMILIES:
        d = tmp_path_factory.mktemp(name)
        out[name] = (d, generate(str(d), with_noise(base, name), seed=0))
    return out


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_reproduces_its_truth_file(families, name: str) -> None:
    root, stats = families[name]
    truth = json.loads((root / "noise_truth.json").read_text())
    assert truth["family"] == name and tuple(truth["steps"]) == FAMILIES[name]
    t = _read(root)
    label = t.column("label").to_numpy()
    clean = t.column("clean_label").to_numpy()
    p = _expected(truth, t)
    groups = {"all": np.ones(len(label), dtype=bool)}
    item, user = t.column("item_id").to_numpy(), t.column("user_id").to_numpy()
    if truth["clickbait_items"]:
        groups["clickbait_items"] = np.isin(item, truth["clickbait_items"])
    if truth["random_clickers"]:
        groups["random_clickers"] = np.isin(user, truth["random_clickers"])
    if truth["context_item_cells"]:
        cells = {tuple(c) for c in truth["context_item_cells"]}
        sg = zip(t.column("scene").to_numpy().tolist(), t.column("item_genre").to_numpy().tolist())
        groups["context_item_cells"] = np.array([c in cells for c in sg])
    for g, m in list(groups.items()):
        if g != "all":
            groups["not_" + g] = ~m
    for g, m in groups.items():
        for y, key in ((0, "h"), (1, "h_prime")):
            rows = m & (clean == y)
            observed, want = label[rows].mean(), p[rows].mean()
            se = np.sqrt(np.sum(p[rows] * (1 - p[rows]))) / rows.sum()
            assert abs(observed - want) <= 4 * se + 1e-9, (name, g, y, observed, want, se)
            assert stats["noise"]["rates"][g][key] == pytest.approx(observed), (g, key)
    # The family's own sets are the ones its parameters say, and the file names where the context truth is.
    assert len(truth["clickbait_items"]) == (30 if "clickbait" in truth["steps"] else 0)  # 15% of 200 items
    assert stats["noise"]["noise_model_file"] == (NOISE_MODEL_FILE if FAMILIES[name] == ("examination",) else None)
    assert (root / NOISE_MODEL_FILE).exists() == (FAMILIES[name] == ("examination",))


def test_families_share_users_items_contexts_and_clean_labels(families) -> None:
    ref = _read(families["examination"][0])
    for name in ("clickbait", "mix"):
        t = _read(families[name][0])
        assert t.drop_columns(["label", "is_noisy"]).equals(ref.drop_columns(["label", "is_noisy"]))
        assert not t.column("label").equals(ref.column("label"))
    assert np.array_equal(_read(families["clickbait"][0]).column("clean_label").to_numpy(), ref["clean_label"])


def test_clickbait_only_noise_is_false_positives_on_clickbait_items_at_any_position(families) -> None:
    root, stats = families["clickbait"]
    truth = json.loads((root / "noise_truth.json").read_text())
    t = _read(root)
    label, clean = t.column("label").to_numpy(), t.column("clean_label").to_numpy()
    cb = np.isin(t.column("item_id").to_numpy(), truth["clickbait_items"])
    assert (label[~cb] == clean[~cb]).all() and (label[clean == 1] == 1).all()  # no other noise
    pos = t.column("position").to_numpy()
    fp = label[cb & (clean == 0)]
    top, bottom = fp[pos[cb & (clean == 0)] <= 10].mean(), fp[pos[cb & (clean == 0)] > 20].mean()
    assert abs(top - 0.5) < 0.1 and abs(bottom - 0.5) < 0.1  # position does not explain it
    assert stats["noise"]["rates"]["not_clickbait_items"]["h"] == 0.0


def test_random_clickers_click_independently_of_preference(families) -> None:
    root, _ = families["random_clickers"]
    truth = json.loads((root / "noise_truth.json").read_text())
    t = _read(root)
    label, clean = t.column("label").to_numpy(), t.column("clean_label").to_numpy()
    k = np.isin(t.column("user_id").to_numpy(), truth["random_clickers"])
    assert k.sum() > 500
    assert abs(label[k & (clean == 1)].mean() - label[k & (clean == 0)].mean()) < 0.1


def test_shifted_family_writes_its_own_examination_truth(families) -> None:
    root, stats = families["shifted"]
    doc = json.loads((root / NOISE_MODEL_FILE).read_text())
    assert doc["q0"] == SHIFTED_PARAMS["q_fp"] and doc["q1"] == SHIFTED_PARAMS["q_fn"]
    assert doc["attention"]["scene"] == SHIFTED_PARAMS["attention_scene"]
    assert doc["attention"]["position"][2] == pytest.approx(-SHIFTED_PARAMS["attention_a1"])
    assert stats["logging"]["attention_scene"] == SHIFTED_PARAMS["attention_scene"]


def test_truth_file_follows_the_worlds_scene_effects(tmp_path: Path) -> None:
    """The bug of issue 23: the truth came from the module's default scene constant, not the World's."""
    scenes = [1.5, -1.5, 0.0, 0.7, -0.7, 2.0]
    p = dataclasses.replace(scaled(PRESETS["tiny"], ROWS), attention_scene=scenes)
    stats = generate(str(tmp_path), p, seed=0)
    doc = json.loads((tmp_path / NOISE_MODEL_FILE).read_text())
    assert doc["attention"]["scene"] == scenes
    t = _read(tmp_path)
    clean, label = t.column("clean_label").to_numpy(), t.column("label").to_numpy()
    p_row = _exam_probability(doc, t, clean)
    scene = t.column("scene").to_numpy()
    obs = stats["observation_truth"]["scene"]
    for s in range(6):
        m = (scene == s) & (clean == 0)
        se = np.sqrt(np.sum(p_row[m] * (1 - p_row[m]))) / m.sum()
        assert abs(label[m].mean() - p_row[m].mean()) <= 4 * se, (s, label[m].mean(), p_row[m].mean())
        assert obs["h"][obs["values"].index(s)] == pytest.approx(label[m].mean())


def test_trusted_labels_and_random_bucket(tmp_path: Path) -> None:
    p = with_trusted(scaled(PRESETS["tiny"], 12_000), 700, 300, 2000)
    stats = generate(str(tmp_path), p, seed=2)
    schema = DataSchema.load(str(tmp_path))
    assert schema.trusted_label == "trusted_label"
    for split, want in (("train", 300), ("valid", 700), ("test", 0), ("valid_random", 0)):
        t = _read(tmp_path, split)
        tr = t.column("trusted_label")
        has = ~np.asarray(tr.is_null().to_numpy(zero_copy_only=False))
        assert has.sum() == want, split
        if want:
            assert np.array_equal(tr.to_numpy(zero_copy_only=False)[has].astype(np.int8), t["clean_label"].to_numpy()[has])
            assert stats["trusted"][split]["rows"] == want
            assert stats["trusted"][split]["positive_rate"] == pytest.approx(t["clean_label"].to_numpy()[has].mean())
    rnd, valid = _read(tmp_path, "valid_random"), _read(tmp_path, "valid")
    assert rnd.schema.equals(valid.schema) and rnd.num_rows == stats["valid_random"]["rows"] == 2000
    # Random placement: position no longer carries preference (the ranker's lists do).
    assert abs(stats["valid_random"]["position_clean_corr"]) < 0.08 < abs(stats["valid"]["position_clean_corr"])
    ids = np.concatenate([_read(tmp_path, s)["row_id"].to_numpy() for s in ("train", "valid", "test", "valid_random")])
    assert len(np.unique(ids)) == len(ids)


def test_no_trusted_signal_writes_no_column_and_no_bucket(tmp_path: Path) -> None:
    generate(str(tmp_path), with_trusted(PRESETS["tiny"], 0, 0, 0), seed=0)
    assert DataSchema.load(str(tmp_path)).trusted_label is None
    assert "trusted_label" not in _read(tmp_path, "valid").column_names
    assert not (tmp_path / "valid_random").exists()


@pytest.mark.parametrize(
    "name, match", [("nope", "--noise 'nope': expected a family"), ("clickbait+clickbait", "each once")]
)
def test_unknown_family_is_named(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NoiseSpec.parse(name)


def test_composed_steps_follow_the_documented_order() -> None:
    assert NoiseSpec.parse("random_clickers+examination").steps == ("examination", "random_clickers")
    assert NoiseSpec.parse("clickbait_context").steps == ("examination", "clickbait")


def test_gen_data_command_takes_the_family_and_the_trusted_sizes(tmp_path: Path, capsys) -> None:
    from denoisrec.trainer.cli import main

    out = tmp_path / "d"
    args = ["gen-data", "--preset", "tiny", "--out", str(out), "--quiet", "--noise", "clickbait_context"]
    assert main([*args, "--trusted-rows", "200", "--trusted-train-rows", "100", "--random-rows", "600"]) == 0
    printed = capsys.readouterr().out
    assert "noise: clickbait_context (examination+clickbait)" in printed and "trusted labels: 200 valid rows" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["trusted"]["valid"]["rows"] == 200 and stats["trusted"]["train"]["rows"] == 100
    assert stats["valid_random"]["rows"] == 600 and stats["noise"]["family"] == "clickbait_context"
    assert DataSchema.load(str(out)).extra["preset"]["noise"] == "clickbait_context"
    assert main([*args, "--trusted-rows", "-1"]) == 2
    assert "--trusted-rows -1: expected a row count >= 0" in capsys.readouterr().err

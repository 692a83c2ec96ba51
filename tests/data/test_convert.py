"""`denoisrec convert`: MovieLens-100K and DeCA's format → our Parquet schema, on small fabricated files."""

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pyarrow.dataset as ds
import pytest

from denoisrec.trainer.cli import main
from denoisrec.trainer.data.reader import DataError, ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.datasets.convert import convert_deca, convert_movielens

OCCUPATIONS = ["artist", "doctor", "engineer", "other"]
# user id → (age, gender, occupation, zip)
USERS = {
    1: (17, "M", "artist", "85711"),
    2: (24, "F", "doctor", "94043"),
    3: (25, "M", "other", "T8H1N"),
    4: (49, "F", "engineer", "02139"),
    5: (56, "M", "other", "55105"),
    6: (33, "F", "artist", "V3N4P"),
}
N_ITEMS = 12


def _genre_flags(item: int) -> List[int]:
    flags = [0] * 19
    flags[item % 19] = 1
    if item % 3 == 0:
        flags[(item + 5) % 19] = 1
    return flags


def _release(item: int) -> str:
    return "" if item == 7 else f"01-Jan-{1990 + item}"


def make_movielens(root: Path, ratings: List[Tuple[int, int, int, int]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    (root / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|{z}\n" for u, (a, g, o, z) in USERS.items()))
    (root / "u.occupation").write_text("".join(f"{o}\n" for o in OCCUPATIONS))
    (root / "u.item").write_text(
        "".join(
            f"{i}|Film {i} ({1990 + i})|{_release(i)}||http://x/{i}|" + "|".join(map(str, _genre_flags(i))) + "\n"
            for i in range(1, N_ITEMS + 1)
        )
    )
    return root


def fabricated_ratings(seed: int = 3) -> List[Tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    rows = []
    for u in USERS:
        for i in rng.choice(np.arange(1, N_ITEMS + 1), size=5, replace=False):
            rows.append((u, int(i), int(rng.integers(1, 6)), int(rng.integers(10**8, 10**9))))
    return rows  # 30 ratings, each user rated 5 of 12 items


def _table(out: Path, split: str) -> Dict[str, np.ndarray]:
    t = ds.dataset(str(out / split)).to_table()
    return {c: (t.column(c).to_pylist() if c == "item_genres" else t.column(c).to_numpy()) for c in t.column_names}


def test_movielens_rows_labels_noise_negatives_and_features(tmp_path: Path) -> None:
    ratings = fabricated_ratings()
    src = make_movielens(tmp_path / "ml", ratings)
    out = tmp_path / "out"
    stats = convert_movielens(str(src), str(out), noisy_max_rating=3, seed=0)
    rating_of = {(u - 1, i - 1): r for u, i, r, _ in ratings}
    rated = {(u - 1, i - 1) for u, i, _, _ in ratings}
    splits = {s: _table(out, s) for s in ("train", "valid", "test")}
    # 8:1:1 of 30 positives → 24 / 3 / 3, each with one negative.
    assert [int(splits[s]["label"].sum()) for s in splits] == [24, 3, 3]
    assert [len(splits[s]["label"]) for s in splits] == [48, 6, 6]
    seen_pos = set()
    for t in splits.values():
        for k in range(len(t["label"])):
            key = (int(t["user_id"][k]), int(t["item_id"][k]))
            if t["label"][k] == 1:
                seen_pos.add(key)
                noisy = rating_of[key] <= 3
                assert t["rating"][k] == rating_of[key]
                assert t["is_noisy"][k] == int(noisy) and t["clean_label"][k] == int(not noisy)
            else:
                assert key not in rated, "a sampled negative must be an item the user never rated"
                assert t["is_noisy"][k] == 0 and t["clean_label"][k] == 0 and t["rating"][k] == 0
            u = int(t["user_id"][k]) + 1
            age, gender, occ, z = USERS[u]
            assert t["user_age"][k] == {17: 0, 24: 1, 25: 2, 33: 2, 49: 4, 56: 6}[age]
            assert t["user_gender"][k] == (0 if gender == "M" else 1)
            assert t["user_occupation"][k] == OCCUPATIONS.index(occ)
            assert t["user_zip"][k] == (int(z[0]) if z[0].isdigit() else 10)
            i = int(t["item_id"][k]) + 1
            assert sorted(t["item_genres"][k]) == [g for g, f in enumerate(_genre_flags(i)) if f]
            # release years 1991..2002 except item 7 (unknown → 0); bucket = year − 1991 + 1
            assert t["item_year"][k] == (0 if i == 7 else 1990 + i - 1991 + 1)
    assert seen_pos == rated, "every rating is exactly one observed positive"
    noisy = sum(r <= 3 for _, _, r, _ in ratings)
    assert (
        stats["train"]["noisy_positives"] + stats["valid"]["noisy_positives"] + stats["test"]["noisy_positives"]
        == noisy
    )
    row_ids = np.concatenate([t["row_id"] for t in splits.values()])
    assert len(np.unique(row_ids)) == len(row_ids) == 60
    # Negatives per user: 5 positives, 7 unrated items → drawn without replacement.
    assert stats["users_negatives_with_replacement"] == 0
    for u in range(6):
        negs = [
            int(t["item_id"][k])
            for t in splits.values()
            for k in range(len(t["label"]))
            if t["label"][k] == 0 and t["user_id"][k] == u
        ]
        assert len(negs) == 5 and len(set(negs)) == 5


def test_movielens_schema_reader_threshold_clean_test_and_determinism(tmp_path: Path) -> None:
    src = make_movielens(tmp_path / "ml", fabricated_ratings())
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    convert_movielens(str(src), str(a), noisy_max_rating=2, seed=7)
    convert_movielens(str(src), str(b), noisy_max_rating=2, seed=7)
    for s in ("train", "valid", "test"):
        assert (a / s / "part-00000.parquet").read_bytes() == (b / s / "part-00000.parquet").read_bytes()
    t = _table(a, "train")
    assert ((t["rating"] <= 2) & (t["label"] == 1) == (t["is_noisy"] == 1)).all()
    schema = DataSchema.load(str(a))
    assert schema.dense == [] and schema.ground_truth and schema.extra["source"] == "movielens-100k"
    sizes = {f.name: f.num_embeddings for f in schema.sparse}
    assert sizes["user_id"] == 6 and sizes["item_id"] == N_ITEMS and sizes["item_genres"] == 19
    batch = next(iter(ParquetBatchReader(str(a / "train"), schema, 16)))
    assert tuple(batch.dense_features.shape) == (16, 0)
    assert batch.sparse_features.keys() == schema.sparse_names and batch.clean_labels is not None
    # clean_test=remove drops exactly the noisy test positives of the relabel variant (same seed).
    convert_movielens(str(src), str(c), noisy_max_rating=2, seed=7, clean_test="remove")
    ta, tc = _table(a, "test"), _table(c, "test")
    assert tc["is_noisy"].sum() == 0
    assert len(ta["label"]) - len(tc["label"]) == int(ta["is_noisy"].sum())
    assert (tc["label"] == tc["clean_label"]).all()


def test_movielens_time_split_puts_latest_ratings_in_test(tmp_path: Path) -> None:
    ratings = fabricated_ratings()
    src = make_movielens(tmp_path / "ml", ratings)
    convert_movielens(str(src), str(tmp_path / "o"), split_by="time", neg_ratio=0)
    tr, te = _table(tmp_path / "o", "train"), _table(tmp_path / "o", "test")
    assert tr["timestamp"].max() <= te["timestamp"].min()
    assert sorted(te["timestamp"]) == sorted(t for *_, t in ratings)[-3:]


def test_movielens_bad_input_names_file_and_line(tmp_path: Path) -> None:
    rows = fabricated_ratings()
    rows[4] = (rows[4][0], rows[4][1], 6, rows[4][3])
    src = make_movielens(tmp_path / "bad", rows)
    with pytest.raises(DataError, match=r"u\.data: data line 5: rating 6"):
        convert_movielens(str(src), str(tmp_path / "o"))
    src = make_movielens(tmp_path / "dup", fabricated_ratings() + [fabricated_ratings()[0]])
    with pytest.raises(DataError, match="rated more than once"):
        convert_movielens(str(src), str(tmp_path / "o"))
    src = make_movielens(tmp_path / "occ", fabricated_ratings())
    (src / "u.user").write_text((src / "u.user").read_text().replace("doctor", "pilot"))
    with pytest.raises(DataError, match=r"u\.user:2: occupation 'pilot'"):
        convert_movielens(str(src), str(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="u.data"):
        convert_movielens(str(tmp_path / "nowhere"), str(tmp_path / "o"))


def make_deca(root: Path, with_noisy: bool = True) -> Tuple[Path, Dict[Tuple[int, int], int]]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    pairs = [(u, i) for u in range(8) for i in rng.choice(10, size=4, replace=False)]
    rating = {p: int(rng.integers(1, 6)) for p in pairs}
    parts = {"train.rating": pairs[:24], "valid.rating": pairs[24:28], "test.noisy": pairs[28:]}
    for suffix, ps in parts.items():
        if suffix != "test.noisy" or with_noisy:
            (root / f"shop.{suffix}").write_text("".join(f"{u}\t{i}\t{rating[(u, i)]}\n" for u, i in ps))
    clean = [p for p in parts["test.noisy"] if rating[p] == 5]
    (root / "shop.test.negative").write_text("".join(f"{u}\t{i}\t5\n" for u, i in clean))
    return root, rating


def test_deca_format_splits_noise_and_clean_test_agreement(tmp_path: Path) -> None:
    src, rating = make_deca(tmp_path / "deca")
    out = tmp_path / "o"
    stats = convert_deca(str(src), str(out), seed=0)
    counts = {s: int(_table(out, s)["label"].sum()) for s in ("train", "valid", "test")}
    assert counts == {"train": 24, "valid": 4, "test": 4}
    for s in ("train", "valid", "test"):
        t = _table(out, s)
        pos = t["label"] == 1
        expect = np.array([rating[(int(u), int(i))] <= 4 for u, i in zip(t["user_id"][pos], t["item_id"][pos])])
        assert (t["is_noisy"][pos] == expect).all()
        negs = ~pos
        assert not any((int(u), int(i)) in rating for u, i in zip(t["user_id"][negs], t["item_id"][negs]))
    n_clean = sum(1 for p in list(rating)[28:] if rating[p] == 5)
    assert stats["clean_test_vs_test_negative"] == {
        "threshold_clean_test_pairs": n_clean,
        "test_negative_pairs": n_clean,
        "only_in_threshold": 0,
        "only_in_test_negative": 0,
    }
    assert DataSchema.load(str(out)).sparse_names == ["user_id", "item_id"]
    # Threshold 3 calls rating-4 test pairs clean too: the disagreement with the file is reported.
    n4 = sum(1 for p in list(rating)[28:] if rating[p] == 4)
    s3 = convert_deca(str(src), str(tmp_path / "o3"), noisy_max_rating=3)
    assert s3["clean_test_vs_test_negative"]["only_in_threshold"] == n4
    # Without *.test.noisy the test positives are the clean file's.
    src2, _ = make_deca(tmp_path / "deca2", with_noisy=False)
    convert_deca(str(src2), str(tmp_path / "o2"))
    t = _table(tmp_path / "o2", "test")
    assert int(t["label"].sum()) == n_clean and t["is_noisy"].sum() == 0


def test_deca_rejects_ncf_style_test_file_and_cli_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, _ = make_deca(tmp_path / "deca")
    assert main(["convert", "deca", str(src), "--out", str(tmp_path / "o")]) == 0
    assert "clean test pairs by threshold" in capsys.readouterr().out
    (src / "shop.test.negative").write_text("(0,1)\t3\t4\t5\n")
    assert main(["convert", "deca", str(src), "--out", str(tmp_path / "o")]) == 2
    assert "NCF-style" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["movielens", "deca"])
def test_ratings_become_trusted_labels_on_a_sample_of_valid_and_train_rows(tmp_path: Path, source: str) -> None:
    if source == "movielens":
        src = make_movielens(tmp_path / "ml", fabricated_ratings())
        stats = convert_movielens(str(src), str(tmp_path / "o"), trusted_rows=3, trusted_train_rows=5)
        rated = {(u - 1, i - 1): r for u, i, r, _ in fabricated_ratings()}
        thr = 3
    else:
        src, rating = make_deca(tmp_path / "deca")
        stats = convert_deca(str(src), str(tmp_path / "o"), trusted_rows=3, trusted_train_rows=5)
        rated, thr = dict(rating), 4
    out = tmp_path / "o"
    assert DataSchema.load(str(out)).trusted_label == "trusted_label"
    for split, k in (("train", 5), ("valid", 3), ("test", 0)):
        t = ds.dataset(str(out / split)).to_table()
        tr = t.column("trusted_label").to_pylist()
        has = [i for i, v in enumerate(tr) if v is not None]
        assert len(has) == k, split
        for j in has:  # the rating read as a label; a sampled negative reads 0
            r = rated.get((t["user_id"][j].as_py(), t["item_id"][j].as_py()))
            assert tr[j] == (0 if r is None else int(r > thr)) == t["clean_label"][j].as_py()
        if k:
            assert stats["trusted"][split]["rows"] == k


def test_no_trusted_rows_means_no_trusted_column(tmp_path: Path) -> None:
    src = make_movielens(tmp_path / "ml", fabricated_ratings())
    stats = convert_movielens(str(src), str(tmp_path / "o"), trusted_rows=0)
    assert DataSchema.load(str(tmp_path / "o")).trusted_label is None and "trusted" not in stats
    assert "trusted_label" not in ds.dataset(str(tmp_path / "o" / "valid")).to_table().column_names

r"""Real rating data with noise ground truth → a denoisrec dataset (Parquet splits + ``schema.json``).

Two source formats, one protocol (the DART thesis' reading of rating data as noisy implicit feedback):

- **MovieLens-100K** (``u.data``, ``u.user``, ``u.item``; :func:`convert_movielens`).
- **DeCA's files** (``<name>.train.rating``, ``<name>.valid.rating``, ``<name>.test.negative`` and, when
  present, ``<name>.test.noisy``; each line ``user \t item \t rating``; :func:`convert_deca`). ModCloth in
  DeCA's preprocessing is the reference dataset.

The protocol:

1. **Every rating is an observed positive** (``label = 1``).
2. **Ground truth from the rating**: a positive is *noisy* (a false positive) when its rating is at most
   ``noisy_max_rating``; then ``is_noisy = 1`` and ``clean_label = 0``. MovieLens default 3: the DART thesis'
   code and its Table 1 (44.6% of positives noisy; the thesis *text* says "rating < 3", i.e. 2, which gives
   17.5%). DeCA default 4: DeCA's clean test keeps rating = 5 only, so clean means 5.
3. **Negatives**: ``neg_ratio`` (default 1) per positive, drawn from the items the user never rated in any
   split (seeded; without replacement per user while the user's unrated items suffice, and the count of
   users for whom they did not is reported). A negative is paired with one of the user's positives and goes
   to that positive's split; ``label = clean_label = 0``, ``is_noisy = 0``.
4. **Splits**: MovieLens is split 8:1:1 at random (DART; ``split_by="time"`` sorts by timestamp instead, as
   ADT and DeCA do); DeCA's files come split already.
5. **Clean test**: ``clean_test="relabel"`` (default, DART) keeps the test split's noisy positives with
   ``clean_label = 0``, so the clean-label evaluation counts them as negatives;
   ``clean_test="remove"`` drops them from the test split (the test then holds no noise at all).
   Train and validation always keep the observed labels (selection happens on noisy validation data).

Features (no dense features in either source; the schema's ``dense`` list is empty):

- MovieLens: ``user_id``, ``item_id``, ``user_age`` (7 buckets: <18, 18-24, 25-34, 35-44, 45-49, 50-55,
  56+), ``user_gender``, ``user_occupation``, ``user_zip`` (first ZIP digit, 10 = not a digit),
  ``item_genres`` (multi-hot over the 19 genre flags), ``item_year`` (release year, 0 = unknown).
- DeCA: ``user_id``, ``item_id``.

**Trusted labels** (``trusted_rows``, default 5000, and ``trusted_train_rows``, default 0): a uniform sample
of that many valid (and train) rows carries ``trusted_label``, the explicit rating read as a label: 1 when the
rating is above ``noisy_max_rating``, 0 when at most (and 0 for a sampled negative, the protocol's reading of an
unrated item, as the clean test reads it); null on every other row (test rows: always). It is the row's
``clean_label``: the sample stands for the few rated impressions a real log has (a rated sample, a survey).
``schema.json`` names the column (``trusted_label``) when some row has one; ``stats.json["trusted"]`` gives the
counts and positive rates.

Extra columns kept for analysis (the reader ignores them): ``rating`` (0 for sampled negatives) and, for
MovieLens, ``timestamp``. Rows are shuffled within each split (the reader shuffles row groups only).

Example::

    stats = convert_movielens("../shared/data/ml-100k", "data/ml100k", seed=0)
    stats["train"]["noisy_positive_rate"]  # ≈ 0.446 with the default threshold 3
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from denoisrec.trainer.data.schema import SPLITS, DataSchema, SparseFeature
from denoisrec.trainer.errors import DataError

AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups: <18, 18-24, ..., 56+
N_GENRES = 19
CLEAN_TEST = ("relabel", "remove")
ROW_GROUP = 8192
TRUSTED_COLUMN = "trusted_label"


@dataclass
class Ratings:
    """Positive interactions of one source, before negatives: parallel arrays plus the split of each."""

    user: np.ndarray  # int64, 0-based
    item: np.ndarray  # int64, 0-based
    rating: np.ndarray  # int64
    split: np.ndarray  # int64 index into SPLITS
    timestamp: Optional[np.ndarray] = None


def _rng(seed: int, key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, key])))


def _read_table(path: str, sep: str, min_fields: int, encoding: str = "utf-8") -> List[List[str]]:
    """Non-empty lines of a text file split by ``sep``; each must have at least ``min_fields`` fields."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    with open(path, encoding=encoding) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(sep)
            if len(parts) < min_fields:
                raise DataError(
                    f"{path}:{n}: expected {min_fields} fields separated by {sep!r}, got {len(parts)}: {line[:80]!r}"
                )
            rows.append(parts)
    if not rows:
        raise DataError(f"{path}: empty file")
    return rows


def _ints(path: str, rows: List[List[str]], col: int, what: str) -> np.ndarray:
    try:
        return np.array([int(r[col]) for r in rows], dtype=np.int64)
    except ValueError:
        for n, r in enumerate(rows, 1):
            try:
                int(r[col])
            except ValueError:
                raise DataError(f"{path}: data line {n}: {what} {r[col]!r} is not an integer") from None
        raise


def _check_ratings(path: str, rating: np.ndarray, lo: int, hi: int) -> None:
    bad = (rating < lo) | (rating > hi)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: data line {i + 1}: rating {int(rating[i])} outside [{lo}, {hi}]")


def _check_unique_pairs(where: str, user: np.ndarray, item: np.ndarray) -> None:
    key = user * (int(item.max()) + 1) + item
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    if (counts > 1).any():
        i = int(first[np.flatnonzero(counts > 1)[0]])
        raise DataError(f"{where}: (user, item) pair ({int(user[i])}, {int(item[i])}) is rated more than once")


def sample_negatives(
    user: np.ndarray, item: np.ndarray, n_items: int, ratio: int, rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray, int]:
    """``ratio`` negatives per positive from each user's unrated items.

    Returns ``(neg_item, pos_index, users_with_replacement)``: ``neg_item[j]`` is paired with positive
    ``pos_index[j]`` (so it can inherit that positive's split). Per user the draw is without replacement
    while the user's unrated items suffice, with replacement otherwise (counted).
    """
    order = np.argsort(user, kind="stable")
    u_sorted = user[order]
    starts = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1]])
    ends = np.r_[starts[1:], u_sorted.size]
    neg_items, pos_idx = [], []
    replaced = 0
    all_items = np.arange(n_items, dtype=np.int64)
    for s, e in zip(starts, ends):
        idx = order[s:e]
        rated = np.zeros(n_items, dtype=bool)
        rated[item[idx]] = True
        pool = all_items[~rated]
        need = idx.size * ratio
        if pool.size == 0:
            raise DataError(f"user {int(u_sorted[s])} rated every item: no negative can be sampled")
        if pool.size >= need:
            draw = rng.choice(pool, size=need, replace=False)
        else:
            draw = rng.choice(pool, size=need, replace=True)
            replaced += 1
        neg_items.append(draw)
        pos_idx.append(np.repeat(idx, ratio))
    return np.concatenate(neg_items), np.concatenate(pos_idx), replaced


def random_split(n: int, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Split index (0/1/2) for ``n`` rows: a seeded permutation cut at the cumulative ``fractions``."""
    cuts = _cuts(n, fractions)
    split = np.empty(n, dtype=np.int64)
    perm = rng.permutation(n)
    for s, (lo, hi) in enumerate(zip([0] + cuts, cuts + [n])):
        split[perm[lo:hi]] = s
    return split


def time_split(timestamp: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Split index by global time order (ties broken by row order): earliest rows train, latest test."""
    n = timestamp.size
    cuts = _cuts(n, fractions)
    order = np.argsort(timestamp, kind="stable")
    split = np.empty(n, dtype=np.int64)
    for s, (lo, hi) in enumerate(zip([0] + cuts, cuts + [n])):
        split[order[lo:hi]] = s
    return split


def _cuts(n: int, fractions: Sequence[float]) -> List[int]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {list(fractions)}: expected three non-negative numbers summing to 1")
    c1 = int(round(n * fractions[0]))
    c2 = int(round(n * (fractions[0] + fractions[1])))
    return [c1, c2]


def _list_array(lists: List[np.ndarray]) -> pa.ListArray:
    lengths = np.array([len(x) for x in lists], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.int64()))


def build_rows(
    ratings: Ratings, n_items: int, noisy_max_rating: int, neg_ratio: int, clean_test: str, seed: int
) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Positives + sampled negatives as column arrays (user, item, rating, label, clean_label, is_noisy,
    split[, timestamp]); noisy test positives removed when ``clean_test == "remove"``.
    """
    if clean_test not in CLEAN_TEST:
        raise ValueError(f"--clean-test {clean_test!r}: expected one of {CLEAN_TEST}")
    if neg_ratio < 0:
        raise ValueError(f"--neg-ratio {neg_ratio}: must be >= 0")
    n_pos = ratings.user.size
    if neg_ratio:
        neg_item, pos_idx, replaced = sample_negatives(ratings.user, ratings.item, n_items, neg_ratio, _rng(seed, 1))
    else:
        neg_item, pos_idx, replaced = np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    noisy_pos = (ratings.rating <= noisy_max_rating).astype(np.int8)
    cols: Dict[str, np.ndarray] = {
        "user": np.concatenate([ratings.user, ratings.user[pos_idx]]),
        "item": np.concatenate([ratings.item, neg_item]),
        "rating": np.concatenate([ratings.rating, np.zeros(neg_item.size, np.int64)]).astype(np.int8),
        "label": np.concatenate([np.ones(n_pos, np.int8), np.zeros(neg_item.size, np.int8)]),
        "is_noisy": np.concatenate([noisy_pos, np.zeros(neg_item.size, np.int8)]),
        "split": np.concatenate([ratings.split, ratings.split[pos_idx]]),
    }
    if ratings.timestamp is not None:
        cols["timestamp"] = np.concatenate([ratings.timestamp, ratings.timestamp[pos_idx]])
    cols["clean_label"] = (cols["label"] * (1 - cols["is_noisy"])).astype(np.int8)
    removed = 0
    if clean_test == "remove":
        drop = (cols["split"] == SPLITS.index("test")) & (cols["is_noisy"] == 1)
        removed = int(drop.sum())
        cols = {k: v[~drop] for k, v in cols.items()}
    info = {
        "negatives": int(neg_item.size),
        "users_negatives_with_replacement": replaced,
        "noisy_test_positives_removed": removed,
    }
    return cols, info


def write_dataset(
    out: str,
    cols: Dict[str, np.ndarray],
    features: Dict[str, Any],
    schema: DataSchema,
    seed: int,
    extra_stats: Dict[str, Any],
    trusted_rows: Optional[Dict[str, int]] = None,
) -> Dict[str, Any]:
    """Write the three splits (rows shuffled per split), ``schema.json`` and ``stats.json``.

    ``features`` maps a feature column to a function of the row indices (``np.ndarray → array``);
    ``trusted_rows`` ``{split: k}``: the first ``k`` rows of the shuffled split (a uniform sample) carry
    ``trusted_label`` (their clean label; module docstring).
    """
    os.makedirs(out, exist_ok=True)
    stats: Dict[str, Any] = {"seed": seed, **extra_stats}
    trusted_rows = {k: v for k, v in (trusted_rows or {}).items() if v > 0}
    for split in trusted_rows:
        if split not in ("train", "valid"):
            raise ValueError(f"trusted rows in split {split!r}: only train and valid rows carry trusted labels")
    if trusted_rows:
        schema.trusted_label = TRUSTED_COLUMN
        stats["trusted"] = {
            "column": TRUSTED_COLUMN,
            "definition": "the explicit rating read as a label (clean_label) on a uniform sample of the split's "
            "rows, null on the others",
        }
    offset = 0
    rng = _rng(seed, 2)
    for s, split in enumerate(SPLITS):
        idx = np.flatnonzero(cols["split"] == s)
        if idx.size == 0:
            raise DataError(f"{out}: split {split!r} would be empty; check the split fractions / input files")
        idx = idx[rng.permutation(idx.size)]
        table: Dict[str, Any] = {"row_id": np.arange(offset, offset + idx.size, dtype=np.int64)}
        for name, fn in features.items():
            table[name] = fn(idx)
        for c in ("rating", "timestamp", "label", "clean_label", "is_noisy"):
            if c in cols:
                table[c] = cols[c][idx]
        if trusted_rows:
            k = min(trusted_rows.get(split, 0), idx.size)
            clean = cols["clean_label"][idx]
            table[TRUSTED_COLUMN] = pa.array(clean, type=pa.int8(), mask=np.arange(idx.size) >= k)
            if k:
                stats["trusted"][split] = {"rows": k, "positive_rate": float(clean[:k].mean())}
        d = os.path.join(out, split)
        os.makedirs(d, exist_ok=True)
        for old in glob.glob(os.path.join(d, "*.parquet")):
            os.remove(old)
        pq.write_table(
            pa.table(table), os.path.join(d, "part-00000.parquet"), row_group_size=ROW_GROUP, compression="snappy"
        )
        label, noisy = cols["label"][idx], cols["is_noisy"][idx]
        n_lab = int(label.sum())
        stats[split] = {
            "rows": int(idx.size),
            "positives": n_lab,
            "noisy_positives": int(noisy.sum()),
            "positive_rate": n_lab / idx.size,
            "clean_positive_rate": float(cols["clean_label"][idx].mean()),
            "noisy_positive_rate": float(noisy.sum() / max(n_lab, 1)),
            "noisy_rate": float(noisy.mean()),
        }
        offset += idx.size
    schema.save(os.path.join(out, "schema.json"))
    with open(os.path.join(out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
    return stats


# --------------------------------------------------------------------------------------------- MovieLens


def _age_bucket(age: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.array(AGE_EDGES), age, side="right").astype(np.int64)


_YEAR = re.compile(r"(\d{4})\s*$")


def read_movielens(path: str) -> Tuple[Ratings, Dict[str, np.ndarray], Dict[str, int]]:
    """Read ``u.data``, ``u.user``, ``u.item`` (and ``u.occupation`` when present).

    Returns the ratings (split column unset: zeros), per-user/per-item feature arrays indexed by the
    0-based id, and the table sizes.
    """
    f_data, f_user, f_item = (os.path.join(path, n) for n in ("u.data", "u.user", "u.item"))
    rows = _read_table(f_data, "\t", 4)
    user, item = _ints(f_data, rows, 0, "user id"), _ints(f_data, rows, 1, "item id")
    rating, ts = _ints(f_data, rows, 2, "rating"), _ints(f_data, rows, 3, "timestamp")
    _check_ratings(f_data, rating, 1, 5)
    if user.min() < 1 or item.min() < 1:
        raise DataError(f"{f_data}: ids are 1-based; found user {int(user.min())} / item {int(item.min())}")
    _check_unique_pairs(f_data, user, item)

    urows = _read_table(f_user, "|", 5, encoding="latin-1")
    uid = _ints(f_user, urows, 0, "user id")
    n_users = int(max(uid.max(), user.max()))
    missing = np.setdiff1d(user, uid)
    if missing.size:
        raise DataError(f"{f_data}: user {int(missing[0])} has no line in {f_user}")
    f_occ = os.path.join(path, "u.occupation")
    occupations = [r[0] for r in _read_table(f_occ, "|", 1)] if os.path.isfile(f_occ) else sorted({r[3] for r in urows})
    occ_index = {o: i for i, o in enumerate(occupations)}
    u_age = np.zeros(n_users, np.int64)
    u_gender = np.zeros(n_users, np.int64)
    u_occ = np.zeros(n_users, np.int64)
    u_zip = np.zeros(n_users, np.int64)
    ages = _ints(f_user, urows, 1, "age")
    for n, (r, a) in enumerate(zip(urows, ages), 1):
        i = int(r[0]) - 1
        if r[2] not in ("M", "F"):
            raise DataError(f"{f_user}:{n}: gender {r[2]!r}, expected M or F")
        if r[3] not in occ_index:
            raise DataError(f"{f_user}:{n}: occupation {r[3]!r} is not listed in {f_occ}")
        u_age[i] = _age_bucket(np.array([a]))[0]
        u_gender[i] = 0 if r[2] == "M" else 1
        u_occ[i] = occ_index[r[3]]
        z = r[4].strip()
        u_zip[i] = int(z[0]) if z[:1].isdigit() else 10

    irows = _read_table(f_item, "|", 5 + N_GENRES, encoding="latin-1")
    iid = _ints(f_item, irows, 0, "item id")
    n_items = int(max(iid.max(), item.max()))
    missing = np.setdiff1d(item, iid)
    if missing.size:
        raise DataError(f"{f_data}: item {int(missing[0])} has no line in {f_item}")
    years = np.zeros(n_items, np.int64)
    genres: List[np.ndarray] = [np.zeros(0, np.int64)] * n_items
    for n, r in enumerate(irows, 1):
        i = int(r[0]) - 1
        m = _YEAR.search(r[2])
        years[i] = int(m.group(1)) if m else 0
        flags = r[5 : 5 + N_GENRES]
        if any(x not in ("0", "1") for x in flags):
            raise DataError(f"{f_item}:{n}: genre flags must be 0 or 1, got {flags}")
        genres[i] = np.flatnonzero(np.array(flags) == "1").astype(np.int64)
    known = years[years > 0]
    y0 = int(known.min()) if known.size else 0
    year_bucket = np.where(years > 0, years - y0 + 1, 0)
    feats = {
        "user_age": u_age,
        "user_gender": u_gender,
        "user_occupation": u_occ,
        "user_zip": u_zip,
        "item_year": year_bucket,
        "item_genres": np.array(genres, dtype=object),
    }
    sizes = {
        "user_id": n_users,
        "item_id": n_items,
        "user_age": len(AGE_EDGES) + 1,
        "user_gender": 2,
        "user_occupation": len(occupations),
        "user_zip": 11,
        "item_year": int(year_bucket.max()) + 1,
        "item_genres": N_GENRES,
    }
    ratings = Ratings(user - 1, item - 1, rating, np.zeros(user.size, np.int64), ts)
    return ratings, feats, sizes


def convert_movielens(
    path: str,
    out: str,
    noisy_max_rating: int = 3,
    neg_ratio: int = 1,
    seed: int = 0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    split_by: str = "random",
    clean_test: str = "relabel",
    trusted_rows: int = 5000,
    trusted_train_rows: int = 0,
) -> Dict[str, Any]:
    """Convert a MovieLens-100K folder to a denoisrec dataset under ``out``; return its statistics.

    ``trusted_rows`` valid rows and ``trusted_train_rows`` train rows carry ``trusted_label`` (module docstring).
    """
    ratings, feats, sizes = read_movielens(path)
    if split_by == "random":
        ratings.split = random_split(ratings.user.size, split, _rng(seed, 0))
    elif split_by == "time":
        ratings.split = time_split(ratings.timestamp, split)  # type: ignore[arg-type]
    else:
        raise ValueError(f"--split-by {split_by!r}: expected random or time")
    cols, info = build_rows(ratings, sizes["item_id"], noisy_max_rating, neg_ratio, clean_test, seed)
    u, i = cols["user"], cols["item"]
    features = {
        "user_id": lambda idx: u[idx],
        "item_id": lambda idx: i[idx],
        "user_age": lambda idx: feats["user_age"][u[idx]],
        "user_gender": lambda idx: feats["user_gender"][u[idx]],
        "user_occupation": lambda idx: feats["user_occupation"][u[idx]],
        "user_zip": lambda idx: feats["user_zip"][u[idx]],
        "item_genres": lambda idx: _list_array(list(feats["item_genres"][i[idx]])),
        "item_year": lambda idx: feats["item_year"][i[idx]],
    }
    sparse = [SparseFeature(n, sizes[n], multi_hot=(n == "item_genres")) for n in features]
    options = {
        "noisy_max_rating": noisy_max_rating,
        "neg_ratio": neg_ratio,
        "split": list(split),
        "split_by": split_by,
        "clean_test": clean_test,
        "seed": seed,
    }
    schema = DataSchema(sparse=sparse, dense=[], extra={"source": "movielens-100k", "options": options})
    counts = np.bincount(ratings.rating, minlength=6)[1:]
    stats = write_dataset(
        out,
        cols,
        features,
        schema,
        seed,
        {
            "source": "movielens-100k",
            "options": options,
            "ratings": int(ratings.user.size),
            "users": sizes["user_id"],
            "items": sizes["item_id"],
            "rating_counts": {str(r + 1): int(c) for r, c in enumerate(counts)},
            "noisy_positive_share_all": float((ratings.rating <= noisy_max_rating).mean()),
            **info,
        },
        {"valid": trusted_rows, "train": trusted_train_rows},
    )
    return stats


# ----------------------------------------------------------------------------------------------------- DeCA


def _deca_prefix(path: str) -> str:
    found = sorted(glob.glob(os.path.join(path, "*.train.rating")))
    if not found:
        raise FileNotFoundError(f"{path}: no <name>.train.rating file (DeCA's format)")
    if len(found) > 1:
        raise DataError(
            f"{path}: several DeCA datasets ({[os.path.basename(f) for f in found]}); point to a folder with one"
        )
    return found[0][: -len(".train.rating")]


def _read_deca(f: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = _read_table(f, "\t", 3)
    if rows[0][0].startswith("("):
        raise DataError(
            f"{f}: NCF-style '(user,item)\\tneg1\\tneg2...' lines are not DeCA's rating format "
            "(user \\t item \\t rating)"
        )
    u, i, r = _ints(f, rows, 0, "user id"), _ints(f, rows, 1, "item id"), _ints(f, rows, 2, "rating")
    if u.min() < 0 or i.min() < 0:
        raise DataError(f"{f}: negative user or item id")
    _check_ratings(f, r, 1, 5)
    return u, i, r


def convert_deca(
    path: str,
    out: str,
    noisy_max_rating: int = 4,
    neg_ratio: int = 1,
    seed: int = 0,
    clean_test: str = "relabel",
    trusted_rows: int = 5000,
    trusted_train_rows: int = 0,
) -> Dict[str, Any]:
    """Convert DeCA's ``*.train.rating / *.valid.rating / *.test.negative [/ *.test.noisy]`` files.

    ``trusted_rows`` valid rows and ``trusted_train_rows`` train rows carry ``trusted_label`` (module docstring).

    The test positives are ``*.test.noisy`` (the full test with ratings) when present, else
    ``*.test.negative`` (DeCA's clean test: then every test positive is clean). The clean test set that
    the threshold defines is compared with ``*.test.negative`` and the agreement reported.
    """
    prefix = _deca_prefix(path)
    parts = []
    for s, suffix in enumerate((".train.rating", ".valid.rating")):
        u, i, r = _read_deca(prefix + suffix)
        parts.append((u, i, r, np.full(u.size, s, np.int64)))
    cu, ci, cr = _read_deca(prefix + ".test.negative")
    noisy_file = prefix + ".test.noisy"
    if os.path.isfile(noisy_file):
        tu, ti, tr = _read_deca(noisy_file)
        test_source = os.path.basename(noisy_file)
    else:
        tu, ti, tr = cu, ci, cr
        test_source = os.path.basename(prefix + ".test.negative")
    parts.append((tu, ti, tr, np.full(tu.size, 2, np.int64)))
    user = np.concatenate([p[0] for p in parts])
    item = np.concatenate([p[1] for p in parts])
    rating = np.concatenate([p[2] for p in parts])
    split = np.concatenate([p[3] for p in parts])
    _check_unique_pairs(prefix + ".{train,valid}.rating / test", user, item)
    n_users = int(max(user.max(), cu.max())) + 1
    n_items = int(max(item.max(), ci.max())) + 1
    # The threshold's clean test positives versus DeCA's clean test file.
    key = lambda a, b: a * n_items + b  # noqa: E731
    mine = set(key(tu[tr > noisy_max_rating], ti[tr > noisy_max_rating]).tolist())
    theirs = set(key(cu, ci).tolist())
    agreement = {
        "threshold_clean_test_pairs": len(mine),
        "test_negative_pairs": len(theirs),
        "only_in_threshold": len(mine - theirs),
        "only_in_test_negative": len(theirs - mine),
    }
    ratings = Ratings(user, item, rating, split)
    cols, info = build_rows(ratings, n_items, noisy_max_rating, neg_ratio, clean_test, seed)
    u, i = cols["user"], cols["item"]
    features = {"user_id": lambda idx: u[idx], "item_id": lambda idx: i[idx]}
    name = os.path.basename(prefix)
    options = {
        "noisy_max_rating": noisy_max_rating,
        "neg_ratio": neg_ratio,
        "clean_test": clean_test,
        "seed": seed,
        "test_positives_from": test_source,
    }
    schema = DataSchema(
        sparse=[SparseFeature("user_id", n_users), SparseFeature("item_id", n_items)],
        dense=[],
        extra={"source": f"deca-{name}", "options": options},
    )
    counts = np.bincount(rating, minlength=6)[1:]
    return write_dataset(
        out,
        cols,
        features,
        schema,
        seed,
        {
            "source": f"deca-{name}",
            "options": options,
            "ratings": int(user.size),
            "users": n_users,
            "items": n_items,
            "rating_counts": {str(r + 1): int(c) for r, c in enumerate(counts)},
            "clean_test_vs_test_negative": agreement,
            **info,
        },
        {"valid": trusted_rows, "train": trusted_train_rows},
    )


def describe(stats: Dict[str, Any]) -> str:
    lines = [
        f"{stats['source']}: {stats['ratings']:,} ratings, {stats['users']:,} users, {stats['items']:,} items; "
        f"ratings 1-5: {' / '.join(f'{c:,}' for c in stats['rating_counts'].values())}; "
        f"negatives {stats['negatives']:,}"
    ]
    for split in SPLITS:
        s = stats[split]
        lines.append(
            f"{split:5s}: {s['rows']:>8,} rows; positives {s['positives']:,} ({s['positive_rate']:.1%}), "
            f"of which noisy {s['noisy_positives']:,} ({s['noisy_positive_rate']:.1%}); "
            f"clean positives {s['clean_positive_rate']:.1%} of rows"
        )
    for split, t in stats.get("trusted", {}).items():
        if isinstance(t, dict):
            lines.append(f"trusted labels: {t['rows']:,} {split} rows (positives {t['positive_rate']:.1%})")
    if stats.get("noisy_test_positives_removed"):
        lines.append(f"clean test: removed {stats['noisy_test_positives_removed']:,} noisy test positives")
    if "clean_test_vs_test_negative" in stats:
        a = stats["clean_test_vs_test_negative"]
        lines.append(
            f"clean test pairs by threshold: {a['threshold_clean_test_pairs']:,}; in *.test.negative: "
            f"{a['test_negative_pairs']:,} (only in threshold {a['only_in_threshold']}, only in file "
            f"{a['only_in_test_negative']})"
        )
    return "\n".join(lines)

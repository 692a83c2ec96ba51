"""Synthetic noisy implicit feedback from a music app, with ground truth.

The generative story (every draw seeded, so a seed gives the same bytes):

1. **Users and items.** Activity and popularity follow Zipf laws; each user and item has a latent taste
   vector. Items belong to a genre (whose centre their latent vector is drawn around), an artist and a
   language, carry 1-3 tags; users have an age bucket, gender and region correlated with their taste.
2. **Impressions.** A row is a song shown to a user at a position 1-30 of a recommendation list, in a
   context (hour, weekday, device, scene). With the default ``logging="ranker"`` the logs are written by a
   previous ranker: a list is one user in one context; 30 candidates are drawn by popularity and shown in
   the order of ``skill·(u·v + b_u + b_i + N(0, noise²)) + popularity·log_pop(i)`` (a noisy copy of the true
   preference plus popularity), so position correlates with preference as in production logs.
   ``logging="independent"`` draws user, item and position of every row independently (the original
   generator; with ``attention_device``/``attention_hour`` zero its bytes are unchanged).
3. **Clean label** ``clean_label = 1[u·v + b_u + b_i + ε > θ]`` with logistic ε and θ set so that a
   ``clean_rate`` share of impressions is truly liked.
4. **Attention.** The user is attentive with probability
   ``σ(a0 − a1·(position − 1) + scene[s] + device[d] + hour_amp·cos(2π·(hour − 15)/24))``, which decays down
   the list, in some scenes and devices and late at night: the noise lives in the context. An attentive
   user's observed label is the clean one. An inattentive user
   lets a disliked song play in the background (a *false positive*, probability ``q_fp``) or never notices
   a liked one (a *false negative*, probability ``q_fn``).
5. ``label`` is the observed label; ``is_noisy = label != clean_label``.

So the ground-truth observation model is ``P(ỹ=1 | y=0, c) = (1 − a(c))·q_fp`` and
``P(ỹ=1 | y=1, c) = a(c) + (1 − a(c))·(1 − q_fn)`` with ``a(c)`` the attention probability; ``stats.json``
records its empirical value per context value (``observation_truth``) and the logging parameters
(``logging``). In ``schema.json`` the context columns (position, scene, device, hour, weekday, ``ctx_cat_*``,
``list_cat_*``) have ``role: context``, the rest ``role: preference``.

With the defaults roughly a third of observed positives are false (the LCD paper's premise), and noisy
positives have low clean preference, so a model's loss on them stays high early in training.

Output: ``<out>/{train,valid,test}/part-NNNNN.parquet`` plus ``schema.json``, ``stats.json`` and
``noise_model.json`` (step 4 as an examination noise model: ``-p observation.noise_file=<out>/noise_model.json``
trains the observation model with the true noise, an oracle).
Generation streams in fixed chunks of rows, so memory is bounded by the user/item tables and one chunk,
whatever the row count.

Example::

    from denoisrec.trainer.datasets.synthetic import generate, PRESETS
    stats = generate("/tmp/tiny", PRESETS["tiny"], seed=0)
    print(stats["train"]["noisy_positive_rate"])
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from denoisrec.trainer.data.schema import SPLITS, DataSchema, SparseFeature
from denoisrec.trainer.datasets.noise_families import (
    NOISE_TRUTH_FILE,
    GroupRates,
    NoiseSpec,
    NoiseWorld,
    apply_step,
    shifted,
)

NOISE_MODEL_FILE = "noise_model.json"  # the true observation noise, beside stats.json
RANDOM_SPLIT = "valid_random"  # lists shown in a random order: the randomised-exposure bucket
TRUSTED_COLUMN = "trusted_label"  # the clean label on a sample of rows, null elsewhere
GEN_CHUNK = 1 << 16  # rows drawn per random chunk; fixed so output does not depend on file layout
N_POSITIONS = 30
SCENES = 6  # playlist, radio, search, daily-mix, charts, similar-songs
DEVICES = 4
SCENE_ATTENTION = (0.3, -0.9, 0.8, 0.0, -0.3, 0.2)  # attention logit offset per scene


@dataclass
class Preset:
    """Size and noise knobs of a synthetic dataset.

    ``extra_*`` add filler categorical features (derived from the user id, the item id, or drawn per row),
    multi-hot lists and dense columns (derived from the user, the item, or drawn per row and bucketed), so
    larger presets can match the width of industrial data (LCD's "Product": 69 features).
    ``recent_items > 0`` adds ``user_recent_items``, a multi-hot list of up to that many item ids.
    ``logging`` is ``"ranker"`` (lists ordered by a previous model: ``ranker_skill`` times a copy of the
    true preference with Gaussian noise of std ``ranker_noise``, plus ``ranker_popularity`` times the
    item's standardised log-popularity) or ``"independent"`` (position drawn independently of everything).
    ``attention_device`` (one logit offset per device) and ``attention_hour`` (amplitude of a daily cycle)
    make the attention, hence the noise, depend on more context than position and scene; ``attention_scene``
    holds one logit offset per scene. ``noise`` names the noise family
    (:mod:`denoisrec.trainer.datasets.noise_families`; ``"examination"`` is the process above).
    ``trusted_rows`` valid rows and ``trusted_train_rows`` train rows (uniform samples, capped at the split's
    size) carry ``trusted_label`` (their clean label; null on the other rows, and on every test and
    ``valid_random`` row); ``random_rows`` rows form ``valid_random``, lists shown in a random order instead of
    the ranker's (0: no such split).
    ``compact`` writes categorical ids as ``int32`` and turns on the writer settings that keep a wide,
    large dataset small on disk (bigger dictionary pages, delta-encoded ``row_id``); ``compression`` is
    the Parquet codec. The defaults keep the small presets' bytes exactly as they always were.
    """

    n_users: int
    n_items: int
    train_rows: int
    valid_rows: int
    test_rows: int
    latent_dim: int = 8
    n_genres: int = 20
    n_tags: int = 64
    n_regions: int = 64
    user_zipf: float = 0.9
    item_zipf: float = 1.1
    clean_rate: float = 0.35
    attention_a0: float = 1.4
    attention_a1: float = 0.07
    q_fp: float = 0.55
    q_fn: float = 0.5
    logging: str = "ranker"
    ranker_skill: float = 1.0
    ranker_noise: float = 2.0
    ranker_popularity: float = 0.5
    attention_device: List[float] = field(default_factory=lambda: [0.0, -0.5, 0.4, -1.0])
    attention_hour: float = 0.6
    attention_scene: List[float] = field(default_factory=lambda: list(SCENE_ATTENTION))
    noise: str = "examination"
    trusted_rows: int = 5000
    trusted_train_rows: int = 0
    random_rows: int = 20_000
    extra_user_features: List[int] = field(default_factory=list)
    extra_item_features: List[int] = field(default_factory=list)
    extra_context_features: List[int] = field(default_factory=list)
    extra_multi_hot: List[int] = field(default_factory=list)
    extra_dense: int = 0
    recent_items: int = 0
    compact: bool = False
    compression: str = "snappy"
    rows_per_file: int = 1 << 20
    row_group_size: int = 1 << 16

    def rows(self, split: str) -> int:
        return {"train": self.train_rows, "valid": self.valid_rows, "test": self.test_rows}[split]


PRESETS: Dict[str, Preset] = {
    # A few thousand rows: unit tests and smoke runs.
    "tiny": Preset(
        n_users=300,
        n_items=200,
        train_rows=6000,
        valid_rows=1500,
        test_rows=1500,
        trusted_rows=500,
        random_rows=1500,
        rows_per_file=2500,
        row_group_size=500,
    ),
    # The embedded default of `make train`: a few minutes on 2 CPU cores.
    "small": Preset(
        n_users=20_000,
        n_items=5_000,
        train_rows=400_000,
        valid_rows=50_000,
        test_rows=50_000,
        rows_per_file=200_000,
        row_group_size=25_000,
    ),
    "medium": Preset(n_users=200_000, n_items=30_000, train_rows=4_000_000, valid_rows=500_000, test_rows=500_000),
    # LCD's industrial "Product" shape (Table 1): 3.64M users, 117K items, 77.11M / 10.89M / 10.96M rows,
    # 69 features (53 categorical of which 4 multi-hot, 16 dense). Files of 4M rows in 256K-row groups.
    "product": Preset(
        n_users=3_640_000,
        n_items=117_000,
        train_rows=77_110_000,
        valid_rows=10_890_000,
        test_rows=10_960_000,
        n_genres=40,
        n_tags=1024,
        n_regions=400,
        recent_items=10,
        extra_user_features=[2, 3, 5, 8, 10, 16, 24, 32, 50, 100, 200, 1000, 10_000, 50_000],
        extra_item_features=[3, 5, 8, 10, 16, 32, 50, 100, 500, 1000, 5000, 20_000],
        extra_context_features=[2, 3, 4, 6, 12, 24, 48, 100],
        extra_multi_hot=[5000],
        extra_dense=12,
        compact=True,
        compression="zstd",
        rows_per_file=1 << 22,
        row_group_size=1 << 18,
    ),
    # A Criteo-like shape for `bench peers`: 26 single-valued categorical features (user_id, item_id and 11
    # fillers of 100,000 ids; the other 13 are the base features' small vocabularies: `bench peers
    # --table-rows 100000` gives every table 100,000 rows), 13 dense columns, 2 multi-hot lists.
    "criteo": Preset(
        n_users=100_000,
        n_items=100_000,
        train_rows=2_000_000,
        valid_rows=250_000,
        test_rows=250_000,
        extra_user_features=[100_000] * 4,
        extra_item_features=[100_000] * 4,
        extra_context_features=[100_000] * 3,
        extra_dense=9,
        compact=True,
        rows_per_file=1 << 20,
        row_group_size=1 << 17,
    ),
}


def _zipf_cdf(n: int, a: float) -> np.ndarray:
    w = 1.0 / np.power(np.arange(1, n + 1, dtype=np.float64), a)
    c = np.cumsum(w)
    return c / c[-1]


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *keys])))


class World:
    """The fixed users and items of a dataset (everything but the impressions)."""

    def __init__(self, p: Preset, seed: int) -> None:
        self.p = p
        d = p.latent_dim
        r = _rng(seed, 1)
        # Items: genre centres, then items around them.
        self.genre_centre = r.normal(0, 1.0, (p.n_genres, d)).astype(np.float32)
        self.item_cdf = _zipf_cdf(p.n_items, p.item_zipf)
        self.item_genre = r.choice(p.n_genres, p.n_items, p=_zipf_pmf(p.n_genres, 0.8)).astype(np.int64)
        self.item_vec = (self.genre_centre[self.item_genre] + r.normal(0, 0.6, (p.n_items, d))).astype(np.float32)
        self.item_bias = r.normal(0, 0.3, p.n_items).astype(np.float32)
        self.n_artists = max(p.n_items // 8, p.n_genres)
        per_genre = max(self.n_artists // p.n_genres, 1)
        self.item_artist = (self.item_genre * per_genre + r.integers(0, per_genre, p.n_items)) % self.n_artists
        self.item_language = np.minimum(r.geometric(0.45, p.n_items) - 1, 7).astype(np.int64)
        self.item_duration = r.lognormal(0.0, 0.25, p.n_items).astype(np.float32)
        pop = np.diff(np.concatenate([[0.0], self.item_cdf]))
        self.item_logpop = _standardise(np.log(pop)).astype(np.float32)
        self.item_pop_bucket = np.minimum((np.argsort(np.argsort(-pop)) * 10) // p.n_items, 9).astype(np.int64)
        tag_base = self.item_genre * 3 % p.n_tags
        self.item_tags = np.stack(
            [tag_base, (tag_base + 1 + r.integers(0, 2, p.n_items)) % p.n_tags, r.integers(0, p.n_tags, p.n_items)],
            axis=1,
        ).astype(np.int64)
        self.item_ntags = r.integers(1, 4, p.n_items)
        # Users: taste clusters shape the demographics.
        k = 16
        cluster_centre = r.normal(0, 0.8, (k, d)).astype(np.float32)
        self.user_cdf = _zipf_cdf(p.n_users, p.user_zipf)
        self.user_cluster = r.integers(0, k, p.n_users)
        self.user_vec = (cluster_centre[self.user_cluster] + r.normal(0, 0.6, (p.n_users, d))).astype(np.float32)
        self.user_bias = r.normal(0, 0.3, p.n_users).astype(np.float32)
        self.user_age = ((self.user_cluster // 2 + r.integers(0, 2, p.n_users)) % 8).astype(np.int64)
        self.user_gender = ((self.user_cluster % 2) * (r.random(p.n_users) < 0.8) + 1).astype(np.int64)
        self.user_region = np.searchsorted(_zipf_cdf(p.n_regions, 1.0), r.random(p.n_users)).astype(np.int64)
        act = np.diff(np.concatenate([[0.0], self.user_cdf]))
        self.user_logact = _standardise(np.log(act)).astype(np.float32)
        self.user_act_bucket = np.minimum((np.argsort(np.argsort(-act)) * 10) // p.n_users, 9).astype(np.int64)
        # The user's favourite genres (for the multi-hot "recent genres" feature).
        self.user_top_genres = np.empty((p.n_users, 5), dtype=np.int64)
        for a in range(0, p.n_users, 1 << 18):  # row-wise argsort in blocks: same values, bounded temporaries
            aff = self.user_vec[a : a + (1 << 18)] @ self.genre_centre.T
            self.user_top_genres[a : a + (1 << 18)] = np.argsort(-aff, axis=1)[:, :5]
        if len(p.attention_scene) != SCENES:
            raise ValueError(f"preset option attention_scene: expected {SCENES} logits, got {len(p.attention_scene)}")
        self.scene_attention = np.array(p.attention_scene, dtype=np.float32)
        self.threshold = self._calibrate(seed)

    def score(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        return np.einsum("nd,nd->n", self.user_vec[u], self.item_vec[i]) + self.user_bias[u] + self.item_bias[i]

    def draw_users(self, r: np.random.Generator, n: int) -> np.ndarray:
        return np.searchsorted(self.user_cdf, r.random(n)).astype(np.int64)

    def draw_items(self, r: np.random.Generator, n: int) -> np.ndarray:
        return np.searchsorted(self.item_cdf, r.random(n)).astype(np.int64)

    def _calibrate(self, seed: int) -> float:
        r = _rng(seed, 2)
        n = 200_000
        s = self.score(self.draw_users(r, n), self.draw_items(r, n)) + r.logistic(0, 0.35, n)
        return float(np.quantile(s, 1.0 - self.p.clean_rate))


def _zipf_pmf(n: int, a: float) -> np.ndarray:
    w = 1.0 / np.power(np.arange(1, n + 1, dtype=np.float64), a)
    return w / w.sum()


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def schema_for(p: Preset, world: Optional[World] = None) -> DataSchema:
    """The schema of datasets generated with preset ``p``."""
    n_artists = max(p.n_items // 8, p.n_genres) if world is None else world.n_artists
    sparse = [
        SparseFeature("user_id", p.n_users),
        SparseFeature("item_id", p.n_items),
        SparseFeature("user_age", 8),
        SparseFeature("user_gender", 3),
        SparseFeature("user_region", p.n_regions),
        SparseFeature("user_activity", 10),
        SparseFeature("item_artist", n_artists),
        SparseFeature("item_genre", p.n_genres),
        SparseFeature("item_language", 8),
        SparseFeature("item_popularity", 10),
        SparseFeature("hour", 24, role="context"),
        SparseFeature("weekday", 7, role="context"),
        SparseFeature("device", DEVICES, role="context"),
        SparseFeature("scene", SCENES, role="context"),
        SparseFeature("position", N_POSITIONS + 1, role="context"),
        SparseFeature("item_tags", p.n_tags, multi_hot=True),
        SparseFeature("user_recent_genres", p.n_genres, multi_hot=True),
    ]
    if p.recent_items:
        sparse.append(SparseFeature("user_recent_items", p.n_items, multi_hot=True))
    sparse += [SparseFeature(f"user_cat_{j}", c) for j, c in enumerate(p.extra_user_features)]
    sparse += [SparseFeature(f"item_cat_{j}", c) for j, c in enumerate(p.extra_item_features)]
    sparse += [SparseFeature(f"ctx_cat_{j}", c, role="context") for j, c in enumerate(p.extra_context_features)]
    sparse += [
        SparseFeature(f"list_cat_{j}", c, multi_hot=True, role="context") for j, c in enumerate(p.extra_multi_hot)
    ]
    dense = ["user_log_activity", "item_log_popularity", "duration", "genre_affinity"]
    dense += [f"dense_{j}" for j in range(p.extra_dense)]
    trusted = TRUSTED_COLUMN if p.trusted_rows > 0 or p.trusted_train_rows > 0 else None
    return DataSchema(sparse=sparse, dense=dense, trusted_label=trusted, extra={"preset": dataclasses.asdict(p)})


_HASH_PRIMES = (1_000_003, 998_244_353, 1_000_000_007, 19_260_817, 2_147_483_647, 104_729)


def _derived(ids: np.ndarray, j: int, card: int) -> np.ndarray:
    """A deterministic categorical attribute of an id (filler features of wide presets)."""
    h = (ids * _HASH_PRIMES[j % len(_HASH_PRIMES)] + 7919 * (j + 1)) % 2_147_483_647
    return (h % card).astype(np.int64)


def _derived_dense(ids: np.ndarray, j: int) -> np.ndarray:
    """A deterministic float attribute of an id, in 4096 levels over [-4, 4) (bucketed statistics)."""
    h = (ids * _HASH_PRIMES[j % len(_HASH_PRIMES)] + 104_723 * (j + 1)) % 2_147_483_647
    return ((h % 4096).astype(np.float32) - 2048.0) / 512.0


def _list_array(vals: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """Rows of ``vals[:, :lengths]`` as a ``list<value_type>`` column."""
    keep = np.arange(vals.shape[1])[None, :] < lengths[:, None]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(vals[keep], type=value_type))


def attention_logits(
    world: World, position: np.ndarray, scene: np.ndarray, device: np.ndarray, hour: np.ndarray
) -> np.ndarray:
    """The logit of the attention probability ``a(c)`` of each row (module docstring, step 4)."""
    p = world.p
    logit = p.attention_a0 - p.attention_a1 * (position - 1) + world.scene_attention[scene]
    if any(p.attention_device):
        logit = logit + np.asarray(p.attention_device, dtype=np.float64)[device]
    if p.attention_hour:
        logit = logit + p.attention_hour * np.cos(2 * np.pi * (hour - 15) / 24)
    return logit


def _ranked_lists(world: World, r: np.random.Generator, n: int, shuffle: bool = False) -> tuple:
    """``n`` impressions from lists written by the previous ranker: per list one user and one context, 30
    candidates by popularity, shown in decreasing ``skill·(score + noise) + popularity·log_pop`` order
    (``shuffle``: in a random order instead, the randomised-exposure bucket).
    """
    p, L = world.p, N_POSITIONS
    m = -(-n // L)
    users = world.draw_users(r, m)
    hour, weekday = r.integers(0, 24, m), r.integers(0, 7, m)
    device = np.minimum(r.geometric(0.5, m) - 1, DEVICES - 1)
    scene = r.integers(0, SCENES, m)
    items = world.draw_items(r, m * L).reshape(m, L)
    u_rep = np.repeat(users, L)
    pref = world.score(u_rep, items.reshape(-1)).reshape(m, L) + p.ranker_noise * r.normal(0, 1, (m, L))
    ranker = p.ranker_skill * pref + p.ranker_popularity * world.item_logpop[items]
    order = np.argsort(r.random((m, L)), axis=1) if shuffle else np.argsort(-ranker, axis=1, kind="stable")
    items = np.take_along_axis(items, order, axis=1)
    position = np.tile(np.arange(1, L + 1), m)
    per_list = [np.repeat(v, L)[:n] for v in (hour, weekday, device, scene)]
    return (u_rep[:n], items.reshape(-1)[:n], position[:n], *per_list)


def draw_chunk(
    world: World,
    seed: int,
    split_idx: int,
    chunk_idx: int,
    n: int,
    row_offset: int,
    noise: Optional[NoiseWorld] = None,
    trusted: Optional[np.ndarray] = None,
    shuffle: bool = False,
) -> pa.Table:
    """Impressions ``row_offset .. row_offset + n`` of a split (one random chunk).

    Args:
        world: the users and items.
        seed: the dataset's seed.
        split_idx: the split's index (train 0, valid 1, test 2, valid_random 3): its random stream.
        chunk_idx: the chunk's index within the split: its random stream.
        n: rows to draw.
        row_offset: the first row's ``row_id``.
        noise: the noise family's sets (``None``: the examination process alone, the default).
        trusted: ``[n]`` bool, the rows that carry ``trusted_label`` (``None``: no such column).
        shuffle: lists in a random order instead of the ranker's (``valid_random``).

    Returns:
        The chunk's ``n`` rows.
    """
    p = world.p
    r = _rng(seed, 10 + split_idx, chunk_idx)
    if p.logging == "ranker":
        u, i, position, hour, weekday, device, scene = _ranked_lists(world, r, n, shuffle)
    else:
        u = world.draw_users(r, n)
        i = world.draw_items(r, n)
        position = r.integers(1, N_POSITIONS + 1, n)
        hour = r.integers(0, 24, n)
        weekday = r.integers(0, 7, n)
        device = np.minimum(r.geometric(0.5, n) - 1, DEVICES - 1)
        scene = r.integers(0, SCENES, n)
    s = world.score(u, i) + r.logistic(0, 0.35, n)
    clean = (s > world.threshold).astype(np.int8)
    attention_logit = attention_logits(world, position, scene, device, hour)
    attentive = r.random(n) < 1.0 / (1.0 + np.exp(-attention_logit))
    flip = np.where(clean == 1, r.random(n) < p.q_fn, r.random(n) < p.q_fp)
    label = np.where(attentive | ~flip, clean, 1 - clean).astype(np.int8)
    genre = world.item_genre[i]
    if noise is not None and noise.spec.steps != ("examination",):
        # The family's other steps draw from a stream of their own: features and clean labels stay the same.
        if "examination" not in noise.spec.steps:
            label = clean.copy()
        rn = _rng(seed, 40 + split_idx, chunk_idx)
        for _, p01, p10 in noise.steps(u, i, scene, genre):
            label = apply_step(label, p01, p10, rn.random(n))
    id_type = pa.int32() if p.compact else pa.int64()
    affinity = np.einsum("nd,nd->n", world.user_vec[u], world.genre_centre[genre]) + r.normal(0, 0.7, n)
    cols: Dict[str, Any] = {
        "row_id": np.arange(row_offset, row_offset + n, dtype=np.int64),
        "user_id": u,
        "item_id": i,
        "user_age": world.user_age[u],
        "user_gender": world.user_gender[u],
        "user_region": world.user_region[u],
        "user_activity": world.user_act_bucket[u],
        "item_artist": world.item_artist[i].astype(np.int64),
        "item_genre": genre,
        "item_language": world.item_language[i],
        "item_popularity": world.item_pop_bucket[i],
        "hour": hour.astype(np.int64),
        "weekday": weekday.astype(np.int64),
        "device": device.astype(np.int64),
        "scene": scene.astype(np.int64),
        "position": position.astype(np.int64),
        "item_tags": _list_array(world.item_tags[i], world.item_ntags[i], id_type),
        "user_recent_genres": _list_array(world.user_top_genres[u], r.integers(1, 6, n), id_type),
    }
    if p.recent_items:
        k = p.recent_items
        cols["user_recent_items"] = _list_array(
            world.draw_items(r, n * k).reshape(n, k), r.integers(0, k + 1, n), id_type
        )
    for j, c in enumerate(p.extra_user_features):
        cols[f"user_cat_{j}"] = _derived(u, j, c)
    for j, c in enumerate(p.extra_item_features):
        cols[f"item_cat_{j}"] = _derived(i, j + 17, c)
    for j, c in enumerate(p.extra_context_features):
        cols[f"ctx_cat_{j}"] = r.integers(0, c, n).astype(np.int64)
    for j, c in enumerate(p.extra_multi_hot):
        cols[f"list_cat_{j}"] = _list_array(r.integers(0, c, (n, 4)), r.integers(0, 5, n), id_type)
    if p.compact:
        for name, v in cols.items():
            if name != "row_id" and isinstance(v, np.ndarray):
                cols[name] = v.astype(np.int32)
    cols["user_log_activity"] = world.user_logact[u]
    cols["item_log_popularity"] = world.item_logpop[i]
    cols["duration"] = world.item_duration[i]
    cols["genre_affinity"] = affinity.astype(np.float32)
    for j in range(p.extra_dense):  # derived from the user, from the item, or drawn per row and bucketed
        if j % 3 == 0:
            cols[f"dense_{j}"] = _derived_dense(u, j)
        elif j % 3 == 1:
            cols[f"dense_{j}"] = _derived_dense(i, j)
        else:
            cols[f"dense_{j}"] = (np.round(np.clip(r.normal(0, 1, n), -4, 4) * 8) / 8).astype(np.float32)
    cols["label"] = label
    cols["clean_label"] = clean
    cols["is_noisy"] = (label != clean).astype(np.int8)
    if trusted is not None:  # the clean label on the trusted rows, null elsewhere
        cols[TRUSTED_COLUMN] = pa.array(clean, type=pa.int8(), mask=~trusted)
    return pa.table(cols)


def _writer_options(p: Preset, schema: pa.Schema) -> Dict[str, Any]:
    """``pq.ParquetWriter`` options: the defaults, or (``compact``) large dictionary pages and a
    delta-encoded ``row_id`` (a sorted int64 costs almost nothing that way).
    """
    opts: Dict[str, Any] = {"compression": p.compression}
    if p.compact:
        opts["dictionary_pagesize_limit"] = 4 << 20
        # Per-row random floats and the sorted row id gain nothing from a dictionary.
        opts["use_dictionary"] = [n for n in schema.names if n not in ("row_id", "genre_affinity")]
        opts["column_encoding"] = {"row_id": "DELTA_BINARY_PACKED"}
    return opts


class _SplitWriter:
    """Writes a split as files of ``rows_per_file`` rows in row groups of ``row_group_size`` rows."""

    def __init__(self, directory: str, rows_per_file: int, row_group_size: int, preset: Preset) -> None:
        os.makedirs(directory, exist_ok=True)
        self.dir, self.rows_per_file, self.rgs, self.preset = directory, rows_per_file, row_group_size, preset
        self.writer: Optional[pq.ParquetWriter] = None
        self.file_idx, self.file_rows = 0, 0
        self.pending: List[pa.Table] = []
        self.pending_rows = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= self.rgs:
            self._emit(self.rgs)

    def _emit(self, n: int) -> None:
        t = pa.concat_tables(self.pending)
        head, rest = t.slice(0, n), t.slice(n)
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if self.writer is None:
            path = os.path.join(self.dir, f"part-{self.file_idx:05d}.parquet")
            self.writer = pq.ParquetWriter(path, head.schema, **_writer_options(self.preset, head.schema))
        self.writer.write_table(head, row_group_size=n)
        self.file_rows += n
        if self.file_rows >= self.rows_per_file:
            self.writer.close()
            self.writer, self.file_idx, self.file_rows = None, self.file_idx + 1, 0

    def close(self) -> None:
        if self.pending_rows:
            self._emit(self.pending_rows)
        if self.writer is not None:
            self.writer.close()


class _BackgroundWriter:
    """Encodes and writes tables on a thread (pyarrow releases the GIL) while the next chunk is drawn.

    At most ``depth`` tables wait in the queue, so memory stays bounded; a writer error is re-raised by
    :meth:`write` or :meth:`close`.
    """

    def __init__(self, writer: _SplitWriter, depth: int = 2) -> None:
        self.writer = writer
        self.queue: "queue.Queue[Optional[pa.Table]]" = queue.Queue(maxsize=depth)
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="gen-data-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            t = self.queue.get()
            if t is None:
                return
            if self.error is None:
                try:
                    self.writer.write(t)
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    self.error = e

    def write(self, table: pa.Table) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(table)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        self.writer.close()


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def generate(out: str, preset: Preset, seed: int = 0, progress: bool = False) -> Dict[str, Any]:
    """Write a dataset for ``preset`` under ``out``; return (and write) its statistics.

    Memory is bounded by the user/item tables of :class:`World` and a few chunks and row groups in flight,
    whatever the row count. With ``progress`` a line goes to stderr every ~1M rows (rows, rate, ETA).
    """
    t0 = time.time()
    if preset.logging not in LOGGING_POLICIES:
        raise ValueError(f"preset option logging={preset.logging!r}: expected one of {LOGGING_POLICIES}")
    spec = NoiseSpec.parse(preset.noise)
    world = World(preset, seed)
    nw = NoiseWorld(spec, preset.n_users, preset.n_items, preset.n_genres, SCENES, seed)
    schema = schema_for(preset, world)
    os.makedirs(out, exist_ok=True)
    stats: Dict[str, Any] = {"seed": seed, "logging": logging_params(preset)}
    splits = list(SPLITS) + ([RANDOM_SPLIT] if preset.random_rows > 0 else [])
    trusted_stats: Dict[str, Any] = {}
    row_offset = 0
    grand_total = sum(_split_rows(preset, s) for s in splits)
    t_rows = time.time()
    for split_idx, split in enumerate(splits):
        total = _split_rows(preset, split)
        trusted_at = _trusted_positions(preset, seed, split_idx, split) if schema.trusted_label else None
        sw = _SplitWriter(os.path.join(out, split), preset.rows_per_file, preset.row_group_size, preset)
        w = _BackgroundWriter(sw)
        counts = np.zeros(4, dtype=np.int64)  # rows, observed positives, noisy positives, noisy rows
        clean_pos = 0
        trusted_counts = np.zeros(3, dtype=np.int64)  # trusted rows, their clean and observed positives
        truth = _TruthCounter()
        rates = GroupRates(nw)
        for chunk_idx, start in enumerate(range(0, total, GEN_CHUNK)):
            n = min(GEN_CHUNK, total - start)
            trusted = None
            if trusted_at is not None:
                trusted = np.zeros(n, dtype=bool)
                trusted[trusted_at[(trusted_at >= start) & (trusted_at < start + n)] - start] = True
            t = draw_chunk(
                world, seed, split_idx, chunk_idx, n, row_offset + start, nw, trusted, shuffle=split == RANDOM_SPLIT
            )
            label = t.column("label").to_numpy()
            noisy = t.column("is_noisy").to_numpy()
            clean = t.column("clean_label").to_numpy()
            counts += [n, label.sum(), (label * noisy).sum(), noisy.sum()]
            clean_pos += int(clean.sum())
            if trusted is not None:
                trusted_counts += [trusted.sum(), clean[trusted].sum(), label[trusted].sum()]
            truth.add(t)
            if split == "train":
                u, i, sc, g = (t.column(c).to_numpy() for c in ("user_id", "item_id", "scene", "item_genre"))
                rates.add(u, i, sc, g, clean, label)
            w.write(t)
            if progress and (chunk_idx % 16 == 15 or start + n == total):
                done = row_offset + start + n
                rate = done / max(time.time() - t_rows, 1e-9)
                print(
                    f"gen-data {split}: {start + n:,}/{total:,} rows; all splits {done / grand_total:.0%} "
                    f"({rate:,.0f} rows/s, ETA {_fmt_seconds((grand_total - done) / max(rate, 1e-9))})",
                    file=sys.stderr,
                    flush=True,
                )
        w.close()
        row_offset += total
        stats[split] = {
            "rows": int(counts[0]),
            "files": sw.file_idx + (1 if sw.file_rows else 0),
            "positive_rate": float(counts[1] / max(counts[0], 1)),
            "clean_positive_rate": float(clean_pos / max(counts[0], 1)),
            "noisy_positive_rate": float(counts[2] / max(counts[1], 1)),
            "noisy_rate": float(counts[3] / max(counts[0], 1)),
            "position_clean_corr": truth.position_clean_corr(),
        }
        if split == "train":
            stats["observation_truth"] = truth.table()
            stats["noise"] = _noise_record(spec, rates)
        if trusted_counts[0]:
            k = int(trusted_counts[0])
            trusted_stats[split] = {
                "rows": k,
                "positive_rate": float(trusted_counts[1] / k),
                "observed_positive_rate": float(trusted_counts[2] / k),
            }
    if schema.trusted_label:
        stats["trusted"] = {
            "column": schema.trusted_label,
            "definition": "the clean label on a uniform sample of the split's rows (null on the others); "
            f"{RANDOM_SPLIT} and test rows carry none",
            **trusted_stats,
        }
    if RANDOM_SPLIT in stats:
        stats[RANDOM_SPLIT]["definition"] = (
            "lists of the same users, contexts and candidates as valid's process, shown in a random order instead "
            "of the ranker's; observed labels from the same noise family"
        )
    stats["seconds"] = round(time.time() - t0, 2)
    schema.extra["seed"] = seed
    schema.save(os.path.join(out, "schema.json"))
    with open(os.path.join(out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
    exam = noise_model(stats["logging"]) if "examination" in spec.steps else None
    with open(os.path.join(out, NOISE_TRUTH_FILE), "w") as f:
        json.dump({**nw.to_dict(), "examination": exam}, f)
    noise_path = os.path.join(out, NOISE_MODEL_FILE)
    if spec.is_examination_only:
        with open(noise_path, "w") as f:  # the truth, for -p observation.noise_file=...
            json.dump(exam, f, indent=2)
    elif os.path.exists(noise_path):  # an earlier family's truth would be the wrong noise here
        os.remove(noise_path)
    return stats


def _split_rows(p: Preset, split: str) -> int:
    return p.random_rows if split == RANDOM_SPLIT else p.rows(split)


def _trusted_positions(p: Preset, seed: int, split_idx: int, split: str) -> Optional[np.ndarray]:
    """The sorted row positions of ``split`` that carry a trusted label (a uniform sample), or an empty array."""
    k = {"valid": p.trusted_rows, "train": p.trusted_train_rows}.get(split, 0)
    total = _split_rows(p, split)
    k = min(k, total)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(_rng(seed, 6, split_idx).choice(total, k, replace=False))


def _noise_record(spec: NoiseSpec, rates: GroupRates) -> Dict[str, Any]:
    """``stats.json["noise"]``: the family, its parameters, where its truth is, its empirical rates on train."""
    return {
        "family": spec.name,
        "steps": list(spec.steps),
        "params": spec.params(),
        "truth_file": NOISE_TRUTH_FILE,
        "noise_model_file": NOISE_MODEL_FILE if spec.is_examination_only else None,
        "rates": rates.table(),
        "definition": "empirical P(label=1 | clean_label=0) (h) and P(label=1 | clean_label=1) (h_prime) over the "
        "train split per group of the family's truth (noise_truth.json: the sets and parameters; its "
        "'examination' entry is the context part in noise_model.json's format)",
    }


TRUTH_FEATURES = ("position", "scene", "device", "hour", "weekday")


class _TruthCounter:
    """Per value of each context feature: rows with ``clean_label`` 0 / 1 and how many of them were observed
    positive, i.e. the empirical ``P(ỹ=1 | y, c)`` of the generated split.
    """

    def __init__(self) -> None:
        self.counts: Dict[str, np.ndarray] = {}
        self.moments = np.zeros(5)  # n, Σpos, Σclean, Σpos², Σpos·clean

    def add(self, t: pa.Table) -> None:
        clean = t.column("clean_label").to_numpy().astype(np.int64)
        label = t.column("label").to_numpy().astype(np.int64)
        for name in TRUTH_FEATURES:
            v = t.column(name).to_numpy().astype(np.int64)
            c = np.stack(
                [np.bincount(v, weights=(clean == k), minlength=32) for k in (0, 1)]
                + [np.bincount(v, weights=(clean == k) & (label == 1), minlength=32) for k in (0, 1)]
            )
            self.counts[name] = self.counts.get(name, 0) + c
        pos = t.column("position").to_numpy().astype(np.float64)
        self.moments += [pos.size, pos.sum(), clean.sum(), (pos * pos).sum(), (pos * clean).sum()]

    def table(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "definition": "empirical P(label=1 | clean_label=y, feature=value) over the train "
            "split: h (y=0), h_prime (y=1); rows per value and y"
        }
        for name, c in self.counts.items():
            seen = np.flatnonzero(c[0] + c[1] > 0)
            out[name] = {
                "values": seen.tolist(),
                "h": [float(c[2, v] / c[0, v]) if c[0, v] else None for v in seen],
                "h_prime": [float(c[3, v] / c[1, v]) if c[1, v] else None for v in seen],
                "rows_y0": c[0, seen].astype(np.int64).tolist(),
                "rows_y1": c[1, seen].astype(np.int64).tolist(),
            }
        return out

    def position_clean_corr(self) -> float:
        n, sp, sc, spp, spc = self.moments
        if n < 2:
            return float("nan")
        cov = spc / n - (sp / n) * (sc / n)
        var_p, var_c = spp / n - (sp / n) ** 2, sc / n - (sc / n) ** 2
        return float(cov / np.sqrt(max(var_p * var_c, 1e-300)))


def logging_params(p: Preset) -> Dict[str, Any]:
    """The logging policy and observation-noise parameters, as recorded in ``stats.json``."""
    keys = (
        "logging",
        "ranker_skill",
        "ranker_noise",
        "ranker_popularity",
        "attention_a0",
        "attention_a1",
        "attention_device",
        "attention_hour",
        "q_fp",
        "q_fn",
    )
    out = {k: getattr(p, k) for k in keys}
    out["attention_scene"] = [float(x) for x in p.attention_scene]  # the World's own (World.scene_attention)
    return out


def noise_model(params: Dict[str, Any]) -> Dict[str, Any]:
    """The generator's observation noise (module docstring, step 4) as an examination noise model.

    ``params`` is :func:`logging_params`' record (``stats.json["logging"]``); the result is the
    ``observation.noise_file`` format of :mod:`denoisrec.denoisers.noise_file`: ``a(c) = a0 − a1·(position − 1) +
    scene[s] + device[d] + hour_amp·cos(2π·(hour − 15)/24)``, ``q₀ = q_fp``, ``q₁ = q_fn``.
    """
    a1, amp = float(params["attention_a1"]), float(params["attention_hour"])
    attention: Dict[str, List[float]] = {
        "position": [0.0] + [-a1 * (k - 1) for k in range(1, N_POSITIONS + 1)],
        "scene": [float(x) for x in params["attention_scene"]],
        "device": [float(x) for x in params["attention_device"]],
        "hour": [amp * float(np.cos(2 * np.pi * (h - 15) / 24)) for h in range(24)],
    }
    return {
        "form": "examination",
        "bias": float(params["attention_a0"]),
        "q0": float(params["q_fp"]),
        "q1": float(params["q_fn"]),
        "attention": attention,
    }


LOGGING_POLICIES = ("ranker", "independent")


def with_noise(preset: Preset, noise: Optional[str]) -> Preset:
    """``preset`` with the noise family ``noise`` (``None`` keeps the preset's); ``shifted`` also takes the
    shifted examination parameters (:data:`~denoisrec.trainer.datasets.noise_families.SHIFTED_PARAMS`).
    """
    if noise is None:
        return preset
    NoiseSpec.parse(noise)  # a one-line error for an unknown family
    p = dataclasses.replace(preset, noise=noise)
    return shifted(p) if noise == "shifted" else p


def with_trusted(
    preset: Preset, trusted_rows: Optional[int], trusted_train_rows: Optional[int], random_rows: Optional[int]
) -> Preset:
    """``preset`` with other trusted-label and random-bucket sizes (``None`` keeps the preset's)."""
    changes: Dict[str, Any] = {}
    for key, v in (
        ("trusted_rows", trusted_rows),
        ("trusted_train_rows", trusted_train_rows),
        ("random_rows", random_rows),
    ):
        if v is None:
            continue
        if v < 0:
            raise ValueError(f"--{key.replace('_', '-')} {v}: expected a row count >= 0")
        changes[key] = v
    return dataclasses.replace(preset, **changes)


def preset_by_name(name: str) -> Preset:
    if name not in PRESETS:
        from denoisrec.trainer.config.close_names import did_you_mean

        hint = did_you_mean(name, PRESETS, quote=True)
        raise ValueError(f"--preset {name!r}: unknown preset, expected one of {sorted(PRESETS)}{hint}")
    return PRESETS[name]


def with_logging(preset: Preset, logging: Optional[str]) -> Preset:
    """``preset`` with the logging policy ``logging`` (``None`` keeps the preset's)."""
    if logging is None:
        return preset
    if logging not in LOGGING_POLICIES:
        raise ValueError(f"--logging {logging!r}: expected one of {LOGGING_POLICIES}")
    return dataclasses.replace(preset, logging=logging)


def scaled(preset: Preset, rows: Optional[int]) -> Preset:
    """``preset`` with ``rows`` training rows (valid and test scaled alike)."""
    if rows is None:
        return preset
    f = rows / preset.train_rows
    return dataclasses.replace(
        preset,
        train_rows=rows,
        valid_rows=max(int(preset.valid_rows * f), 1),
        test_rows=max(int(preset.test_rows * f), 1),
    )


def describe(stats: Dict[str, Any]) -> str:
    lines = []
    for split in [*SPLITS, RANDOM_SPLIT]:
        if split not in stats:
            continue
        s = stats[split]
        lines.append(
            f"{split:5s}: {s['rows']:>10,} rows in {s['files']} file(s); observed positives "
            f"{s['positive_rate']:.1%}, of which false {s['noisy_positive_rate']:.1%}; "
            f"noisy rows {s['noisy_rate']:.1%}"
        )
    if "noise" in stats:
        lines.append(f"noise: {stats['noise']['family']} ({'+'.join(stats['noise']['steps'])})")
    for split, t in stats.get("trusted", {}).items():
        if isinstance(t, dict):
            lines.append(f"trusted labels: {t['rows']:,} {split} rows (clean positives {t['positive_rate']:.1%})")
    return "\n".join(lines)

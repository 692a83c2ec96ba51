"""Noise families of the synthetic generator: which process turns a clean label into the observed one.

A family is a list of *steps* applied in order to the row's current observed label ``l`` (the clean label
``y`` to begin with). A step flips ``0 → 1`` with probability ``p01`` and ``1 → 0`` with ``p10`` (both per
row), so the probability of an observed click follows the recursion::

    P(ỹ=1 | y, row)  ←  P·(1 − p10) + (1 − P)·p01,       starting from P = y           (step)

The steps (parameters in :class:`NoiseSpec`):

- ``examination``: the context attention of the generator's docstring, ``a(c) = σ(a0 − a1·(position − 1) +
  scene[s] + device[d] + hour_amp·cos(2π·(hour − 15)/24))``; ``p01 = (1 − a)·q_fp``, ``p10 = (1 − a)·q_fn``.
  The observation model's examination form is exactly this (``noise_model.json``).
- ``clickbait``: a ``clickbait_share`` of the items (drawn uniformly) get extra false clicks at any position:
  ``p01 = clickbait_rate`` on those items, ``0`` elsewhere; ``p10 = 0``.
- ``random_clickers``: a ``clicker_share`` of the users click at a rate independent of preference and
  context: ``p01 = clicker_rate``, ``p10 = 1 − clicker_rate`` on their rows (so ``P(ỹ=1) = clicker_rate``).
- ``context_item``: a context × item interaction: in a ``cell_share`` of the (scene, item genre) cells the
  user is inattentive to that genre: ``p01 = cell_fp``, ``p10 = cell_fn`` there, ``0`` elsewhere.

Families (``gen-data --noise NAME``; ``A+B`` composes steps, in the order above):

=================== ===========================================================================
``examination``     the default (the bytes of every existing preset are unchanged)
``shifted``         the examination process with other parameters (:func:`shifted`): weaker position
                    decay, other scene effects, ``q_fp 0.4`` / ``q_fn 0.6``
``clickbait``       item-driven false positives only (no context noise)
``clickbait_context`` ``examination+clickbait``
``random_clickers`` user-driven noise only
``context_item``    the (scene, genre) interaction only
``mix``             ``examination+context_item+clickbait+random_clickers``
=================== ===========================================================================

The examination step always consumes its three uniform draws from the chunk's generator (so every family
gives the same users, items, contexts and clean labels for a seed); the other steps draw from a generator of
their own. The sets (clickbait items, clickers, cells) are drawn once per seed (:class:`NoiseWorld`) and
written, with the parameters, to ``<out>/noise_truth.json``.

Example::

    spec = NoiseSpec.parse("clickbait_context")
    spec.steps                       # ('examination', 'clickbait')
    nw = NoiseWorld(spec, n_users=300, n_items=200, n_genres=20, n_scenes=6, seed=0)
    int(nw.clickbait_items.sum())    # 30 = 15% of 200
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import numpy as np

NOISE_TRUTH_FILE = "noise_truth.json"  # the family's parameters and sets, beside stats.json
STEPS = ("examination", "context_item", "clickbait", "random_clickers")
FAMILIES: Dict[str, Tuple[str, ...]] = {
    "examination": ("examination",),
    "shifted": ("examination",),
    "clickbait": ("clickbait",),
    "clickbait_context": ("examination", "clickbait"),
    "random_clickers": ("random_clickers",),
    "context_item": ("context_item",),
    "mix": ("examination", "context_item", "clickbait", "random_clickers"),
}
# The shifted examination process (issue 23's second row): weaker position decay, other scene effects.
SHIFTED_PARAMS: Dict[str, Any] = {
    "attention_a1": 0.03,
    "attention_scene": [-0.4, 0.5, -0.2, 0.9, 0.1, -0.7],
    "q_fp": 0.4,
    "q_fn": 0.6,
}


@dataclass(frozen=True)
class NoiseSpec:
    """A noise family: its name, its steps and the parameters of the non-examination steps.

    Args:
        name: the family's name (``gen-data --noise``).
        steps: the steps, in :data:`STEPS` order.
        clickbait_share: share of items that are clickbait.
        clickbait_rate: ``P(false click)`` on a clickbait item's rows, at any position.
        clicker_share: share of users who are random clickers.
        clicker_rate: a random clicker's click probability, whatever the preference.
        cell_share: share of (scene, item genre) cells with the interaction.
        cell_fp: ``P(0 → 1)`` in those cells.
        cell_fn: ``P(1 → 0)`` in those cells.
    """

    name: str = "examination"
    steps: Tuple[str, ...] = ("examination",)
    clickbait_share: float = 0.15
    clickbait_rate: float = 0.5
    clicker_share: float = 0.05
    clicker_rate: float = 0.5
    cell_share: float = 0.25
    cell_fp: float = 0.4
    cell_fn: float = 0.3

    @classmethod
    def parse(cls, name: str) -> "NoiseSpec":
        """The spec of ``name``: a family of :data:`FAMILIES` or steps joined by ``+`` (one-line error else)."""
        if name in FAMILIES:
            return cls(name=name, steps=FAMILIES[name])
        parts = name.split("+")
        bad = [s for s in parts if s not in STEPS]
        if bad or len(set(parts)) != len(parts):
            raise ValueError(
                f"--noise {name!r}: expected a family of {sorted(FAMILIES)} or steps of {list(STEPS)} joined by '+' "
                "(each once)"
            )
        return cls(name=name, steps=tuple(s for s in STEPS if s in parts))

    @property
    def is_examination_only(self) -> bool:
        """The family is the observation model's examination form (``noise_model.json`` is its whole truth)."""
        return self.steps == ("examination",)

    def params(self) -> Dict[str, Any]:
        """The parameters of the family's non-examination steps (the examination's are the preset's)."""
        keys = {
            "clickbait": ("clickbait_share", "clickbait_rate"),
            "random_clickers": ("clicker_share", "clicker_rate"),
            "context_item": ("cell_share", "cell_fp", "cell_fn"),
        }
        return {k: getattr(self, k) for s in self.steps for k in keys.get(s, ())}


def shifted(preset: Any) -> Any:
    """``preset`` (a :class:`~denoisrec.trainer.datasets.synthetic.Preset`) with the shifted examination
    parameters of :data:`SHIFTED_PARAMS`.
    """
    return dataclasses.replace(preset, **SHIFTED_PARAMS)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *keys])))


class NoiseWorld:
    """The family's fixed sets, drawn once per seed: clickbait items, random clickers, interaction cells.

    Args:
        spec: the family.
        n_users, n_items, n_genres, n_scenes: the world's sizes.
        seed: the dataset's seed (the sets use a stream of their own: the World's draws are unchanged).
    """

    def __init__(self, spec: NoiseSpec, n_users: int, n_items: int, n_genres: int, n_scenes: int, seed: int) -> None:
        self.spec = spec
        r = _rng(seed, 5)
        self.clickbait_items = _share(r, n_items, spec.clickbait_share if "clickbait" in spec.steps else 0.0)
        self.clickers = _share(r, n_users, spec.clicker_share if "random_clickers" in spec.steps else 0.0)
        cells = _share(r, n_scenes * n_genres, spec.cell_share if "context_item" in spec.steps else 0.0)
        self.cells = cells.reshape(n_scenes, n_genres)

    def steps(
        self, user: np.ndarray, item: np.ndarray, scene: np.ndarray, genre: np.ndarray
    ) -> List[Tuple[str, np.ndarray, np.ndarray]]:
        """``(step, p01, p10)`` per non-examination step of the family, for the rows given (``[n]`` each)."""
        s, out = self.spec, []
        zero = np.zeros(user.shape[0])
        if "context_item" in s.steps:
            cell = self.cells[scene, genre]
            out.append(("context_item", np.where(cell, s.cell_fp, 0.0), np.where(cell, s.cell_fn, 0.0)))
        if "clickbait" in s.steps:
            out.append(("clickbait", np.where(self.clickbait_items[item], s.clickbait_rate, 0.0), zero))
        if "random_clickers" in s.steps:
            k = self.clickers[user]
            out.append(("random_clickers", np.where(k, s.clicker_rate, 0.0), np.where(k, 1.0 - s.clicker_rate, 0.0)))
        return out

    def to_dict(self) -> Dict[str, Any]:
        """The sets and parameters, as written to ``noise_truth.json``."""
        return {
            "family": self.spec.name,
            "steps": list(self.spec.steps),
            "params": self.spec.params(),
            "clickbait_items": np.flatnonzero(self.clickbait_items).tolist(),
            "random_clickers": np.flatnonzero(self.clickers).tolist(),
            "context_item_cells": [[int(a), int(b)] for a, b in zip(*np.nonzero(self.cells))],
        }


def _share(r: np.random.Generator, n: int, share: float) -> np.ndarray:
    """A boolean mask of ``round(share·n)`` of ``n`` ids, drawn uniformly (always one draw, so sets that follow
    do not depend on which steps the family has).
    """
    perm = r.permutation(n)
    mask = np.zeros(n, dtype=bool)
    mask[perm[: int(round(share * n))]] = True
    return mask


def apply_step(label: np.ndarray, p01: np.ndarray, p10: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One step (module docstring) on the current labels ``[n]`` with uniform draws ``u`` ``[n]``."""
    return np.where(label == 1, u >= p10, u < p01).astype(np.int8)


def click_probability(clean: np.ndarray, steps: List[Tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``P(ỹ=1 | y, row)`` ``[n]`` after ``steps`` (``(p01, p10)`` each, in order), by the recursion (step)."""
    p = clean.astype(np.float64)
    for p01, p10 in steps:
        p = p * (1.0 - p10) + (1.0 - p) * p01
    return p


class GroupRates:
    """Empirical ``P(ỹ=1 | y, group)`` over a split, for the groups a family's truth names.

    Groups: clickbait vs other items, random clickers vs other users, interaction cells vs other cells
    (only those of the family's steps), and ``all``.
    """

    def __init__(self, nw: NoiseWorld) -> None:
        self.nw = nw
        self.counts: Dict[str, np.ndarray] = {}  # group → [rows y=0, clicks y=0, rows y=1, clicks y=1]

    def add(
        self,
        user: np.ndarray,
        item: np.ndarray,
        scene: np.ndarray,
        genre: np.ndarray,
        clean: np.ndarray,
        label: np.ndarray,
    ) -> None:
        """Count one chunk's rows (``[n]`` arrays)."""
        groups = {"all": np.ones(clean.shape[0], dtype=bool)}
        s = self.nw.spec.steps
        if "clickbait" in s:
            groups["clickbait_items"] = self.nw.clickbait_items[item]
        if "random_clickers" in s:
            groups["random_clickers"] = self.nw.clickers[user]
        if "context_item" in s:
            groups["context_item_cells"] = self.nw.cells[scene, genre]
        for g, m in list(groups.items()):
            if g != "all":
                groups["not_" + g] = ~m
        for g, m in groups.items():
            y0, y1 = m & (clean == 0), m & (clean == 1)
            c = np.array([y0.sum(), (label[y0] == 1).sum(), y1.sum(), (label[y1] == 1).sum()], dtype=np.int64)
            self.counts[g] = self.counts.get(g, 0) + c

    def table(self) -> Dict[str, Any]:
        """``{group: {rows_y0, h, rows_y1, h_prime}}`` with ``h = P(ỹ=1 | y=0)``, ``h' = P(ỹ=1 | y=1)``."""
        out: Dict[str, Any] = {}
        for g, (n0, c0, n1, c1) in self.counts.items():
            out[g] = {
                "rows_y0": int(n0),
                "h": float(c0 / n0) if n0 else None,
                "rows_y1": int(n1),
                "h_prime": float(c1 / n1) if n1 else None,
            }
        return out

"""``denoisrec gen-data``: write a synthetic noisy-feedback dataset with ground truth.

The generator is :mod:`denoisrec.trainer.datasets.synthetic`; this module only parses and prints.

Example::

    denoisrec gen-data --preset tiny --out data/tiny --seed 0
"""

from __future__ import annotations

import argparse
import os
import shutil

from denoisrec.trainer.errors import UsageError

HELP = "write a synthetic noisy-feedback dataset with ground truth"

PRESETS = {
    "tiny": "6,000 train rows, 300 users, 200 items: unit tests and smoke runs (seconds)",
    "small": "400,000 train rows, 20,000 users, 5,000 items: make train, the README's runs (minutes on 2 cores)",
    "medium": "4,000,000 train rows, 200,000 users, 30,000 items",
    "product": "LCD's industrial Product shape: 77M train rows, 3.64M users, 117K items, 69 features "
    "(53 categorical, 4 multi-hot, 16 dense): bench plan and GPU throughput",
    "criteo": "a Criteo-like shape for bench peers: 2M train rows, 26 single-valued categorical features "
    "(most of 100,000 ids), 13 dense columns",
}
"""The generator's presets (:data:`denoisrec.trainer.datasets.synthetic.PRESETS`) as ``--help`` describes them;
kept here so that building the parser reads no generator code (a test checks that the two name the same set)."""

DESCRIPTION = """Write a synthetic dataset of noisy clicks with its ground truth: train/valid/test Parquet splits with
observed labels, clean labels and the noise flags, a schema.json and the generator's noise_model.json.

  denoisrec gen-data --preset small --out data/small
  denoisrec gen-data --preset tiny --out data/tiny --noise clickbait --seed 1"""


def epilog() -> str:
    """The presets, below ``denoisrec gen-data --help``."""
    width = max(map(len, PRESETS))
    return "presets (--preset NAME):\n" + "\n".join(f"  {n:<{width}}  {d}" for n, d in PRESETS.items())


def add_arguments(g: argparse.ArgumentParser) -> None:
    """Preset, output directory, seed, size, who placed the items, the noise family and the trusted signals."""
    g.add_argument(
        "--preset", default="small", help="dataset size and shape: " + ", ".join(PRESETS) + " (described below)"
    )
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same bytes")
    g.add_argument("--rows", type=int, help="training rows (valid/test scaled alike); default: the preset's")
    g.add_argument(
        "--logging",
        choices=["ranker", "independent"],
        help="who placed the items: a previous ranker (default; position correlates with preference) "
        "or independent placement (the original generator)",
    )
    g.add_argument(
        "--noise",
        help="the noise family (default: the preset's, examination): examination, shifted, clickbait, "
        "clickbait_context, random_clickers, context_item, mix, or steps joined by '+' "
        "(examination+context_item+clickbait+random_clickers); docs/ingest.md, 'Noise families'",
    )
    g.add_argument(
        "--trusted-rows",
        type=int,
        help="valid rows that carry trusted_label (their clean label; default 5000, tiny 500; 0: none)",
    )
    g.add_argument(
        "--trusted-train-rows",
        type=int,
        help="train rows that carry trusted_label (default 0: the train split's labels stay the observed ones)",
    )
    g.add_argument(
        "--random-rows",
        type=int,
        help="rows of valid_random, lists shown in a random order (default 20000, tiny 1500; 0: no such split)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset already in --out (default: refuse; its split folders and files are deleted first)",
    )


DATASET_ENTRIES = (
    "train",
    "valid",
    "test",
    "valid_random",
    "schema.json",
    "stats.json",
    "noise_model.json",
    "noise_truth.json",
)
"""What a generated dataset holds in its folder (what ``--overwrite`` deletes before writing, so that no split
or truth file of the old dataset, e.g. its ``valid_random``, stays beside a new one that has none)."""


def refuse_or_clear(out: str, overwrite: bool) -> None:
    """Refuse an ``--out`` that holds a dataset unless ``overwrite``; with it, delete that dataset first (so no
    shard of the old one stays beside the new one's).
    """
    found = [e for e in DATASET_ENTRIES if os.path.exists(os.path.join(out, e))]
    if not found:
        return
    if not overwrite:
        raise UsageError(
            f"gen-data --out {out}: already holds a dataset ({', '.join(found[:3])}); add --overwrite to replace "
            "it, or give another --out"
        )
    for e in found:
        path = os.path.join(out, e)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def run(a: argparse.Namespace) -> int:
    """Generate, then print where and the dataset's statistics."""
    from denoisrec.trainer.datasets.synthetic import (
        describe,
        generate,
        preset_by_name,
        scaled,
        with_logging,
        with_noise,
        with_trusted,
    )

    preset = with_logging(scaled(preset_by_name(a.preset), a.rows), a.logging)
    preset = with_trusted(with_noise(preset, a.noise), a.trusted_rows, a.trusted_train_rows, a.random_rows)
    refuse_or_clear(a.out, a.overwrite)
    stats = generate(a.out, preset, seed=a.seed, progress=not a.quiet)
    print(f"wrote {a.out} (preset {a.preset}, seed {a.seed}) in {stats['seconds']}s")
    print(describe(stats))
    return 0

"""``denoisrec convert {movielens,deca} PATH --out DIR``: the command line of the converters.

The converters themselves are :mod:`denoisrec.trainer.datasets.convert`; this module is
kept apart from them so that building the ``denoisrec`` parser imports neither torch nor pyarrow.

Example::

    denoisrec convert movielens ../shared/data/ml-100k --out data/ml100k --seed 0
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "convert real rating data with noise ground truth to a denoisrec dataset"
CLEAN_TEST = ("relabel", "remove")  # the choices of convert.CLEAN_TEST (checked there again)


def add_arguments(conv: argparse.ArgumentParser) -> None:
    """``{movielens,deca} PATH --out DIR [options]``: one sub-command per source format."""
    kinds = conv.add_subparsers(dest="source", required=True)
    for kind, default_thr, helptext in (
        ("movielens", 3, "a MovieLens-100K folder (u.data, u.user, u.item)"),
        ("deca", 4, "a folder in DeCA's format (*.train.rating, *.valid.rating, *.test.negative[, *.test.noisy])"),
    ):
        p = kinds.add_parser(kind, help=helptext)
        p.add_argument("path", help=helptext)
        p.add_argument("--out", required=True, help="output dataset directory")
        p.add_argument(
            "--noisy-max-rating",
            type=int,
            default=default_thr,
            help=f"positives rated at most this are noisy (default {default_thr})",
        )
        p.add_argument("--neg-ratio", type=int, default=1, help="sampled negatives per positive (default 1)")
        p.add_argument("--seed", type=int, default=0, help="random seed of the split (and of any noise)")
        p.add_argument(
            "--clean-test",
            choices=CLEAN_TEST,
            default="relabel",
            help="noisy test positives: relabel (clean_label 0, DART) or remove",
        )
        p.add_argument(
            "--trusted-rows",
            type=int,
            default=5000,
            help="valid rows that carry trusted_label, the rating read as a label (default 5000; 0: none)",
        )
        p.add_argument(
            "--trusted-train-rows", type=int, default=0, help="train rows that carry trusted_label (default 0)"
        )
        if kind == "movielens":
            p.add_argument("--split", default="0.8,0.1,0.1", help="train,valid,test fractions (default 0.8,0.1,0.1)")
            p.add_argument(
                "--split-by",
                choices=("random", "time"),
                default="random",
                help="random rows (8:1:1), or by time (the earliest ratings train, the latest test)",
            )


def run(a: Any) -> int:
    from denoisrec.trainer.datasets.convert import convert_deca, convert_movielens, describe

    for opt, v in (("--trusted-rows", a.trusted_rows), ("--trusted-train-rows", a.trusted_train_rows)):
        if v < 0:
            raise ValueError(f"{opt} {v}: expected a row count >= 0")
    if a.source == "movielens":
        try:
            fractions = [float(x) for x in a.split.split(",")]
        except ValueError:
            raise ValueError(f"--split {a.split!r}: expected three comma-separated fractions") from None
        stats = convert_movielens(
            a.path,
            a.out,
            a.noisy_max_rating,
            a.neg_ratio,
            a.seed,
            fractions,
            a.split_by,
            a.clean_test,
            a.trusted_rows,
            a.trusted_train_rows,
        )
    else:
        stats = convert_deca(
            a.path, a.out, a.noisy_max_rating, a.neg_ratio, a.seed, a.clean_test, a.trusted_rows, a.trusted_train_rows
        )
    print(f"wrote {a.out}")
    print(describe(stats))
    return 0

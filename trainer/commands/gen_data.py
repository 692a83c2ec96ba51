"""``denoisrec gen-data``: write a synthetic noisy-feedback dataset with ground truth.

The generator is :mod:`denoisrec.trainer.datasets.synthetic`; this module only parses and prints.

Example::

    denoisrec gen-data --preset tiny --out data/tiny --seed 0
"""

from __future__ import annotations

import argparse

HELP = "write a synthetic noisy-feedback dataset with ground truth"


def add_arguments(g: argparse.ArgumentParser) -> None:
    """Preset, output directory, seed, size and who placed the items."""
    g.add_argument("--preset", default="small", help="tiny, small, medium, product, criteo")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--rows", type=int, help="training rows (valid/test scaled alike); default: the preset's")
    g.add_argument(
        "--logging",
        choices=["ranker", "independent"],
        help="who placed the items: a previous ranker (default; position correlates with preference) "
        "or independent placement (the original generator)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress lines")


def run(a: argparse.Namespace) -> int:
    """Generate, then print where and the dataset's statistics."""
    from denoisrec.trainer.datasets.synthetic import describe, generate, preset_by_name, scaled, with_logging

    preset = with_logging(scaled(preset_by_name(a.preset), a.rows), a.logging)
    stats = generate(a.out, preset, seed=a.seed, progress=not a.quiet)
    print(f"wrote {a.out} (preset {a.preset}, seed {a.seed}) in {stats['seconds']}s")
    print(describe(stats))
    return 0

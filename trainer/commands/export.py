"""``denoisrec export RUN``: a torch-only serving artefact of a trained run (docs/serving.md).

The work and the printed report are :func:`denoisrec.trainer.predict_cli.run_export`.

Example::

    denoisrec export runs/x --format torchscript --calibrate platt
"""

from __future__ import annotations

import argparse

HELP = "write a torch-only serving artefact of a trained run (docs/serving.md)"


def add_arguments(ex: argparse.ArgumentParser) -> None:
    """The run, the format, where to write, and the optional Platt calibrator."""
    ex.add_argument("run", help="run directory (its model.pt) or a model file")
    ex.add_argument("--format", default="torchscript", help="torchscript or exported-program")
    ex.add_argument("--out", help="output directory (default: RUN/serving)")
    ex.add_argument("--calibrate", help="platt: fit a Platt calibrator on the validation split and include it")
    ex.add_argument("--valid", help="validation split for --calibrate (default: the run's data.path/valid)")


def run(a: argparse.Namespace) -> int:
    """Export, then print the artefact's size, load time and probe difference."""
    from denoisrec.trainer.predict_cli import run_export

    return run_export(a)

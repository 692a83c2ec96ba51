"""``denoisrec export RUN``: a torch-only serving artefact of a trained run (docs/serving.md).

The CLI layer over :func:`denoisrec.trainer.serving.export.export_serving`: it exports and prints the report.

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
    ex.add_argument(
        "--out",
        help="the artefact's folder, replaced whole by a re-export (default: RUN/serving/FORMAT: "
        "serving.pt or serving.pt2, serving.json, calibrator.json)",
    )
    ex.add_argument("--calibrate", help="platt: fit a Platt calibrator on the validation split and include it")
    ex.add_argument("--valid", help="validation split for --calibrate (default: the run's data.path/valid)")


def run(a: argparse.Namespace) -> int:
    """Export, then print the artefact's size, load time and probe difference."""
    from denoisrec.trainer.serving.export import export_serving

    r = export_serving(a.run, a.format, out=a.out, calibrate=a.calibrate, valid=a.valid)
    print(
        f"exported {r['model']} as {r['format']} -> {r['artefact']} ({r['artefact_bytes'] / 2**20:,.1f} MiB; "
        f"tables {r['table_bytes'] / 2**20:,.1f} MiB); load {r['load_seconds']:.2f}s; "
        f"probe max |diff| {r['probe_max_abs_diff']:.2g}"
    )
    c = r.get("calibration")
    if c:
        print(
            f"  Platt calibrator a={c['a']:.4f} b={c['b']:+.4f} on {c['rows']:,} rows of {c['valid']}: "
            f"valid logloss {c['valid_logloss_before']:.4f} -> {c['valid_logloss_after']:.4f}"
        )
    print(f"  inputs and outputs: {r['spec']}")
    if r.get("calibrator"):
        print(f"  calibrator (for denoisrec predict --calibrator): {r['calibrator']}")
    for path in r.get("removed_legacy") or []:
        print(f"  removed {path} (an export made before per-format folders)")
    return 0

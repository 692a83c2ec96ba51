"""The ``denoisrec bench`` command group.

    denoisrec bench throughput [--quick] [--out DIR] ...
    denoisrec bench quality    [--quick] ...
    denoisrec bench peers      [--quick] ...
    denoisrec bench ingest     [--quick] [--data DIR] ...
    denoisrec bench serving    --run RUN --data SPLIT --out DIR [--quick] ...

A bench module registers itself by defining ``add_arguments(parser)`` and ``run(args) -> int`` (see the
package docstring); a listed module that is absent is left out of the group, one without that contract is
an error.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

BENCHES = {
    "throughput": "samples/s of every denoiser against the BCE baseline, same process, interleaved rounds",
    "quality": "clean-test AUC/GAUC/logloss of every denoiser against BCE and the clean-label oracle",
    "peers": "DeepFM in denoisrec versus DeepCTR-Torch / pytorch-fm on the same data and shape",
    "ingest": "Parquet -> Batch rows/s against a raw pyarrow scan",
    "gpu_check": "make gpu-check: the GPU tests, then GPU throughput against plain TorchRec, as one report",
    "serving": "a run's torch-only serving artefacts: size, load time, rows/s against its TorchRec model",
}


HELP = "benchmarks: throughput, quality, peers, ingest"
DESCRIPTION = __doc__


def add_arguments(bench: argparse.ArgumentParser) -> None:
    """One sub-command per bench module, each with that module's own options."""
    kinds = bench.add_subparsers(dest="bench", required=True)
    for name, helptext in BENCHES.items():
        try:
            mod = importlib.import_module(f"denoisrec.trainer.bench.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"denoisrec.trainer.bench.{name}":
                continue  # not built in this checkout
            raise
        if not (hasattr(mod, "add_arguments") and hasattr(mod, "run")):
            raise RuntimeError(f"denoisrec.trainer.bench.{name} must define add_arguments(parser) and run(args)")
        p = kinds.add_parser(name, help=helptext, description=(mod.__doc__ or helptext),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(bench_run=mod.run)


def run(a: argparse.Namespace) -> int:
    """Run the bench ``a.bench`` names."""
    return int(a.bench_run(a))

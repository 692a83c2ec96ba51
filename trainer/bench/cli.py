"""The ``denoisrec bench`` command group.

    denoisrec bench throughput [--quick] [--out DIR] ...
    denoisrec bench quality    [--quick] ...
    denoisrec bench peers      [--quick] ...
    denoisrec bench ingest     [--quick] [--data DIR] ...
    denoisrec bench serving    --run RUN --data SPLIT --out DIR [--quick] ...
    denoisrec bench tuned      --data 'DIR-s{seed}',... --seeds 3 [--out DIR] ...
    denoisrec bench redraw     DIR/<bench>.json [--out FIG.png]
    denoisrec bench plan       [--quick] [--preset product] [--world-sizes 8,64,512] ...

Every bench is a module listed in :data:`BENCHES` with ``add_arguments(parser)`` and ``run(args) -> int``
(see the package docstring), the pattern of every ``denoisrec`` command.
"""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Dict, Tuple

from denoisrec.trainer.bench import gpu_check, ingest, peers, plan, quality, redraw, serving, throughput, tuned

BENCHES: Dict[str, Tuple[ModuleType, str]] = {
    "throughput": (
        throughput,
        "samples/s of every denoiser against the BCE baseline, same process, interleaved rounds",
    ),
    "quality": (quality, "clean-test AUC/GAUC/logloss of every denoiser against BCE and the clean-label oracle"),
    "peers": (peers, "DeepFM in denoisrec versus DeepCTR-Torch / pytorch-fm on the same data and shape"),
    "ingest": (ingest, "Parquet -> Batch rows/s against a raw pyarrow scan"),
    "gpu_check": (
        gpu_check,
        "make gpu-check: the GPU tests, then GPU throughput against plain TorchRec, as one report",
    ),
    "plan": (plan, "TorchRec's sharding plan for 8-512 H100s, simulated: types, memory, step estimate, a2a bytes"),
    "serving": (serving, "a run's torch-only serving artefacts: size, load time, rows/s against its TorchRec model"),
    "tuned": (
        tuned,
        "denoisrec tune's choice against BCE and the clean oracle per noise family, and its selection accuracy",
    ),
    "redraw": (redraw, "draw a bench's PNG again from the <bench>.json it wrote (quality, peers, serving, throughput)"),
}


HELP = "benchmarks: throughput, quality, peers, ingest, serving, plan"
DESCRIPTION = __doc__


def add_arguments(bench: argparse.ArgumentParser) -> None:
    """One sub-command per bench module, each with that module's own options."""
    kinds = bench.add_subparsers(dest="bench", required=True)
    for name, (mod, helptext) in BENCHES.items():
        p = kinds.add_parser(
            name,
            help=helptext,
            description=(mod.__doc__ or helptext),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(bench_run=mod.run)


def run(a: argparse.Namespace) -> int:
    """Run the bench ``a.bench`` names."""
    return int(a.bench_run(a))

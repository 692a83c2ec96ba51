"""The ``denoisrec bench`` command group: one sub-command per bench module.

Example::

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
DESCRIPTION = """Benchmarks that print numbers and write a report (<bench>.json, <bench>.md, <bench>.png) into --out.

  denoisrec bench throughput --quick          samples/s of every denoiser against BCE
  denoisrec bench quality --quick             clean-test AUC of every denoiser against BCE and the oracle
  denoisrec bench peers --quick               DeepFM here against DeepCTR-Torch and pytorch-fm
  denoisrec bench ingest --quick              Parquet -> batches rows/s against a raw scan
  denoisrec bench serving --run RUN --data data/small/test --out DIR
  denoisrec bench plan --quick                the sharding plan for 8-512 GPUs, simulated
  denoisrec bench redraw DIR/quality.json     draw a bench's figure again from its JSON

--quick is a smoke test of seconds to minutes (its numbers are not graded); without it a bench runs its
full protocol. denoisrec bench NAME --help lists a bench's options; docs/benchmarks.md has the protocols."""

USAGE: Dict[str, str] = {
    "throughput": """What each denoiser costs in samples/s against plain BCE: the same sharded model, data, batch
and process for every method, only the loss layer differs; batches are held in memory (ingest is not
timed), the batch grows until a BCE step takes --min-step-ms, and methods run in interleaved rounds.
1 rank in this process, then each of --ranks under torchrun (gloo on CPU).

  denoisrec bench throughput --quick
  denoisrec bench throughput --denoisers tce,observation --ranks 1,2 --out runs/bench

Writes throughput.json, throughput.md and throughput.png (and a warnings file) into --out.""",
    "quality": """What each denoiser buys on the clean test set: BCE on the observed labels, BCE on the clean labels
(the oracle) and every denoiser, each over --seeds seeds, with hyperparameters chosen on the validation
signal --select-on names (never the test split). Reports clean-test AUC, GAUC and logloss, mean and spread.
Needs data with ground truth (denoisrec gen-data, or denoisrec convert).

  denoisrec bench quality --quick
  denoisrec bench quality --data data/small --denoisers tce,observation --seeds 5 --out runs/bench-q

Writes quality.json, quality.md and quality.png into --out.""",
    "peers": """DeepFM in denoisrec against DeepCTR-Torch and pytorch-fm (installed with the bench extra; a peer
that is not installed is reported as missing): the same data (a synthetic preset's single-valued features),
the same shape and optimizer, then AUC, logloss and samples/s side by side.

  denoisrec bench peers --quick
  denoisrec bench peers --preset criteo --table-rows 100000 --out runs/bench

Writes peers.json, peers.md and peers.png into --out.""",
    "ingest": """How fast Parquet becomes training batches: raw pyarrow scans of the same columns (the ceiling),
the trainer's reader ordered and with its shuffle buffer, the rate training consumes batches, and the
peak memory of streaming one epoch (--rss-data).

  denoisrec bench ingest --quick
  denoisrec bench ingest --data data/medium --workers 1 2 --out runs/bench

Writes ingest.json, ingest.md and ingest.png into --out.""",
    "gpu_check": """What make gpu-check runs on a machine with a GPU: the GPU tests (pytest -m gpu), then DLRM
throughput on product-shape data in fp32 and bf16, plain TorchRec against BCE and every denoiser, as one
report. Without a GPU it says so and exits 0; --device cpu --quick rehearses the report on CPU.

  denoisrec bench gpu_check --out runs/gpu-check

Writes gpu_check.json and gpu_check.md into --out; exits 1 when a test failed.""",
    "plan": """TorchRec's sharding plan for GPU clusters this machine is not, simulated: for each table scale and
world size, the tables per sharding type, peak memory per rank, the planner's step estimate, the bytes
the all-to-alls move per step and the reader cores each GPU needs.

  denoisrec bench plan --quick
  denoisrec bench plan --preset product --scales 1,10,100 --world-sizes 8,64,512 --out runs/bench-plan

Writes plan.json, plan.md and plan.png into --out.""",
    "serving": """A run's torch-only serving artefacts (TorchScript, exported program) against its TorchRec model:
artefact size, load time and rows/s at each batch size, in interleaved rounds on the same inputs, and the
largest difference between the artefact's and the model's logits.

  denoisrec bench serving --run runs/dlrm --data data/small/test --out runs/dlrm/bench_serving

Writes serving.json, serving.md and serving.png into --out.""",
    "redraw": """Draw a bench's figure again from the JSON it wrote, without measuring again (quality, peers,
serving, throughput; also a run's observation.json). A run's curves.png is redrawn by denoisrec report RUN.

  denoisrec bench redraw runs/bench-q/quality.json       rewrites runs/bench-q/quality.png
  denoisrec bench redraw runs/obs/observation.json --out obs.png""",
}
"""What ``denoisrec bench NAME --help`` says above the options: for users (the module docstrings are for
readers of the code)."""


def add_arguments(bench: argparse.ArgumentParser) -> None:
    """One sub-command per bench module, each with that module's own options."""
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, (mod, helptext) in BENCHES.items():
        p = kinds.add_parser(
            name,
            help=helptext,
            description=USAGE.get(name, helptext),
        )
        mod.add_arguments(p)
        p.set_defaults(bench_run=mod.run)


def run(a: argparse.Namespace) -> int:
    """Run the bench ``a.bench`` names."""
    return int(a.bench_run(a))

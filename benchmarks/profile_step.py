"""Profile denoisrec's training step on the Criteo-like DeepFM shape with ``torch.profiler``: where a step's
time goes, by the stage labels of :class:`denoisrec.trainer.loop.steps.Stepper` and by operator.

One process (gloo, world size 1), the trainer's own pieces (``build_module``, fused sparse optimizer, DMP,
``train_optimizer``, ``Stepper``) as ``bench peers`` runs them: the single-valued view of ``--data`` with
every table ``--table-rows`` rows, DeepFM, MLP 256-128-64, dropout 0.2, batch 8192, Adagrad lr 0.01 on every
parameter, BCE. Batches come from the Parquet reader (shuffled, the default 262,144-row buffer), so reader
waits show as ``denoisrec.next_batch``. Prints the stage table and the top operators by self CPU time, and
writes the Chrome trace to ``--out``.

``--first-order`` picks DeepFM's first-order layout (``table``: their own tables, the default; ``fused``: in
the embedding tables; :mod:`denoisrec.models.first_order`). ``--ab ROUNDS`` profiles nothing:
it builds :data:`VARIANTS` from the same seed (this code; the table layout; main before the change: table
layout, ``nn.Dropout``, autograd's FM gradient) and times ``--steps`` steps of each in rounds (order reversed
every other round) on the same in-memory batches, and prints per-step wall and process CPU time (median over
rounds) and the per-round ratios to main's: a side-by-side measure that survives other load on the machine.

Example::

    denoisrec gen-data --preset criteo --rows 300000 --out data/criteo-300000
    OMP_NUM_THREADS=2 python benchmarks/profile_step.py --data data/criteo-300000 --out runs/profile-step
    python benchmarks/profile_step.py --data data/criteo-300000 --threads 1 --steps 4 --ab 5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="runs/profile-step")
    p.add_argument("--table-rows", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--first-order", choices=("table", "fused"), default="table", help="DeepFM's first-order layout")
    p.add_argument("--ab", type=int, default=0, help="rounds of an interleaved fused/table timing (no profile)")
    a = p.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from denoisrec.models.dropout import Dropout16
    from denoisrec.models.layers import FMInteraction
    from denoisrec.trainer.bench.peers import deepfm_overrides, single_valued_view
    from denoisrec.trainer.config.tree import Config, apply_overrides
    from denoisrec.trainer.data.reader import ParquetBatchReader
    from denoisrec.trainer.distributed.env import init_distributed
    from denoisrec.trainer.distributed.sharding import fuse_sparse_optimizer, make_plan, train_optimizer, wrap
    from denoisrec.trainer.factory import build_module
    from denoisrec.trainer.loop.steps import Stepper

    if a.threads:
        torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    view = tempfile.mkdtemp(prefix="profile-view-")
    schema = single_valued_view(a.data, view, a.table_rows)
    env = init_distributed("cpu")

    def stepper(variant: str) -> Stepper:
        layout, _, drop = variant.partition("+")
        cfg = Config()
        apply_overrides(
            cfg,
            deepfm_overrides([256, 128, 64], 0.2)
            + [
                "model.name=deepfm",
                "model.embedding_dim=16",
                f"model.params.first_order={layout}",
                "optim.dense=adagrad",
                "optim.lr=0.01",
                "optim.sparse=adagrad",
                "optim.sparse_lr=0.01",
                "optim.weight_decay=0",
                "optim.sparse_weight_decay=0",
            ],
        )
        torch.manual_seed(0)
        module = build_module(cfg, schema)
        if drop == "main":  # main before this branch: nn.Dropout's bernoulli_ masks, autograd's FM gradient
            for m in list(module.modules()):
                for name, child in m.named_children():
                    if isinstance(child, Dropout16):
                        setattr(m, name, torch.nn.Dropout(child.p))
                    elif isinstance(child, FMInteraction):
                        setattr(m, name, AutogradFM())
        fuse_sparse_optimizer(module, cfg.optim.sparse, cfg.optim.sparse_lr, 0.0)
        model = wrap(module, make_plan(module, env, None, a.batch_size), env)
        opt = train_optimizer(model, cfg.optim)
        return Stepper(model, opt.optimizer, env.device, pipelined=False)

    reader = ParquetBatchReader(
        os.path.join(view, "train"), schema, a.batch_size, shuffle=True, shuffle_buffer=262_144, seed=0, prefetch=4
    )
    need = a.warmup + a.steps
    if len(reader) < need:
        raise SystemExit(f"--data {a.data}: {len(reader)} batches of {a.batch_size}, need {need}")
    if a.ab:
        return interleaved(stepper, reader, a)
    batches = iter(reader)
    run = stepper(a.first_order).run(batches)
    for _ in range(a.warmup):
        next(run)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(a.steps):
            next(run)
    dt = time.perf_counter() - t0
    run.close()
    print(
        f"{a.steps} steps of {a.batch_size}: {a.steps * a.batch_size / dt:,.0f} samples/s under the profiler, "
        f"torch threads {torch.get_num_threads()}"
    )
    events = prof.key_averages()
    stages = [e for e in events if e.key.startswith("denoisrec.")]
    total = sum(e.cpu_time_total for e in stages)
    print("\nstage                       ms/step   share")
    for e in sorted(stages, key=lambda e: -e.cpu_time_total):
        print(f"{e.key:26s} {e.cpu_time_total / 1e3 / a.steps:8.1f}  {e.cpu_time_total / total:6.1%}")
    print("\ntop operators by self CPU time")
    print(events.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
    prof.export_chrome_trace(os.path.join(a.out, "trace.json"))
    print(f"wrote {os.path.join(a.out, 'trace.json')}")
    return 0


# --ab: the fused first-order layout with the rest of this branch (16-bit dropout masks, FM gradient written out),
# this branch's default (table layout), and main before it (table layout, nn.Dropout, autograd's FM gradient).
VARIANTS = ("fused+dropout16", "table+dropout16", "table+main")


class AutogradFM(torch.nn.Module):
    """main's FM interaction: the same formula, its gradient left to autograd (the ``table+main`` variant)."""

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        square_of_sum = fields.sum(dim=1).pow(2)
        sum_of_square = fields.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)


def interleaved(make, reader, a) -> int:  # type: ignore[no-untyped-def]
    """``--ab``: every variant, ``--steps`` steps each per round, order reversed every other round; per-step
    medians, and the median per-round ratio of the old variant's time to each one's.
    """
    import itertools
    import statistics

    batches = list(itertools.islice(iter(reader), a.steps))  # the same batches for all, read once
    runs = {v: make(v).run(itertools.cycle(batches)) for v in VARIANTS}
    for run in runs.values():
        for _ in range(a.warmup):
            next(run)
    wall: dict = {k: [] for k in runs}
    cpu: dict = {k: [] for k in runs}
    for r in range(a.ab):
        for layout in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(a.steps):
                next(runs[layout])
            wall[layout].append((time.perf_counter() - t0) / a.steps * 1e3)
            cpu[layout].append((time.process_time() - c0) / a.steps * 1e3)
    for run in runs.values():
        run.close()
    print(f"{a.ab} rounds × {a.steps} steps of {a.batch_size}, torch threads {torch.get_num_threads()}")
    print(
        "variant                 wall ms/step (median)   CPU ms/step (median)   samples/s (wall)   old/this wall, CPU"
    )
    old = VARIANTS[-1]
    for k in runs:
        w, c = statistics.median(wall[k]), statistics.median(cpu[k])
        rw = statistics.median([o / t for o, t in zip(wall[old], wall[k])])
        rc = statistics.median([o / t for o, t in zip(cpu[old], cpu[k])])
        print(f"{k:22s} {w:14.1f} {c:22.1f} {a.batch_size / w * 1e3:18,.0f}   {rw:6.2f} {rc:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

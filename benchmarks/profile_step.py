"""Profile denoisrec's training step on the Criteo-like DeepFM shape with ``torch.profiler``: where a step's
time goes, by the stage labels of :class:`denoisrec.trainer.steps.Stepper` and by operator.

One process (gloo, world size 1), the trainer's own pieces (``build_module``, fused sparse optimizer, DMP,
``train_optimizer``, ``Stepper``) as ``bench peers`` runs them: the single-valued view of ``--data`` with
every table ``--table-rows`` rows, DeepFM, MLP 256-128-64, dropout 0.2, batch 8192, Adagrad lr 0.01 on every
parameter, BCE. Batches come from the Parquet reader (shuffled, the default 262,144-row buffer), so reader
waits show as ``denoisrec.next_batch``. Prints the stage table and the top operators by self CPU time, and
writes the Chrome trace to ``--out``.

Example::

    denoisrec gen-data --preset criteo --rows 300000 --out data/criteo-300000
    OMP_NUM_THREADS=2 python benchmarks/profile_step.py --data data/criteo-300000 --out runs/profile-step
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="runs/profile-step")
    p.add_argument("--table-rows", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from denoisrec.trainer.bench.peers import deepfm_overrides, single_valued_view
    from denoisrec.trainer.config import Config, apply_overrides
    from denoisrec.trainer.data.reader import ParquetBatchReader
    from denoisrec.trainer.dist import init_distributed
    from denoisrec.trainer.factory import build_module
    from denoisrec.trainer.sharding import fuse_sparse_optimizer, make_plan, train_optimizer, wrap
    from denoisrec.trainer.steps import Stepper

    if a.threads:
        torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    view = tempfile.mkdtemp(prefix="profile-view-")
    schema = single_valued_view(a.data, view, a.table_rows)
    cfg = Config()
    apply_overrides(
        cfg,
        deepfm_overrides([256, 128, 64], 0.2)
        + [
            "model.name=deepfm",
            "model.embedding_dim=16",
            "optim.dense=adagrad",
            "optim.lr=0.01",
            "optim.sparse=adagrad",
            "optim.sparse_lr=0.01",
            "optim.weight_decay=0",
            "optim.sparse_weight_decay=0",
        ],
    )
    env = init_distributed("cpu")
    torch.manual_seed(0)
    module = build_module(cfg, schema)
    fuse_sparse_optimizer(module, cfg.optim.sparse, cfg.optim.sparse_lr, 0.0)
    model = wrap(module, make_plan(module, env, None, a.batch_size), env)
    opt = train_optimizer(model, cfg.optim)
    stepper = Stepper(model, opt.optimizer, env.device, pipelined=False)
    reader = ParquetBatchReader(
        os.path.join(view, "train"), schema, a.batch_size, shuffle=True, shuffle_buffer=262_144, seed=0, prefetch=4
    )
    need = a.warmup + a.steps
    if len(reader) < need:
        raise SystemExit(f"--data {a.data}: {len(reader)} batches of {a.batch_size}, need {need}")
    batches = iter(reader)
    run = stepper.run(batches)
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


if __name__ == "__main__":
    sys.exit(main())

"""CPU time per training step of DeCA and DeCA(p) against BCE on N gloo ranks, interleaved rounds: the
steadier figure on a shared machine, where wall-clock ratios swing by ±0.15 (benchmarks/README.md, "DeCA /
DeCA(p) with the MF tables folded").

The models, factory and step are ``bench throughput``'s (``build_module`` → ``bind_run`` → ``shard_module`` →
``Stepper``, plain loop; DeCA(p) with ``pretrain_steps=0`` and its prior cache filled on the cycled batches),
on 8 batches of ``/tmp/dfold_small`` (``denoisrec gen-data --preset small --out /tmp/dfold_small``) cycled from
memory. Per round and method: ``time.process_time`` (all threads) of every rank summed over the ranks, and the
slowest rank's wall time. Rank 0 prints the medians over rounds of the per-round ratios to BCE and writes the
raw numbers to ``OUT``.

    OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node=2 \
        benchmarks/denoiser_cpu_time.py 9 /tmp/cpu.json      # ROUNDS OUT; add PYTHONPATH=<copy> for "before"
"""

import itertools
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist

from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.denoising.prior import cache_prior_scores
from denoisrec.trainer.distributed.env import init_distributed
from denoisrec.trainer.factory import build_module, shard_module
from denoisrec.trainer.loop.steps import Stepper
from denoisrec.trainer.module import denoiser_of
from denoisrec.trainer.run_setup import seed_everything

torch.set_num_threads(1)
env = init_distributed("cpu")
data = "/tmp/dfold_small"
B = 2048
ROUNDS = int(sys.argv[1])
STEPS = 10
schema = DataSchema.load(data)
reader = ParquetBatchReader(os.path.join(data, "train"), schema, B, env.rank, env.world_size)
feed = [x.to(env.device) for x in itertools.islice(iter(reader), 8)]
methods = ["bce", "deca", "deca_p"]
runs = {}
for m in methods:
    cfg = Config()
    cfg.data.path = data
    cfg.data.batch_size = B
    cfg.denoiser.name = m
    if m == "deca_p":
        cfg.denoiser.params = {"pretrain_steps": 0}
    seed_everything(cfg.run.seed)
    module = build_module(cfg, schema)
    module.denoiser.bind_run(1, 1 << 30)
    built = shard_module(module, cfg, env, B)
    built.model.train()
    d = denoiser_of(built.model)
    if d.needs.pretraining is not None and d.needs.pretraining.cache_scores:
        cache_prior_scores(d, feed, env.device)
    runs[m] = Stepper(built.model, built.opt.optimizer, env.device, pipelined=False).run(itertools.cycle(feed))
for m in methods:
    for _ in range(3):
        next(runs[m])
cpu = {m: [] for m in methods}
wall = {m: [] for m in methods}
for r in range(ROUNDS):
    k = r % 3
    for m in methods[k:] + methods[:k]:
        dist.barrier()
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(STEPS):
            next(runs[m])
        t = torch.tensor([time.process_time() - c0, time.perf_counter() - w0], dtype=torch.float64)
        tc = t.clone()
        dist.all_reduce(tc)  # CPU summed over ranks
        tw = t.clone()
        dist.all_reduce(tw, op=dist.ReduceOp.MAX)
        cpu[m].append(float(tc[0]) / STEPS)
        wall[m].append(float(tw[1]) / STEPS)
if env.rank == 0:
    out = {"cpu": cpu, "wall": wall}
    json.dump(out, open(sys.argv[2], "w"))
    for m in methods:
        rc = [a / b for a, b in zip(cpu[m], cpu["bce"])]
        rw = [b / a for a, b in zip(wall[m], wall["bce"])]
        print(
            f"{m:7s} cpu ms/step {1000 * statistics.median(cpu[m]):7.1f}  cpu x bce {statistics.median(rc):.3f}  "
            f"throughput x bce (wall) {statistics.median(rw):.3f}"
        )
dist.destroy_process_group()

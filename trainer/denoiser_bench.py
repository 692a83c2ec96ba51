"""Per-step cost of each denoiser against BCE, measured inside one job so every method sees the same load.

Every method gets its own sharded module (same model, data and plan rules as ``train``); the methods then
take turns, ``--steps`` training steps each, for ``--rounds`` rounds (the first round is warm-up). Taking
turns spreads any change of machine load over all methods alike, and the best round of each method (the
one least disturbed by other jobs) is reported. Printed per method: the wall time per step, its
throughput relative to BCE, the process CPU time per step (the max over ranks; less sensitive to other
jobs than wall time), and the denoiser's own collectives per step.

Run it like the trainer (under torchrun for several ranks)::

    torchrun --standalone --nproc_per_node 2 -m denoisrec.trainer.denoiser_bench --data data/small
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Optional

import torch
import torch.distributed as dist

from denoisrec.denoisers import DENOISERS
from denoisrec.denoisers import collectives as C
from denoisrec.trainer.config import Config, parse_params
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.dist import DistEnv, init_distributed
from denoisrec.trainer.sharding import dense_optimizer, fuse_sparse_optimizer, make_plan, wrap

# deca_p is timed in its phase 2 (the prior frozen), the phase that lasts.
BENCH_PARAMS: Dict[str, Dict[str, object]] = {"deca_p": {"pretrain_steps": 0}}


class _Runner:
    def __init__(self, name: str, params: Dict[str, object], cfg: Config, env: DistEnv,
                 schema: DataSchema) -> None:
        from denoisrec.trainer.denoising import plan_constraints, static_graph
        from denoisrec.trainer.train import build_module, seed_everything

        cfg.denoiser.name, cfg.denoiser.params = name, dict(params)
        seed_everything(cfg.run.seed)
        module = build_module(cfg, schema)
        fuse_sparse_optimizer(module, cfg.optim.sparse, cfg.optim.sparse_lr, cfg.optim.sparse_weight_decay)
        plan = make_plan(module, env, cfg.sharding.sharding_type, cfg.data.batch_size, plan_constraints(module, cfg))
        self.model = wrap(module, plan, env, static_graph=static_graph(module))
        self.opt = dense_optimizer(self.model, cfg.optim.dense, cfg.optim.lr, cfg.optim.weight_decay)
        self.reader = ParquetBatchReader(f"{cfg.data.path}/train", schema, cfg.data.batch_size, env.rank,
                                         env.world_size, shuffle=True, seed=cfg.run.seed)
        self.device, self.epoch, self.it = env.device, 0, iter(self.reader)
        self.model.train()

    def batch(self):  # type: ignore[no-untyped-def]
        try:
            return next(self.it)
        except StopIteration:
            self.epoch += 1
            self.reader.set_epoch(self.epoch)
            self.it = iter(self.reader)
            return next(self.it)

    def steps(self, n: int) -> None:
        for _ in range(n):
            b = self.batch().to(self.device, non_blocking=True)
            loss, _ = self.model(b)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()


def _max(x: float) -> float:
    t = torch.tensor([x], dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="denoiser_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/small")
    p.add_argument("--methods", default=",".join(DENOISERS), help="comma-separated; bce is always included")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="a method's hyperparameter, e.g. deca.C1=10 (repeatable)")
    p.add_argument("--steps", type=int, default=5, help="steps per method per round")
    p.add_argument("--rounds", type=int, default=13, help="rounds (the first is warm-up)")
    p.add_argument("--batch-size", type=int, default=2048)
    a = p.parse_args(argv)
    env = init_distributed("auto")
    schema = DataSchema.load(a.data)
    methods = ["bce"] + [m for m in a.methods.split(",") if m and m != "bce"]
    params: Dict[str, Dict[str, object]] = {m: dict(BENCH_PARAMS.get(m, {})) for m in methods}
    for item in a.param:
        key, _, rest = item.partition(".")
        params.setdefault(key, {}).update(parse_params([rest]))
    runners = {}
    for m in methods:
        cfg = Config()
        cfg.data.path, cfg.data.batch_size = a.data, a.batch_size
        runners[m] = _Runner(m, params[m], cfg, env, schema)
    wall: Dict[str, List[float]] = {m: [] for m in methods}
    cpu: Dict[str, List[float]] = {m: [] for m in methods}
    calls: Dict[str, float] = {}
    for r in range(a.rounds):
        for m in methods:
            C.COUNTER.reset()
            if dist.is_initialized():
                dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            runners[m].steps(a.steps)
            if dist.is_initialized():
                dist.barrier()
            w, c = (time.perf_counter() - t0) / a.steps, (time.process_time() - c0) / a.steps
            calls[m] = C.COUNTER.calls / a.steps
            if r > 0:
                wall[m].append(_max(w))
                cpu[m].append(_max(c))
    if env.is_main:
        base_w, base_c = min(wall["bce"]), min(cpu["bce"])
        print(f"{env.world_size} rank(s) on {env.device}, batch {a.batch_size}/rank, best of {a.rounds - 1} "
              f"rounds of {a.steps} steps per method (after 1 warm-up round)")
        print(f"{'method':16s} {'ms/step':>8s} {'vs bce':>7s} {'cpu ms/step':>12s} {'vs bce':>7s} {'collectives':>11s}")
        for m in methods:
            w, c = min(wall[m]), min(cpu[m])
            print(f"{m:16s} {w * 1e3:8.1f} {base_w / w:6.3f}x {c * 1e3:12.1f} {base_c / c:6.3f}x "
                  f"{calls[m]:11.1f}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

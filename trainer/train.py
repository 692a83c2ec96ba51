"""The training job: data → sharded model + denoiser → steps → evaluation → summary.

One function, :func:`train`, runs on every rank (one process or many under torchrun / torchx). Rank 0
writes the outputs (see :mod:`denoisrec.trainer.runlog`).

Example (one process)::

    cfg = Config()
    cfg.data.path = "data/small"
    summary = train(cfg)
    summary["metrics"]["test_clean"]["auc"]
"""

from __future__ import annotations

import os
import platform
import random
import time
from typing import Any, Dict

import numpy as np
import torch
import torch.distributed as dist

from denoisrec.denoisers import build_denoiser
from denoisrec.models import build_model, embedding_bag_collection
from denoisrec.trainer.config import Config
from denoisrec.trainer.data.accounting import format_rows_read, gather_reports
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.data.splits import schema_from_config, split_readers
from denoisrec.trainer.dist import DistEnv, init_distributed
from denoisrec.trainer.evaluate import evaluate
from denoisrec.trainer.module import TrainModule
from denoisrec.trainer.runlog import RunLog, fmt_stats
from denoisrec.trainer.sharding import dense_optimizer, fuse_sparse_optimizer, make_plan, plan_summary, wrap


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_module(cfg: Config, schema: DataSchema) -> TrainModule:
    ebc = embedding_bag_collection([(f.name, f.num_embeddings) for f in schema.sparse], cfg.model.embedding_dim)
    model = build_model(cfg.model.name, ebc, len(schema.dense), **cfg.model.params)
    denoiser = build_denoiser(cfg.denoiser.name, **cfg.denoiser.params)
    return TrainModule(model, denoiser)


def _readers(cfg: Config, schema: DataSchema, env: DistEnv) -> Dict[str, ParquetBatchReader]:
    return split_readers(cfg.data, schema, env.rank, env.world_size, cfg.run.seed, env.device)


def _global_sum(x: float, device: torch.device) -> float:
    t = torch.tensor([x], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return float(t.item())


def train(cfg: Config) -> Dict[str, Any]:
    """Train and evaluate as ``cfg`` says; return the summary (identical on every rank)."""
    env = init_distributed(cfg.run.device)
    log = RunLog(cfg.run.out, env.is_main)
    t_start = time.time()
    seed_everything(cfg.run.seed)
    schema = schema_from_config(cfg.data)
    readers = _readers(cfg, schema, env)
    module = build_module(cfg, schema)
    fuse_sparse_optimizer(module, cfg.optim.sparse, cfg.optim.sparse_lr, cfg.optim.sparse_weight_decay)
    plan = make_plan(module, env, cfg.sharding.sharding_type, cfg.data.batch_size)
    model = wrap(module, plan, env)
    dense_opt = dense_optimizer(model, cfg.optim.dense, cfg.optim.lr, cfg.optim.weight_decay)
    if env.is_main:
        cfg.save(os.path.join(cfg.run.out, "config.yaml"))
    plan_info = plan_summary(plan)
    log.write_json("plan.json", plan_info)
    log.print(f"denoisrec: {env.world_size} rank(s) on {env.device} ({env.backend}); model={cfg.model.name} "
              f"denoiser={module.denoiser!r}")
    log.print(str(plan))

    train_reader = readers["train"]
    steps_per_epoch = len(train_reader)
    total_steps = steps_per_epoch * cfg.run.epochs
    if cfg.run.max_steps is not None:
        total_steps = min(total_steps, cfg.run.max_steps)
    log.print(f"train: {train_reader.total_rows:,} rows, {steps_per_epoch} steps/epoch of {cfg.data.batch_size} "
              f"rows/rank; running {total_steps} steps")

    step, local_samples = 0, 0
    epoch_reports = []  # row accounting (trainer/data/accounting.py)
    model.train()
    t_train = time.time()
    t_log, samples_log = t_train, 0
    first_loss = last_loss = float("nan")
    for epoch in range(cfg.run.epochs):
        if step >= total_steps:
            break
        train_reader.set_epoch(epoch)
        for batch in train_reader:
            if step >= total_steps:
                break
            batch = batch.to(env.device, non_blocking=True)
            loss, (value, _, out) = model(batch)
            dense_opt.zero_grad()
            loss.backward()
            dense_opt.step()
            step += 1
            local_samples += batch.size
            samples_log += batch.size
            if step == 1:
                first_loss = float(value.item())
            if step % cfg.run.log_every == 0 or step == total_steps:
                last_loss = float(value.item())
                now = time.time()
                rate = samples_log * env.world_size / max(now - t_log, 1e-9)
                stats = {k: float(v.item()) for k, v in out.stats.items()} if out is not None else {}
                log.scalars(step, "train", {"loss": last_loss, "samples_per_s": rate, "epoch": epoch, **stats})
                log.print(f"step {step:>6}/{total_steps} epoch {epoch} loss {last_loss:.4f} "
                          f"{rate:,.0f} samples/s {fmt_stats(stats)}")
                t_log, samples_log = now, 0
        epoch_reports.append(train_reader.epoch_report())
    train_seconds = time.time() - t_train
    rows_read = gather_reports(epoch_reports)
    global_samples = _global_sum(float(local_samples), env.device)

    metrics: Dict[str, Any] = {"valid": evaluate(model, readers["valid"], env.device, "observed")}
    if readers["test"].with_ground_truth:
        metrics["test_clean"] = evaluate(model, readers["test"], env.device, "clean")
    metrics["test_observed"] = evaluate(model, readers["test"], env.device, "observed")
    for name, m in metrics.items():
        log.scalars(step, name, {k: v for k, v in m.items() if isinstance(v, (int, float))})

    rows_per_rank: list = [local_samples]
    if env.world_size > 1:
        rows_per_rank = [None] * env.world_size
        dist.all_gather_object(rows_per_rank, local_samples)
    summary = {
        "config": cfg.to_dict(),
        "world_size": env.world_size,
        "device": str(env.device),
        "backend": env.backend,
        "plan": plan_info,
        "steps": step,
        "epochs_started": len(epoch_reports),
        "rows_trained": {"total": int(global_samples), "per_rank": [int(r) for r in rows_per_rank]},
        "train_rows_in_split": train_reader.total_rows,
        "rows_read": rows_read,
        "loss": {"first": first_loss, "last": last_loss},
        "throughput_samples_per_s": global_samples / max(train_seconds, 1e-9),
        "train_seconds": round(train_seconds, 3),
        "wall_seconds": round(time.time() - t_start, 3),
        "metrics": metrics,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
        },
    }
    log.write_json("summary.json", summary)
    log.print(format_summary(summary))
    log.close()
    return summary


def format_summary(s: Dict[str, Any]) -> str:
    lines = [
        f"done: {s['steps']} steps, {s['rows_trained']['total']:,} rows in {s['train_seconds']:.1f}s "
        f"({s['throughput_samples_per_s']:,.0f} samples/s on {s['world_size']} rank(s)); "
        f"loss {s['loss']['first']:.4f} -> {s['loss']['last']:.4f}",
    ]
    if s.get("rows_read"):
        lines.append(format_rows_read(s["rows_read"]))
    for name, m in s["metrics"].items():
        lines.append(f"  {name:13s} AUC {m['auc']:.4f}  GAUC {m['gauc']:.4f}  logloss {m['logloss']:.4f}  "
                     f"({m['rows']:,} rows, labels: {m['target']})")
    return "\n".join(lines)

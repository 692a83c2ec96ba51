"""The training job: data → sharded model + denoiser → steps → evaluation → checkpoints → summary → export.

:func:`train` runs on every rank (one process, or many under torchrun / torchx). Rank 0 writes the outputs
(see :mod:`denoisrec.trainer.runlog`):

``<out>/config.yaml`` (resolved config), ``plan.json`` (sharding plan), ``metrics.jsonl`` and ``tb/``
(training and evaluation scalars), ``checkpoints/`` (DCP, when ``run.checkpoint_every > 0`` or early
stopping keeps the best model), ``summary.json`` (config, plan, metrics, throughput, wall time, RealImp)
and ``model.pt`` (the unsharded model for ``denoisrec predict``).

The loop: ``run.epochs`` over the train split, capped by ``run.max_steps``; the learning rate follows
:mod:`~denoisrec.trainer.schedule`; validation every ``run.eval_every`` steps (or epochs) feeds early
stopping; a checkpoint every ``run.checkpoint_every`` steps; at the end, validation and test (against clean
labels when the data has them), with the best model restored when early stopping is on.

Example (one process)::

    cfg = Config()
    cfg.data.path = "data/small"
    summary = train(cfg)
    summary["metrics"]["test_clean"]["auc"]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import random
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from denoisrec.models import ModelSpec
from denoisrec.trainer.checkpoint import CheckpointError, Checkpointer, read_meta, step_dir
from denoisrec.trainer.config import Config
from denoisrec.trainer.config_check import check_config
from denoisrec.trainer.console import denoiser_brief, finish_run, plan_brief, resolve_eval_every
from denoisrec.trainer.context import feature_views
from denoisrec.trainer.data.accounting import format_rows_read, gather_reports
from denoisrec.trainer.data.epochs import epoch_batches
from denoisrec.trainer.data.preflight import check_eval_splits_on_main
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.data.splits import schema_from_config, split_readers
from denoisrec.trainer.denoising import (bind_run_length, build_denoiser_for, denoiser_stats, plan_constraints,
                                         prepare_denoiser, static_graph)
from denoisrec.trainer.dist import DistEnv, broadcast_from_main, describe_ranks, init_distributed
from denoisrec.trainer.early_stop import EarlyStopping
from denoisrec.trainer.evaluate import evaluate
from denoisrec.trainer.finite import NonFiniteGuard
from denoisrec.trainer.metrics import real_imp
from denoisrec.trainer.module import TrainModule
from denoisrec.trainer.observation_report import write_observation_report
from denoisrec.trainer.out_policy import prepare_out
from denoisrec.trainer.progress import Progress
from denoisrec.trainer.quiet import WarningsToFile
from denoisrec.trainer.run_history import compact_metrics, position_reports, with_launch
from denoisrec.trainer.run_lock import acquire_for_run
from denoisrec.trainer.runlog import RunLog
from denoisrec.trainer.schedule import LRSchedule, set_lr
from denoisrec.trainer.sharding import (check_sparse_optimizer, fuse_sparse_optimizer, make_plan, plan_summary,
                                        train_optimizer, wrap)
from denoisrec.trainer.steps import Stepper, autocast_context, use_pipeline
from denoisrec.trainer.train_labels import check_train_label, select_train_labels

EVAL_SPLITS = ("valid", "test_clean", "test_observed")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------ set-up
def apply_table_overrides(schema: DataSchema, tables: Dict[str, Dict[str, int]]) -> DataSchema:
    """``model.tables`` row counts replace the schema's (the reader then checks ids against them)."""
    names = set(schema.sparse_names)
    for feature, opts in tables.items():
        if feature not in names:
            raise ValueError(f"model.tables.{feature}: unknown sparse feature; the data has {sorted(names)}")
        bad = set(opts) - {"num_embeddings", "embedding_dim"}
        if bad:
            raise ValueError(f"model.tables.{feature}: unknown key(s) {sorted(bad)}; "
                             "expected num_embeddings, embedding_dim")
    sparse = [dataclasses.replace(f, num_embeddings=int(tables.get(f.name, {}).get("num_embeddings", f.num_embeddings)))
              for f in schema.sparse]
    return DataSchema.from_dict({**schema.to_dict(), "sparse": [vars(f) for f in sparse]})


def model_spec(cfg: Config, schema: DataSchema) -> ModelSpec:
    dims = {f: int(o["embedding_dim"]) for f, o in cfg.model.tables.items() if "embedding_dim" in o}
    return ModelSpec(
        name=cfg.model.name,
        features=[(f.name, f.num_embeddings) for f in schema.sparse],
        dense_in_features=len(schema.dense),
        embedding_dim=cfg.model.embedding_dim,
        dims=dims,
        params=dict(cfg.model.params),
        embedding_init=cfg.model.embedding_init,
    )


def build_module(cfg: Config, schema: DataSchema) -> TrainModule:
    data_schema, model_schema = feature_views(cfg, schema)  # the target model may not see the context
    spec = model_spec(cfg, model_schema)
    return TrainModule(spec.build(), build_denoiser_for(cfg, data_schema, spec))


def rank_batch_size(cfg: Config, world_size: int) -> int:
    g = cfg.data.global_batch_size
    if g is None:
        return cfg.data.batch_size
    if g <= 0 or g % world_size:
        raise ValueError(f"data.global_batch_size={g}: must be a positive multiple of the world size {world_size}")
    return g // world_size


def _readers(cfg: Config, schema: DataSchema, env: DistEnv, batch_size: int) -> Dict[str, ParquetBatchReader]:
    return split_readers(cfg.data, schema, env.rank, env.world_size, cfg.run.seed, env.device, batch_size)


def _check_run_options(cfg: Config) -> None:
    e = cfg.run.eval_every
    if not (e in ("epoch", "auto") or (isinstance(e, int) and not isinstance(e, bool) and e >= 0)):
        raise ValueError(f"run.eval_every={e!r}: expected a number of steps (0: only at the end) or 'epoch'")
    bad = set(cfg.run.eval_during) - set(EVAL_SPLITS)
    if bad:
        raise ValueError(f"run.eval_during: unknown split(s) {sorted(bad)}; expected some of {EVAL_SPLITS}")
    if cfg.run.checkpoint_every < 0:
        raise ValueError(f"run.checkpoint_every={cfg.run.checkpoint_every}: must be >= 0 (0: no checkpoints)")
    if cfg.run.log_every <= 0:
        raise ValueError(f"run.log_every={cfg.run.log_every}: must be positive")


def load_baseline(path: Optional[str]) -> Optional[Dict[str, Any]]:
    """The ``summary.json`` of the baseline run named by ``run.baseline`` (a run directory or the file)."""
    if not path:
        return None
    file = os.path.join(path, "summary.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"run.baseline={path!r}: no summary.json there (train the baseline run first)")
    with open(file) as f:
        s = json.load(f)
    if "metrics" not in s:
        raise ValueError(f"{file}: not a denoisrec run summary (no 'metrics')")
    return {"path": file, "metrics": s["metrics"]}


def realimp_against(metrics: Dict[str, Any], baseline: Dict[str, Any]) -> Dict[str, Any]:
    """RealImp of this run's AUC over the baseline's, split by split (the splits both runs evaluated)."""
    out: Dict[str, Any] = {"baseline": baseline["path"]}
    for split, m in metrics.items():
        b = baseline["metrics"].get(split)
        if b and b.get("auc") is not None:
            out[split] = real_imp(m["auc"], float(b["auc"]))
    return out


# ----------------------------------------------------------------------------------------- data position
def train_batches(reader: ParquetBatchReader, start_step: int, total_steps: int,
                  reports: Optional[List[Any]] = None) -> Iterator[Any]:
    """The batches of steps ``[start_step, total_steps)``: epoch ``step // steps_per_epoch``, skipping the
    batches of that epoch already consumed (the reader is deterministic given the epoch and the seed).

    Each epoch's row accounting (:meth:`ParquetBatchReader.epoch_report`) is appended to ``reports`` when the
    epoch ends, when the budget ends it, or when the generator is closed (early stop, end of session). The
    next epoch is read ahead during the last steps of each (:mod:`denoisrec.trainer.data.epochs`).
    """
    return epoch_batches(reader, start_step, total_steps, reports)


def resume_step(meta: Dict[str, Any], steps_per_epoch: int, global_batch: int) -> int:
    """The step to continue from. Same world size and batch: the checkpoint's step. Otherwise the epoch in
    progress continues after the rows it had consumed, rounded down to a whole batch of the new layout."""
    if meta["steps_per_epoch"] == steps_per_epoch and meta["global_batch"] == global_batch:
        return int(meta["step"])
    rows = int(meta["batches_in_epoch"]) * int(meta["global_batch"])
    return int(meta["epoch"]) * steps_per_epoch + min(rows // global_batch, steps_per_epoch)


@dataclass
class Window:
    """Training statistics since the last log line (device tensors: no host sync until read)."""

    loss_sum: Optional[torch.Tensor] = None
    steps: int = 0
    samples: int = 0
    t0: float = 0.0

    def add(self, value: torch.Tensor, samples: int) -> None:
        v = value.detach().double()
        self.loss_sum = v if self.loss_sum is None else self.loss_sum + v
        self.steps += 1
        self.samples += samples

    def reset(self) -> None:
        self.loss_sum, self.steps, self.samples, self.t0 = None, 0, 0, time.time()


# ------------------------------------------------------------------------------------------------- train
def train(cfg: Config, hooks: Optional[Any] = None) -> Dict[str, Any]:
    """Train and evaluate as ``cfg`` says; return the summary (identical on every rank).

    ``hooks`` (optional; e.g. a test's probe) is called with
    ``on_step(step, epoch, batch, loss_output)`` after every step (``batch`` is ``None`` under the GPU
    pipeline) and ``on_epoch_end(epoch, model, readers, env)`` after every epoch; a true return from the
    latter stops training.

    Rank 0 holds ``<out>/.lock`` for the run's life: a second run on the same ``--out`` is refused
    (``trainer/run_lock.py``).

    Every value of ``cfg`` is checked first (:func:`~denoisrec.trainer.config_check.check_config`);
    third-party warnings go to ``<out>/warnings.log`` (:mod:`~denoisrec.trainer.quiet`); rank 0 ends with
    ``curves.png`` and the console lines of :func:`~denoisrec.trainer.console.finish_run`.
    """
    check_config(cfg)
    with WarningsToFile(cfg.run.out, int(os.environ.get("RANK", "0"))) as quiet:
        env = init_distributed(cfg.run.device)
        lock = acquire_for_run(cfg.run.out, env.is_main, broadcast_from_main)
        try:
            summary = _train(cfg, hooks, env)
            finish_run(cfg, summary, quiet)
            return summary
        finally:
            lock.release()


def _train(cfg: Config, hooks: Optional[Any], env: DistEnv) -> Dict[str, Any]:
    t_start = time.time()
    _check_run_options(cfg)
    autocast = autocast_context(cfg.run.precision, env.device)
    check_sparse_optimizer(cfg.optim.sparse, cfg.sharding.sharding_type, env.device)
    pipelined = use_pipeline(cfg.run.pipeline, env.device)
    seed_everything(cfg.run.seed)
    schema = apply_table_overrides(schema_from_config(cfg.data), cfg.model.tables)
    check_train_label(cfg.data.train_label, schema, cfg.data.path)
    schema, model_schema = feature_views(cfg, schema)  # model.context: what the readers and the model see
    batch_size = rank_batch_size(cfg, env.world_size)
    readers = _readers(cfg, schema, env, batch_size)  # every file's footer and schema checked here
    check_eval_splits_on_main(cfg.data.path, schema, cfg.data.preflight_row_groups, env.is_main, broadcast_from_main)
    spec = model_spec(cfg, model_schema)
    module = build_module(cfg, schema)
    fuse_sparse_optimizer(module, cfg.optim.sparse, cfg.optim.sparse_lr, cfg.optim.sparse_weight_decay)
    plan = make_plan(module, env, cfg.sharding.sharding_type, batch_size, plan_constraints(module, cfg))
    model = wrap(module, plan, env, static_graph=static_graph(module))
    opt = train_optimizer(model, cfg.optim)
    plan_info = plan_summary(plan)
    baseline = load_baseline(cfg.run.baseline)

    train_reader = readers["train"]
    spe = len(train_reader)
    eval_every = resolve_eval_every(cfg.run.eval_every, readers["test"].with_ground_truth)
    total_steps = spe * cfg.run.epochs
    if cfg.run.max_steps is not None:
        total_steps = min(total_steps, cfg.run.max_steps)
    global_batch = batch_size * env.world_size
    schedule = LRSchedule(cfg.optim.warmup_steps, cfg.optim.decay, total_steps, cfg.optim.min_lr_ratio)
    stopper = EarlyStopping(cfg.run.early_stop_patience, cfg.run.early_stop_min_delta)
    ck = Checkpointer(cfg.run.out, cfg.run.keep_checkpoints, env)
    resume_path = ck.resolve(cfg.run.resume)
    out_note = prepare_out(cfg.run, resume_path, env.is_main, broadcast_from_main)
    if resume_path is not None and env.is_main:  # the dead launch's records after the checkpoint are redone
        compact_metrics(os.path.join(cfg.run.out, "metrics.jsonl"), int(read_meta(resume_path)["step"]))

    log = RunLog(cfg.run.out, env.is_main, append=resume_path is not None)
    if ck.skipped:
        log.print(f"warning: skipped {len(ck.skipped)} newer checkpoint(s) that are incomplete or damaged (renamed "
                  f"damaged-step_*): {'; '.join(ck.skipped)}")
    if out_note:
        log.print(out_note)
    if env.is_main:
        cfg.save(os.path.join(cfg.run.out, "config.yaml"))
    log.write_json("plan.json", plan_info)
    log.print(f"denoisrec: {env.world_size} rank(s) on {env.device} ({env.backend}); model={cfg.model.name} "
              f"denoiser={denoiser_brief(module.denoiser)}; precision {cfg.run.precision}; "
              f"pipeline {'TrainPipelineSparseDist' if pipelined else 'off'}")
    log.print(f"output folder: {cfg.run.out}")
    log.print(plan_brief(plan_info))

    # ------------------------------------------------------------------------------------------ resume
    start_step, rows_before, first_loss = 0, 0, float("nan")
    resumed: Optional[Dict[str, Any]] = None
    launch, history = 0, []  # this launch's number; the rows read by earlier launches (trainer/run_history.py)
    checkpoint_path: Optional[str] = None
    if resume_path is not None:
        meta = _read_meta_checked(resume_path, spec, cfg)
        ck.load(resume_path, model, opt)
        start_step = resume_step(meta, spe, global_batch)
        if start_step > total_steps:
            raise CheckpointError(f"{resume_path}: trained to step {meta['step']}, past this run's budget of "
                                  f"{total_steps} steps (run.epochs, --steps); raise it, or start fresh with "
                                  "--set run.resume=never run.overwrite=true")
        launch, history = int(meta.get("launch", 0)) + 1, list(meta.get("rows_read", []))
        if os.path.realpath(step_dir(ck.root, start_step)) == resume_path:
            checkpoint_path = step_dir(ck.root, start_step)  # already saved: a finished run is not saved again
        stopper.load_state_dict(meta.get("early_stop", {}))
        rows_before = int(meta.get("rows_trained", 0))
        first_loss = float(meta.get("first_loss", float("nan")))
        resumed = {"path": resume_path, "from_step": int(meta["step"]), "world_size": meta["world_size"],
                   "start_step": start_step}
        note = "" if meta["world_size"] == env.world_size else (
            f"; re-sharded from {meta['world_size']} rank(s): tables re-sharded on load, data position mapped by "
            f"rows to step {start_step}, RNG re-seeded")
        if meta["world_size"] != env.world_size:
            seed_everything(cfg.run.seed + start_step)
        log.print(f"resumed from {resume_path} at step {meta['step']} (epoch {meta['epoch']}, "
                  f"{meta['batches_in_epoch']} batches into it){note}")

    log.print(f"train: {train_reader.total_rows:,} rows, {spe} steps/epoch of {batch_size} rows/rank "
              f"({global_batch} global); running steps {start_step}..{total_steps}")

    hidden = sorted({p for r in readers.values() for p in getattr(r, "ignored", [])})
    if hidden:
        log.print(f"data: ignored {len(hidden)} hidden path(s) starting with _ or . (Spark/Hive convention): "
                  f"{', '.join(hidden[:3])}{' ...' if len(hidden) > 3 else ''}")
    bind_run_length(model, spe, total_steps, log)  # schedules in epochs / shares of the run → steps
    prepare_denoiser(model, cfg, train_reader, opt.optimizer, env.device, log, readers["valid"])  # DeCA(p)'s phase 1

    # ------------------------------------------------------------------------------------------ loop
    guard = NonFiniteGuard(cfg.run.nonfinite, cfg.run.nonfinite_check_every, env.device, cfg.run.nonfinite_max_skips)
    stepper = Stepper(model, opt.optimizer, env.device, pipelined, autocast, skip_nonfinite=guard.skip)
    step = start_step
    local_samples = 0
    eval_history: List[Dict[str, Any]] = []
    last_eval: Dict[str, Any] = {}
    last_loss = float("nan")
    pause_seconds = 0.0
    set_lr(opt.lr_groups, schedule.multiplier(step))
    model.train()
    window = Window()
    window.reset()
    t_train = time.time()
    progress = Progress(total_steps, start_step, env.is_main, cfg.run.progress)

    def position_meta(at: int) -> Dict[str, Any]:
        return {
            "step": at, "epoch": at // spe, "batches_in_epoch": at % spe, "steps_per_epoch": spe,
            "world_size": env.world_size, "batch_size": batch_size, "global_batch": global_batch,
            "total_steps": total_steps, "spec": spec.to_dict(),
            "denoiser": {"name": cfg.denoiser.name, "params": cfg.denoiser.params},
            "plan": plan_info, "early_stop": stopper.state_dict(),
            "rows_trained": rows_before + int(_global_sum(float(local_samples), env.device)),
            "first_loss": first_loss, "seed": cfg.run.seed, "launch": launch,
            "rows_read": history + with_launch(gather_reports(
                position_reports(epoch_reports, train_reader, at // spe, at % spe, batch_size)), launch),
        }

    def log_window(at: int, out: Any) -> float:
        """Log the steps since the last log line (one host sync per log line, not per step)."""
        loss = float(window.loss_sum.item() / window.steps)  # type: ignore[union-attr]
        rate = window.samples * env.world_size / max(time.time() - window.t0, 1e-9)
        values: Dict[str, Any] = {"loss": loss, "samples/s": rate,
                                  "lr": opt.lr_groups[1][1] * schedule.multiplier(at - 1)}
        gn = opt.grad_norm()
        if gn is not None:
            values["grad_norm"] = float(gn.item())
        stats = {k: v for k, v in denoiser_stats(model, out).items() if math.isfinite(v)}  # BCE handles nothing
        log.scalars(at, "train", {"loss": loss, "samples_per_s": rate, "epoch": (at - 1) // spe,
                                  "lr": values["lr"], **({"grad_norm": values["grad_norm"]} if gn is not None else {}),
                                  **stats})
        progress.update(at, {**values, **stats}, epoch=(at - 1) // spe)
        window.reset()
        return loss

    def run_eval(at: int, splits: List[str]) -> Dict[str, Any]:
        results = {}
        for split in splits:
            results[split] = _evaluate_split(model, readers, split, env, autocast, cfg.data.train_label)
            log.scalars(at, split, _numeric(results[split]))
        return results

    interrupted = False
    last_out: Any = None
    if cfg.run.stop_after_steps is not None and cfg.run.stop_after_steps < 1:
        raise ValueError(f"run.stop_after_steps={cfg.run.stop_after_steps}: must be >= 1 (or null)")
    epoch_reports: List[Any] = []  # row accounting per epoch (trainer/data/accounting.py)
    feed: Optional[Iterator[Any]] = None
    if not stopper.stop:
        feed = train_batches(train_reader, start_step, total_steps, epoch_reports)
        batches = (select_train_labels(b, cfg.data.train_label) for b in feed)
        for value, logits, out in stepper.run(batches):
            step += 1
            n = int(logits.shape[0])
            local_samples += n
            guard.after_step(step, value, opt.grad_norm(), stepper.last_skipped)  # trainer/finite.py
            if not stepper.last_skipped:
                window.add(value, n)
            if step == 1:
                first_loss = float(value.item())  # once per run: the loss before any update
            mult = schedule.multiplier(step)
            set_lr(opt.lr_groups, mult)  # for the next step: FBGEMM reads it at zero_grad

            last_out = out
            if step % cfg.run.log_every == 0 or step == total_steps:
                last_loss = log_window(step, out)
            else:
                progress.advance(step)
            if hooks is not None:
                hooks.on_step(step, (step - 1) // spe, stepper.last_batch, out)
                if step % spe == 0 and hooks.on_epoch_end(step // spe - 1, model, readers, env):
                    break

            due_eval = _eval_due(eval_every, step, spe) and step < total_steps
            due_ckpt = cfg.run.checkpoint_every > 0 and step % cfg.run.checkpoint_every == 0 and step < total_steps
            if due_eval or due_ckpt:
                guard.check(step)  # nothing non-finite is evaluated as "best" or saved
                t_pause = time.time()
                stepper.pause()
                if due_eval:
                    last_eval = {"step": step, **run_eval(step, _eval_splits(cfg, readers, stopper))}
                    eval_history.append(_brief(last_eval))
                    improved = stopper.update(step, last_eval["valid"]["auc"]) if "valid" in last_eval else False
                    if improved and stopper.enabled:
                        ck.save_best(model, position_meta(step))
                    progress.write(_eval_line(last_eval, stopper))
                if due_ckpt:
                    checkpoint_path = ck.save(step, model, opt, position_meta(step))
                    progress.write(f"checkpoint: {checkpoint_path}")
                stepper.resume()
                pause_seconds += time.time() - t_pause
                window.t0 += time.time() - t_pause
                if stopper.stop:
                    progress.write(f"early stop at step {step}: no better validation AUC in {stopper.patience} "
                                   f"evaluations (best {stopper.best_auc:.4f} at step {stopper.best_step})")
                    break
            if cfg.run.stop_after_steps is not None and step - start_step >= cfg.run.stop_after_steps \
                    and step < total_steps:
                interrupted = True
                break
    if window.steps:  # the steps since the last log line (early stop, end of session)
        last_loss = log_window(step, last_out)
    progress.close()
    if feed is not None:
        feed.close()  # the epoch in progress reports what it read
    rows_read = history + with_launch(gather_reports(epoch_reports), launch)
    guard.check(step)  # before the final checkpoint and the export
    stepper.pause()
    train_seconds = time.time() - t_train - pause_seconds
    global_samples = _global_sum(float(local_samples), env.device)

    # ----------------------------------------------------------------------------- final checkpoint
    if (cfg.run.checkpoint_every > 0 or interrupted) and step > 0 and \
            checkpoint_path != step_dir(ck.root, step):
        checkpoint_path = ck.save(step, model, opt, position_meta(step))
    if interrupted:
        summary = {"interrupted": True, "steps": step, "total_steps": total_steps, "checkpoint": checkpoint_path,
                   "resumed": resumed, "train_seconds": round(train_seconds, 3),
                   "wall_seconds": round(time.time() - t_start, 3)}
        log.print(f"stopped after {cfg.run.stop_after_steps} step(s) of this session at step {step}/{total_steps}; "
                  f"checkpoint {checkpoint_path} (run again with run.resume=auto to continue)")
        log.write_json("session.json", summary)
        log.close()
        return summary

    observation = write_observation_report(model, cfg.data.path, cfg.run.out, env.is_main, log)  # its tower's h, h'

    # ----------------------------------------------------------------------------- final evaluation
    metrics: Dict[str, Any] = {}
    metrics["valid"] = last_eval["valid"] if last_eval.get("step") == step and "valid" in last_eval else \
        run_eval(step, ["valid"])["valid"]
    restored_best = None
    if stopper.enabled:
        if last_eval.get("step") != step:
            if stopper.update(step, metrics["valid"]["auc"]):
                ck.save_best(model, position_meta(step))
        if stopper.best_step is not None and stopper.best_step != step:
            if eval_every and last_eval.get("step") != step:  # the curves' last point: the model before the restore
                run_eval(step, [s for s in _eval_splits(cfg, readers, stopper) if s != "valid"])
            ck.load(os.path.join(ck.root, "best"), model, None)
            restored_best = stopper.best_step
            metrics["valid"] = run_eval(restored_best, ["valid"])["valid"]  # logged at its model's step
            log.print(f"restored the best model (validation AUC {stopper.best_auc:.4f} at step {stopper.best_step})")
    at = restored_best or step  # the step whose model is evaluated (metrics.jsonl keeps one record per step)
    if readers["test"].with_ground_truth:
        metrics["test_clean"] = run_eval(at, ["test_clean"])["test_clean"]
    metrics["test_observed"] = run_eval(at, ["test_observed"])["test_observed"]

    # ----------------------------------------------------------------------------- export + summary
    model_file = None
    if cfg.run.export:
        model_file = ck.export_model(model, os.path.join(cfg.run.out, "model.pt"), spec, model_schema.to_dict(), extra={
            "step": step, "metrics": metrics, "denoiser": {"name": cfg.denoiser.name, **cfg.denoiser.params},
            "restored_best_step": restored_best, "config": cfg.to_dict()})
    rows_per_rank: list = [local_samples]
    if env.world_size > 1:
        rows_per_rank = [None] * env.world_size
        dist.all_gather_object(rows_per_rank, local_samples)
    summary = {
        "config": cfg.to_dict(),
        "world_size": env.world_size,
        "device": str(env.device),
        "backend": env.backend,
        "precision": cfg.run.precision,
        "pipeline": {"on": pipelined, "pipelined_modules": stepper.pipelined_modules},
        "plan": plan_info,
        "steps": step,
        "total_steps": total_steps,
        "steps_per_epoch": spe,
        "batch_size_per_rank": batch_size,
        "epochs_started": (step - 1) // spe + 1 if step else 0,
        "rows_trained": {"total": rows_before + int(global_samples), "this_session": int(global_samples),
                         "per_rank": [int(r) for r in rows_per_rank]},
        "ranks": describe_ranks(env),
        "train_rows_in_split": train_reader.total_rows,
        "rows_read": rows_read,
        "loss": {"first": first_loss, "last": last_loss},
        "throughput_samples_per_s": global_samples / max(train_seconds, 1e-9),
        "train_seconds": round(train_seconds, 3),
        "eval_and_checkpoint_seconds": round(pause_seconds, 3),
        "wall_seconds": round(time.time() - t_start, 3),
        "metrics": metrics,
        "evaluations": eval_history,
        "early_stopping": {**stopper.state_dict(), "restored_best_step": restored_best},
        "resumed": resumed,
        "launch": launch,
        "nonfinite_skipped_steps": guard.skipped,
        "observation": observation,
        "checkpoint": checkpoint_path,
        "model_file": model_file,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
        },
    }
    if baseline is not None:
        summary["realimp"] = realimp_against(metrics, baseline)
    log.write_json("summary.json", summary)
    log.print(format_summary(summary))
    log.close()
    return summary


# ------------------------------------------------------------------------------------------------ helpers
def _read_meta_checked(path: str, spec: ModelSpec, cfg: Config) -> Dict[str, Any]:
    from denoisrec.trainer.checkpoint import read_meta

    meta = read_meta(path)
    saved, now = meta.get("spec") or {}, json.loads(json.dumps(spec.to_dict()))
    if saved != now:
        diff = ", ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now"
                         for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k))
        raise CheckpointError(f"{path}: the checkpoint's model differs from this run's ({diff}); resume with the "
                              "same model and data, or use --set run.resume=never / another --out")
    if meta.get("denoiser", {}).get("name") != cfg.denoiser.name:
        raise CheckpointError(f"{path}: written with denoiser {meta.get('denoiser', {}).get('name')!r}, this run "
                              f"uses {cfg.denoiser.name!r}; use --set run.resume=never or another --out")
    return meta


def _eval_due(every: Any, step: int, spe: int) -> bool:
    if every == "epoch":
        return step % spe == 0
    return bool(every) and step % int(every) == 0


def _eval_splits(cfg: Config, readers: Dict[str, ParquetBatchReader], stopper: EarlyStopping) -> List[str]:
    splits = list(dict.fromkeys((["valid"] if stopper.enabled else []) + list(cfg.run.eval_during)))
    if not readers["test"].with_ground_truth:
        splits = [s for s in splits if s != "test_clean"]
    return splits


def _evaluate_split(model: torch.nn.Module, readers: Dict[str, ParquetBatchReader], split: str, env: DistEnv,
                    autocast: Any, train_label: str = "label") -> Dict[str, Any]:
    reader = readers["valid" if split == "valid" else "test"]
    # Validation is scored against the labels training sees (clean ones for the "Clean" oracle run).
    target = "clean" if split == "test_clean" or (split == "valid" and train_label == "clean_label") else "observed"
    return evaluate(model, reader, env.device, target, autocast)


def _numeric(m: Dict[str, Any]) -> Dict[str, float]:
    return {k: v for k, v in m.items() if isinstance(v, (int, float))}


def _brief(e: Dict[str, Any]) -> Dict[str, Any]:
    return {"step": e["step"], **{s: {k: m[k] for k in ("auc", "gauc", "logloss")} for s, m in e.items()
                                  if s != "step"}}


def _eval_line(e: Dict[str, Any], stopper: EarlyStopping) -> str:
    parts = [f"eval @ step {e['step']}:"]
    for s, m in e.items():
        if s != "step":
            parts.append(f"{s} AUC {m['auc']:.4f} GAUC {m['gauc']:.4f} logloss {m['logloss']:.4f}")
    if stopper.enabled:
        parts.append(f"(best {stopper.best_auc:.4f} @ {stopper.best_step}, {stopper.bad_evals}/{stopper.patience})")
    return "  ".join(parts)


def _global_sum(x: float, device: torch.device) -> float:
    t = torch.tensor([x], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return float(t.item())


def format_summary(s: Dict[str, Any]) -> str:
    lines = [
        f"done: {s['steps']} steps, {s['rows_trained']['this_session']:,} rows in {s['train_seconds']:.1f}s "
        f"({s['throughput_samples_per_s']:,.0f} samples/s on {s['world_size']} rank(s)); "
        f"loss {s['loss']['first']:.4f} -> {s['loss']['last']:.4f}",
    ]
    if s.get("rows_read"):
        lines.append(format_rows_read(s["rows_read"]))
    ri = s.get("realimp") or {}
    for name, m in s["metrics"].items():
        extra = f"  RealImp {ri[name]:+.2%}" if isinstance(ri.get(name), float) and not math.isnan(ri[name]) else ""
        lines.append(f"  {name:13s} AUC {m['auc']:.4f}  GAUC {m['gauc']:.4f}  logloss {m['logloss']:.4f}  "
                     f"NE {m.get('ne', math.nan):.4f}  ECE {m.get('ece', math.nan):.4f}  "
                     f"calib {m.get('calibration', math.nan):.3f}  ({m['rows']:,} rows, labels: {m['target']}){extra}")
    if ri:
        lines.append(f"  RealImp against {ri['baseline']}")
    return "\n".join(lines)

"""``TrainRecipe``: the training job as one object, ``setup → resume → fit → finish``.

The shape of torchtitan's ``Trainer`` and torchtune's recipes.

- :meth:`TrainRecipe.setup`: data (schema, readers, the launch's :class:`~denoisrec.trainer.train_state.RunLayout`),
  the sharded model and its optimizers (:mod:`~denoisrec.trainer.factory`), outputs and the components that
  keep their own cadence: :class:`~denoisrec.trainer.evaluation.evaluator.Evaluator` (validation, early stopping),
  :class:`~denoisrec.trainer.checkpoint.cadence.PeriodicCheckpointer`, and, in :meth:`fit`, the
  :class:`~denoisrec.trainer.loop.log_window.TrainLogger`.
- :meth:`TrainRecipe.resume`: a :class:`~denoisrec.trainer.train_state.TrainState`, from the checkpoint
  ``run.resume`` names (same or another world size), then the denoiser's preparation (DeCA(p)'s phase 1).
- :meth:`TrainRecipe.fit`: the steps (:class:`~denoisrec.trainer.loop.steps.Stepper`, the one training step) until
  the budget, early stopping, a hook, or the end of the session (``run.stop_after_steps``).
- :meth:`TrainRecipe.finish`: the final checkpoint; then either the session's summary, or the final
  evaluation, the export (``model.pt``) and the run's :class:`~denoisrec.trainer.outputs.run_summary.RunSummary`.

Example (what :func:`~denoisrec.trainer.train.train` does inside the run lock)::

    job = TrainRecipe(cfg, hooks=None, env=init_distributed("cpu"))
    job.setup(); job.resume(); job.fit()
    summary = job.finish()
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

import torch.distributed as dist

from denoisrec.trainer.checkpoint.cadence import PeriodicCheckpointer
from denoisrec.trainer.checkpoint.checkpointer import Checkpointer, CheckpointError, read_meta, step_dir
from denoisrec.trainer.checkpoint.identity import data_fingerprint
from denoisrec.trainer.checkpoint.out_policy import prepare_out
from denoisrec.trainer.checkpoint.run_history import compact_metrics, position_reports, with_launch
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.accounting import gather_reports
from denoisrec.trainer.data.preflight import check_eval_splits_on_main
from denoisrec.trainer.data.splits import schema_from_config, split_readers
from denoisrec.trainer.data.train_labels import check_train_label, select_train_labels
from denoisrec.trainer.denoising.build import bind_run_length, prepare_denoiser
from denoisrec.trainer.denoising.feature_views import feature_views
from denoisrec.trainer.denoising.observation_report import add_level, write_observation_report
from denoisrec.trainer.distributed.env import DistEnv, broadcast_from_main, describe_ranks
from denoisrec.trainer.distributed.sharding import check_sparse_optimizer, plan_summary
from denoisrec.trainer.evaluation.early_stop import EarlyStopping
from denoisrec.trainer.evaluation.evaluator import Evaluator
from denoisrec.trainer.evaluation.selection import resolve_selection
from denoisrec.trainer.factory import build_train_model, model_spec
from denoisrec.trainer.loop.log_window import TrainLogger
from denoisrec.trainer.loop.nonfinite import NonFiniteGuard
from denoisrec.trainer.loop.schedule import LRSchedule, set_lr
from denoisrec.trainer.loop.steps import Stepper, autocast_context, use_pipeline
from denoisrec.trainer.outputs.console import denoiser_brief, plan_brief
from denoisrec.trainer.outputs.progress import Progress
from denoisrec.trainer.outputs.run_summary import RunSummary, SessionSummary, format_summary, input_wait
from denoisrec.trainer.outputs.runlog import RunLog
from denoisrec.trainer.run_setup import (
    apply_table_overrides,
    global_sum,
    load_baseline,
    rank_batch_size,
    read_meta_checked,
    realimp_against,
    resume_step,
    seed_everything,
    train_batches,
)
from denoisrec.trainer.train_state import RunLayout, TrainState


class TrainRecipe:
    """Args: ``cfg`` (validated), ``hooks`` (see :func:`~denoisrec.trainer.train.train`), ``env`` (this rank),
    ``quiet`` (the :class:`~denoisrec.trainer.outputs.warnings_file.WarningsToFile` to open once the out policy
    allows the run).
    """

    def __init__(self, cfg: Config, hooks: Optional[Any], env: DistEnv, quiet: Optional[Any] = None) -> None:
        self.cfg, self.hooks, self.env, self.quiet = cfg, hooks, env, quiet
        self.t_start = time.time()
        self.state = TrainState()
        self.epoch_reports: List[Any] = []  # row accounting per epoch (trainer/data/accounting.py)

    # ---------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """Data, model, optimizers, outputs, and the components with a cadence of their own."""
        cfg, env = self.cfg, self.env
        self.autocast = autocast_context(cfg.run.precision, env.device)
        check_sparse_optimizer(cfg.optim.sparse, cfg.sharding.sharding_type, env.device)
        self.pipelined = use_pipeline(cfg.run.pipeline, env.device)
        seed_everything(cfg.run.seed)
        self._setup_data()
        self.spec = model_spec(cfg, self.model_schema)
        # the checkpoint to resume from is found first: its plan keeps every table's sharding type
        self.ck = Checkpointer(cfg.run.out, cfg.run.keep_checkpoints, env)
        self.resume_path = self.ck.resolve(cfg.run.resume)
        self.resume_meta: Optional[Dict[str, Any]] = None
        if self.resume_path is not None:  # the model, data and options it continues: checked before building
            self.resume_meta = read_meta_checked(self.resume_path, self.spec, cfg, self.data_identity)
        saved_plan = self.resume_meta.get("plan") if self.resume_meta is not None else None
        built = build_train_model(cfg, self.schema, env, self.layout.batch_size, saved_plan)
        self.module, self.model, self.opt = built.module, built.model, built.opt
        self.plan_info = plan_summary(built.plan)
        self._setup_outputs()

    def _setup_data(self) -> None:
        cfg, env = self.cfg, self.env
        schema = apply_table_overrides(schema_from_config(cfg.data), cfg.model.tables)
        check_train_label(cfg.data.train_label, schema, cfg.data.path)
        self.schema, self.model_schema = feature_views(cfg, schema)  # what the readers and the model see
        batch_size = rank_batch_size(cfg, env.world_size)
        # every file's footer and schema checked here
        self.readers = split_readers(
            cfg.data, self.schema, env.rank, env.world_size, cfg.run.seed, env.device, batch_size
        )
        check_eval_splits_on_main(
            cfg.data.path, self.schema, cfg.data.preflight_row_groups, env.is_main, broadcast_from_main
        )
        self.selection = resolve_selection(cfg.eval.select_on, self.readers)  # before anything is written
        self.train_reader = self.readers["train"]
        spe = len(self.train_reader)
        total = spe * cfg.run.epochs if cfg.run.max_steps is None else min(spe * cfg.run.epochs, cfg.run.max_steps)
        self.layout = RunLayout(spe, batch_size, env.world_size, total)
        self.data_identity = data_fingerprint(self.train_reader)  # kept in checkpoints, checked on resume

    def _setup_outputs(self) -> None:
        cfg, env, o = self.cfg, self.env, self.cfg.optim
        self.baseline = load_baseline(cfg.run.baseline)
        self.schedule = LRSchedule(o.warmup_steps, o.decay, self.layout.total_steps, o.min_lr_ratio)
        self.stopper = EarlyStopping(cfg.run.early_stop_patience, cfg.run.early_stop_min_delta)
        if self.resume_meta is not None:  # the budget check before anything in --out is touched
            self._check_budget(self.resume_path or "", self.resume_meta)
        out_note = prepare_out(cfg.run, self.resume_path, env.is_main, broadcast_from_main)
        if self.quiet is not None:
            self.quiet.open()  # from here on, this run owns --out
        if self.resume_path is not None and env.is_main:  # the dead launch's records after the checkpoint go
            compact_metrics(os.path.join(cfg.run.out, "metrics.jsonl"), int(read_meta(self.resume_path)["step"]))
        self.log = RunLog(cfg.run.out, env.is_main, append=self.resume_path is not None)
        self._announce(out_note)
        self.evaluator = Evaluator(
            self.model, self.readers, env, self.autocast, cfg, self.layout, self.log, self.stopper, self.selection
        )
        self.checkpoints = PeriodicCheckpointer(self.ck, cfg.run.checkpoint_every, self.layout.total_steps)

    def _announce(self, out_note: Optional[str]) -> None:
        cfg, env, log = self.cfg, self.env, self.log
        if self.ck.skipped:
            log.print(
                f"warning: skipped {len(self.ck.skipped)} newer checkpoint(s) that are incomplete or damaged "
                f"(renamed damaged-step_*): {'; '.join(self.ck.skipped)}"
            )
        if self.ck.note:
            log.print(self.ck.note)
        if out_note:
            log.print(out_note)
        if env.is_main:
            cfg.save(os.path.join(cfg.run.out, "config.yaml"))
        log.write_json("plan.json", self.plan_info)
        log.print(
            f"denoisrec: {env.world_size} rank(s) on {env.device} ({env.backend}); model={cfg.model.name} "
            f"denoiser={denoiser_brief(self.module.denoiser)}; precision {cfg.run.precision}; "
            f"pipeline {'TrainPipelineSparseDist' if self.pipelined else 'off'}"
        )
        log.print(f"output folder: {cfg.run.out}")
        log.print(plan_brief(self.plan_info))

    # --------------------------------------------------------------------------------------------- resume
    def resume(self) -> None:
        """The state to start from (a checkpoint's, or step 0), then the denoiser's preparation."""
        if self.resume_path is not None:
            self._load_checkpoint(self.resume_path)
        L, log = self.layout, self.log
        log.print(
            f"train: {self.train_reader.total_rows:,} rows, {L.steps_per_epoch} steps/epoch of {L.batch_size} "
            f"rows/rank ({L.global_batch} global); running steps {self.state.step}..{L.total_steps}"
        )
        hidden = sorted({p for r in self.readers.values() for p in getattr(r, "ignored", [])})
        if hidden:
            log.print(
                f"data: ignored {len(hidden)} hidden path(s) starting with _ or . (Spark/Hive convention): "
                f"{', '.join(hidden[:3])}{' ...' if len(hidden) > 3 else ''}"
            )
        bind_run_length(self.model, L.steps_per_epoch, L.total_steps, log)  # schedules in epochs → steps
        prepare_denoiser(
            self.model,
            self.cfg,
            self.train_reader,
            self.opt.optimizer,
            self.env.device,
            log,
            self.readers,
            self.selection.mode,
        )  # DeCA(p)'s phase 1, early-stopped on the run's selection signal

    def _check_budget(self, path: str, meta: Dict[str, Any]) -> None:
        L = self.layout
        if resume_step(meta, L.steps_per_epoch, L.global_batch) > L.total_steps:
            raise CheckpointError(
                f"{path}: trained to step {meta['step']}, past this run's budget of "
                f"{L.total_steps} steps (run.epochs, --steps); raise it, or start fresh with "
                "--set run.resume=never run.overwrite=true"
            )

    def _load_checkpoint(self, path: str) -> None:
        meta = self.resume_meta or read_meta_checked(path, self.spec, self.cfg, self.data_identity)
        L, env = self.layout, self.env
        self._check_budget(path, meta)
        self.ck.load(path, self.model, self.opt)
        start = resume_step(meta, L.steps_per_epoch, L.global_batch)
        self.state.load_meta(meta, start)
        if os.path.realpath(step_dir(self.ck.root, start)) == path:
            self.state.checkpoint_path = step_dir(self.ck.root, start)  # a finished run is not saved again
        self.stopper.load_state_dict(meta.get("early_stop", {}))
        self.state.resumed = {
            "path": path,
            "from_step": int(meta["step"]),
            "world_size": meta["world_size"],
            "start_step": start,
        }
        note = ""
        if meta["world_size"] != env.world_size:
            note = (
                f"; re-sharded from {meta['world_size']} rank(s): tables re-sharded on load, data position "
                f"mapped by rows to step {start}, RNG re-seeded"
            )
            seed_everything(self.cfg.run.seed + start)
        self.log.print(
            f"resumed from {path} at step {meta['step']} (epoch {meta['epoch']}, "
            f"{meta['batches_in_epoch']} batches into it){note}"
        )

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self) -> None:
        """Train from ``state.step`` until the budget, early stopping, a hook's stop or the session's end."""
        cfg, env, state = self.cfg, self.env, self.state
        self.guard = NonFiniteGuard(
            cfg.run.nonfinite, cfg.run.nonfinite_check_every, env.device, cfg.run.nonfinite_max_skips
        )
        self.stepper = Stepper(
            self.model, self.opt.optimizer, env.device, self.pipelined, self.autocast, skip_nonfinite=self.guard.skip
        )
        set_lr(self.opt.lr_groups, self.schedule.multiplier(state.step))
        self.model.train()
        progress = Progress(self.layout.total_steps, state.start_step, env.is_main, cfg.run.progress)
        self.logger = TrainLogger(
            self.log, progress, cfg.run.log_every, self.layout, self.opt, self.schedule, self.model
        )
        t_train = time.time()
        feed = None
        if not self.stopper.stop:
            feed = train_batches(self.train_reader, state.step, self.layout.total_steps, self.epoch_reports)
            for value, logits, out in self.stepper.run(select_train_labels(b, cfg.data.train_label) for b in feed):
                if self._after_step(value, int(logits.shape[0]), out):
                    break
        self.logger.close(state)
        if feed is not None:
            feed.close()  # the epoch in progress reports what it read
        self.rows_read = state.history + with_launch(gather_reports(self.epoch_reports), state.launch)
        self.guard.check(state.step)  # before the final checkpoint and the export
        self.stepper.pause()
        self.train_seconds = time.time() - t_train - state.pause_seconds
        self.global_samples = global_sum(float(state.local_samples), env.device)

    def _after_step(self, value: Any, rows: int, out: Any) -> bool:
        """Account for one step; ``True`` ends training (a hook, early stopping, the session's end)."""
        state, stepper, hooks, L = self.state, self.stepper, self.hooks, self.layout
        state.step += 1
        step = state.step
        state.local_samples += rows
        self.guard.after_step(step, value, self.opt.grad_norm(), stepper.last_skipped)  # trainer/loop/nonfinite.py
        if step == 1:
            state.first_loss = float(value.item())  # once per run: the loss before any update
        set_lr(self.opt.lr_groups, self.schedule.multiplier(step))  # for the next step: FBGEMM reads it at zero_grad
        self.logger.after_step(state, value, rows, stepper.last_skipped, out)
        if hooks is not None:
            hooks.on_step(step, (step - 1) // L.steps_per_epoch, stepper.last_batch, out)
            if step % L.steps_per_epoch == 0 and hooks.on_epoch_end(
                step // L.steps_per_epoch - 1, self.model, self.readers, self.env
            ):
                return True
        if self._between_steps():
            return True
        stop_after = self.cfg.run.stop_after_steps
        if stop_after is not None and step - state.start_step >= stop_after and step < L.total_steps:
            state.interrupted = True
            return True
        return False

    def _between_steps(self) -> bool:
        """Evaluation and checkpoint when due (the pipeline detached, the time out of the window); ``True`` when
        early stopping ends training.
        """
        step, progress = self.state.step, self.logger.progress
        due_eval, due_ckpt = self.evaluator.due(step), self.checkpoints.due(step)
        if not (due_eval or due_ckpt):
            return False
        self.guard.check(step)  # nothing non-finite is evaluated as "best" or saved
        t_pause = time.time()
        self.stepper.pause()
        if due_eval:
            progress.write(self.evaluator.periodic(self.state, self._save_best))
        if self.checkpoints.maybe_save(self.state, self.model, self.opt, self.position_meta):
            progress.write(f"checkpoint: {self.state.checkpoint_path}")
        self.stepper.resume()
        paused = time.time() - t_pause
        self.state.pause_seconds += paused
        self.logger.paused(paused)
        if self.stopper.stop:
            s = self.stopper
            progress.write(
                f"early stop at step {step}: no better {self.evaluator.sel} AUC in {s.patience} evaluations "
                f"(best {s.best_auc:.4f} at step {s.best_step})"
            )
        return self.stopper.stop

    def _save_best(self, step: int) -> None:
        self.ck.save_best(self.model, self.position_meta(step))

    def position_meta(self, at: int) -> Dict[str, Any]:
        """A checkpoint's metadata after ``at`` steps (collective: rows are summed over ranks)."""
        cfg, state, L = self.cfg, self.state, self.layout
        reports = position_reports(
            self.epoch_reports, self.train_reader, at // L.steps_per_epoch, at % L.steps_per_epoch, L.batch_size
        )
        return {
            **L.position(at),
            "spec": self.spec.to_dict(),
            "denoiser": {"name": cfg.denoiser.name, "params": cfg.denoiser.params},
            "plan": self.plan_info,
            "data": self.data_identity,
            "sparse_optimizer": cfg.optim.sparse,
            "early_stop": self.stopper.state_dict(),
            "rows_trained": state.rows_before + int(global_sum(float(state.local_samples), self.env.device)),
            "first_loss": state.first_loss,
            "seed": cfg.run.seed,
            "launch": state.launch,
            "rows_read": state.history + with_launch(gather_reports(reports), state.launch),
            "nonfinite_skipped": state.skipped_before + self.guard.skipped,
        }

    # --------------------------------------------------------------------------------------------- finish
    def finish(self) -> Dict[str, Any]:
        """Final checkpoint; then the session's summary, or evaluation, export and the run's summary."""
        self.checkpoints.save_final(self.state, self.model, self.opt, self.position_meta)
        if self.state.interrupted:
            return self._end_session()
        observation = write_observation_report(
            self.model, self.cfg.data.path, self.cfg.run.out, self.env.is_main, self.log
        )  # its tower's h, h'
        metrics = self.evaluator.final(self.state, self.ck, self._save_best)
        if self.env.is_main:
            add_level(observation, metrics, self.cfg.run.out, self.log)  # f's level against the trusted labels
        model_file = self._export(metrics)
        summary = self._summary(metrics, observation, model_file).to_dict()
        self.log.write_json("summary.json", summary)
        self.log.hparams(summary["config"], summary["metrics"])
        self.log.print(format_summary(summary))
        self.log.close()
        return summary

    def _end_session(self) -> Dict[str, Any]:
        state = self.state
        summary = SessionSummary(
            steps=state.step,
            total_steps=self.layout.total_steps,
            checkpoint=state.checkpoint_path,
            resumed=state.resumed,
            train_seconds=round(self.train_seconds, 3),
            wall_seconds=round(time.time() - self.t_start, 3),
        ).to_dict()
        self.log.print(
            f"stopped after {self.cfg.run.stop_after_steps} step(s) of this session at step {state.step}/"
            f"{self.layout.total_steps}; checkpoint {state.checkpoint_path} (run again with "
            "run.resume=auto to continue)"
        )
        self.log.write_json("session.json", summary)
        self.log.close()
        return summary

    def _export(self, metrics: Dict[str, Any]) -> Optional[str]:
        """``<out>/model.pt``: the unsharded model for ``denoisrec predict`` (``run.export``)."""
        cfg = self.cfg
        if not cfg.run.export:
            return None
        return self.ck.export_model(
            self.model,
            os.path.join(cfg.run.out, "model.pt"),
            self.spec,
            self.model_schema.to_dict(),
            extra={
                "step": self.state.step,
                "metrics": metrics,
                "denoiser": {"name": cfg.denoiser.name, **cfg.denoiser.params},
                "restored_best_step": self.state.restored_best_step,
                "config": cfg.to_dict(),
            },
        )

    def _summary(self, metrics: Dict[str, Any], observation: Any, model_file: Optional[str]) -> RunSummary:
        cfg, env, state, L = self.cfg, self.env, self.state, self.layout
        rows_per_rank: List[Any] = [state.local_samples]
        waits: List[Any] = [round(self.stepper.input_wait_seconds, 3)]
        if env.world_size > 1:
            rows_per_rank = [None] * env.world_size
            dist.all_gather_object(rows_per_rank, state.local_samples)
            local_wait, waits = waits[0], [None] * env.world_size
            dist.all_gather_object(waits, local_wait)
        g = self.global_samples
        return RunSummary(
            config=cfg.to_dict(),
            world_size=env.world_size,
            device=str(env.device),
            backend=env.backend,
            precision=cfg.run.precision,
            pipeline={"on": self.pipelined, "pipelined_modules": self.stepper.pipelined_modules},
            plan=self.plan_info,
            steps=state.step,
            total_steps=L.total_steps,
            steps_per_epoch=L.steps_per_epoch,
            batch_size_per_rank=L.batch_size,
            epochs_started=(state.step - 1) // L.steps_per_epoch + 1 if state.step else 0,
            rows_trained={
                "total": state.rows_before + int(g),
                "this_session": int(g),
                "per_rank": [int(r) for r in rows_per_rank],
            },
            ranks=describe_ranks(env),
            train_rows_in_split=self.train_reader.total_rows,
            rows_read=self.rows_read,
            loss={"first": state.first_loss, "last": state.last_loss},
            throughput_samples_per_s=g / max(self.train_seconds, 1e-9),
            train_seconds=round(self.train_seconds, 3),
            eval_and_checkpoint_seconds=round(state.pause_seconds, 3),
            wall_seconds=round(time.time() - self.t_start, 3),
            metrics=metrics,
            evaluations=state.evaluations,
            early_stopping={**self.stopper.state_dict(), "restored_best_step": state.restored_best_step},
            resumed=state.resumed,
            launch=state.launch,
            nonfinite_skipped_steps=state.skipped_before + self.guard.skipped,
            observation=observation,
            checkpoint=state.checkpoint_path,
            model_file=model_file,
            realimp=realimp_against(metrics, self.baseline) if self.baseline is not None else None,
            selection=self.evaluator.summary(state, metrics, model_file is not None),
            input_wait=input_wait(waits, self.train_seconds),
        )

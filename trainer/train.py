"""The training job: data → sharded model + denoiser → steps → evaluation → checkpoints → summary → export.

:func:`train` runs on every rank (one process, or many under torchrun / torchx). Rank 0 writes the outputs
(see :mod:`denoisrec.trainer.outputs.runlog`):

``<out>/config.yaml`` (resolved config), ``plan.json`` (sharding plan), ``metrics.jsonl`` and ``tb/``
(training and evaluation scalars), ``checkpoints/`` (DCP, when ``run.checkpoint_every > 0`` or early
stopping keeps the best model), ``summary.json`` (config, plan, metrics, throughput, wall time, RealImp)
and ``model.pt`` (the unsharded model for ``denoisrec predict``).

The loop: ``run.epochs`` over the train split, capped by ``run.max_steps``; the learning rate follows
:mod:`~denoisrec.trainer.loop.schedule`; validation every ``run.eval_every`` steps (or epochs) feeds early
stopping; a checkpoint every ``run.checkpoint_every`` steps; at the end, validation and test (against clean
labels when the data has them), with the best model restored when early stopping is on.

The job itself is :class:`~denoisrec.trainer.recipe.TrainRecipe` (``setup → resume → fit → finish``); this
module is its public entry. The model factory is :mod:`~denoisrec.trainer.factory`, the set-up helpers
(seeding, batch size, data position) :mod:`~denoisrec.trainer.run_setup`.

Example (one process)::

    cfg = Config()
    cfg.data.path = "data/small"
    summary = train(cfg)
    summary["metrics"]["test_clean"]["auc"]
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from denoisrec.trainer.checkpoint.out_policy import check_out_dir
from denoisrec.trainer.checkpoint.run_lock import acquire_for_run
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.distributed.env import broadcast_from_main, init_distributed
from denoisrec.trainer.outputs.console import finish_run
from denoisrec.trainer.outputs.warnings_file import WarningsToFile
from denoisrec.trainer.recipe import TrainRecipe

__all__ = ["train"]


def train(cfg: Config, hooks: Optional[Any] = None) -> Dict[str, Any]:
    """Train and evaluate as ``cfg`` says; return the summary (identical on every rank).

    ``hooks`` (optional; e.g. a test's probe) is called with
    ``on_step(step, epoch, batch, loss_output)`` after every step (``batch`` is ``None`` under the GPU
    pipeline) and ``on_epoch_end(epoch, model, readers, env)`` after every epoch; a true return from the
    latter stops training.

    ``cfg`` is a checked config (:func:`~denoisrec.trainer.config.check.check_config`: ``denoisrec train`` and
    :func:`denoisrec.train` check it once, before torch is imported); rank 0 holds
    ``<out>/.lock`` for the run's life (a second run on the same ``--out`` is refused,
    ``trainer/checkpoint/run_lock.py``); third-party warnings go to ``<out>/warnings.log``
    (:mod:`~denoisrec.trainer.outputs.warnings_file`)
    once the out policy allowed the run (a refused launch changes nothing in ``--out``);
    rank 0 ends with ``curves.png`` and the console lines of :func:`~denoisrec.trainer.outputs.console.finish_run`.
    """
    check_out_dir(cfg.run.out)  # a file, read-only, ...: one line before anything starts
    with WarningsToFile(cfg.run.out, int(os.environ.get("RANK", "0"))) as quiet:
        env = init_distributed(cfg.run.device)
        lock = acquire_for_run(cfg.run.out, env.is_main, broadcast_from_main)
        try:
            job = TrainRecipe(cfg, hooks, env, quiet)
            job.setup()
            job.resume()
            job.fit()
            summary = job.finish()
            finish_run(cfg, summary, quiet)
            return summary
        finally:
            lock.release()

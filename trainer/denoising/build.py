"""The trainer's side of the denoising layer: it reads what a denoiser declares it needs
(:class:`~denoisrec.denoisers.base.DenoiserNeeds`, ``Denoiser.needs``) and does it; it never probes a
denoiser's attributes.

- :func:`build_denoiser_for` injects what ``NEEDS.injected`` lists: the sparse features' table sizes (or the
  context features' for a context tower), the ``meta`` device (DeCA's MF tables are materialised, sharded,
  by DMP), and ``prior`` — the configured model built by the same builder from seed ``run.seed + 1``, with
  its tables named ``prior_t_<feature>``. It prints the denoiser's own ``setup_warnings`` for this job.
- :func:`plan_constraints` keeps ``needs.model_parallel_tables`` model-parallel in the sharding plan.
- :func:`static_graph` tells :func:`~denoisrec.trainer.distributed.sharding.wrap` whether DDP may assume a fixed set of
  trained parameters (``needs.static_graph``).
- :func:`prepare_denoiser` runs ``needs.pretraining`` before the main loop: BCE to early stopping on the
  observed validation AUC, or a fixed number of steps (:mod:`~denoisrec.trainer.denoising.prior`), or loads its
  checkpoint; then, if declared, scores the training split once.
- :func:`bind_run_length` tells a denoiser declaring ``needs.run_length`` the run's length (T-CE / DART
  schedules given in epochs or as a share of the run resolve to steps) and prints, loudly, any schedule
  that would not act within the run.

Example (inside ``train``)::

    module = TrainModule(model, build_denoiser_for(cfg, schema, spec))
    dmp = wrap(module, plan, env, static_graph=static_graph(module))
    prepare_denoiser(dmp, cfg, train_reader, dense_opt, env, log)
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from denoisrec.denoisers import DENOISERS, Denoiser, JobFacts, Pretraining, build_denoiser
from denoisrec.models import ModelSpec, read_weights
from denoisrec.models.first_order import fuse_state, has_table_layout
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.denoising.prior import cache_prior_scores, pretrain_prior, selection_source
from denoisrec.trainer.distributed.unsharded import load_full_state
from denoisrec.trainer.module import denoiser_of

PRIOR_PREFIX = "prior_"


def build_prior(spec: ModelSpec, seed: int) -> nn.Module:
    """The target architecture again (same :class:`ModelSpec`), from another seed: DeCA(p)'s ``f'``, its
    tables named ``prior_t_<feature>`` / ``prior_w_<feature>``.

    The global RNG is forked, so building the prior does not change the target model's initialisation.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.build(table_prefix=PRIOR_PREFIX)


def build_denoiser_for(
    cfg: Config, schema: DataSchema, spec: Optional[ModelSpec] = None, device: Optional[torch.device] = None
) -> Denoiser:
    """``cfg.denoiser`` built with what its class needs from the job (see the module docstring)."""
    name = cfg.denoiser.name
    if name not in DENOISERS:
        raise ValueError(f"--denoiser {name!r}: unknown denoiser, expected one of {sorted(DENOISERS)}")
    wanted = DENOISERS[name].NEEDS.injected
    makers: Dict[str, Callable[[], Any]] = {
        "tables": lambda: {f.name: f.num_embeddings for f in schema.sparse},
        "context_tables": lambda: {f.name: f.num_embeddings for f in schema.sparse if f.role == "context"},
        "device": lambda: device or torch.device("meta"),
        "prior": lambda: build_prior(_need_spec(spec, name), cfg.run.seed + 1),
    }
    unknown = [k for k in wanted if k not in makers]
    if unknown:
        raise ValueError(
            f"--denoiser {name}: needs {unknown} injected, which the trainer does not supply "
            f"(it supplies {sorted(makers)})"
        )
    d = build_denoiser(name, context={k: makers[k]() for k in wanted}, **cfg.denoiser.params)
    job = JobFacts(
        sparse_optimizer=cfg.optim.sparse,
        sparse_weight_decay=cfg.optim.sparse_weight_decay,
        sharding_type=cfg.sharding.sharding_type,
    )
    for msg in d.setup_warnings(job):
        warnings.warn(msg, stacklevel=2)
    return d


def bind_run_length(model: nn.Module, steps_per_epoch: int, total_steps: int, log: Any) -> None:
    """``Denoiser.bind_run`` before the first step when ``needs.run_length`` is declared; its warnings go to
    ``warnings`` (under :class:`~denoisrec.trainer.outputs.warnings_file.WarningsToFile`: one ``warning: ...`` line
    on rank 0's
    console, once per process; ``log`` is kept for the callers' signature).
    """
    d = denoiser_of(model)
    if not d.needs.run_length:
        return
    for msg in d.bind_run(steps_per_epoch, total_steps):
        warnings.warn(msg, stacklevel=2)


def static_graph(module: nn.Module) -> bool:
    """Whether DDP may use a static graph: ``False`` when the denoiser trains different parameters on
    different steps (DeCA's h / h', DeCA(p)'s phases).
    """
    return denoiser_of(module).needs.static_graph


MODEL_PARALLEL = ["table_wise", "column_wise", "row_wise"]


def plan_constraints(module: nn.Module, cfg: Config) -> Optional[Dict[str, Any]]:
    """Planner constraints for the tables the denoiser declares in ``needs.model_parallel_tables`` (DeCA's
    MFs, the observation model's tower): any model-parallel sharding type, never replicated. A sharding
    type forced for every table wins (the denoiser's ``setup_warnings`` says what that costs it).
    """
    from torchrec.distributed.planner import ParameterConstraints

    tables = denoiser_of(module).needs.model_parallel_tables
    if not tables or cfg.sharding.sharding_type is not None:
        return None
    return {t: ParameterConstraints(sharding_types=list(MODEL_PARALLEL)) for t in tables}


# ---- DeCA(p): the prior's pre-training phase, or its checkpoint --------------------------------------------


def _need_spec(spec: Optional[ModelSpec], name: str) -> ModelSpec:
    if spec is None:
        raise ValueError(f"denoiser {name!r} needs the target model's ModelSpec to build its prior")
    return spec


def load_prior_checkpoint(model: nn.Module, path: str) -> None:
    """Load DeCA(p)'s frozen ``f'`` into its (sharded) tables and layers from ``path``: a denoisrec model file
    (``<run out>/model.pt`` of a BCE run with the same model and data) or a plain
    ``torch.save(model.state_dict())`` of the target architecture (keys optionally prefixed ``model.``).
    """
    where = f"deca_p option prior_checkpoint={path!r}"
    try:
        full = read_weights(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e
    prior = denoiser_of(model).prior
    assert isinstance(prior, nn.Module), f"{where}: the denoiser has no prior model"
    if has_table_layout(full) and not has_table_layout(prior.state_dict()):
        full = fuse_state(full)  # written with separate first-order tables: the prior holds them in its own
    prefixed = any(k.startswith("model.") for k in full)

    def rename(key: str) -> str:
        key = key.replace(f".{PRIOR_PREFIX}t_", ".t_").replace(f".{PRIOR_PREFIX}w_", ".w_")
        return f"model.{key}" if prefixed else key

    load_full_state(prior, full, rename, where=where)


def prepare_denoiser(
    model: nn.Module,
    cfg: Config,
    reader: Any,
    dense_opt: Any,
    device: torch.device,
    log: Any,
    valid: Optional[Any] = None,
    select_on: str = "observed",
) -> None:
    """Run the denoiser's declared ``needs.pretraining`` before the main loop (DeCA(p)'s prior): load its
    checkpoint, or pre-train it with BCE on this DMP model — ``steps`` steps, or (unset) to early stopping on
    the resolved ``select_on`` signal of ``valid`` (the readers by split) within ``max_epochs``
    (:mod:`~denoisrec.trainer.denoising.prior`); then, with ``cache_scores``, score the training split once.
    """
    d = denoiser_of(model)
    phase = d.needs.pretraining
    if phase is None:
        return
    _prepare_prior(model, d, phase, cfg, reader, dense_opt, device, log, valid, select_on)
    if phase.cache_scores:
        t0 = time.time()
        n = cache_prior_scores(d, reader, device)
        log.print(
            f"deca_p: f' scored once on {n:,} training rows ({time.time() - t0:.1f}s, {12 * n / 2**20:.1f} MiB "
            "per rank); phase 2 looks the scores up by sample id instead of running f' every step"
        )


def _prepare_prior(
    model: nn.Module,
    d: Any,
    phase: Pretraining,
    cfg: Config,
    reader: Any,
    dense_opt: Any,
    device: torch.device,
    log: Any,
    valid: Optional[Any],
    select_on: str = "observed",
) -> None:
    if phase.checkpoint is not None:
        load_prior_checkpoint(model, phase.checkpoint)
        log.print(f"deca_p: prior f' loaded from {phase.checkpoint}")
        return
    done = int(d.pretrained_steps.item())  # once, before the loop
    if done >= 0:  # a resumed run: phase 1 is behind us
        d.pretrain_steps = done
        return
    fixed = phase.steps
    source, target, words = (valid, "observed", "valid AUC (observed)")
    if isinstance(valid, dict):  # the readers by split: the run's selection signal
        source, target, words = selection_source(valid, select_on)
    if fixed is None:
        how = (
            f"to early stopping on the {words} (eval.select_on={select_on}; at most {phase.max_epochs:g} epoch(s), "
            f"patience {phase.patience})"
        )
    else:
        how = f"for {fixed} step(s)"
    log.print(f"deca_p phase 1: pre-training the prior f' with BCE {how}")
    pretrain_prior(
        model,
        d,
        reader,
        source if fixed is None else None,
        dense_opt,
        device,
        log,
        phase.max_epochs,
        phase.patience,
        cfg.run.log_every,
        fixed,
        target,
        words,
    )

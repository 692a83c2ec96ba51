"""The model factory: build → fuse the sparse optimizer → plan → wrap (DMP) → dense optimizer, in one place.

Training (:mod:`~denoisrec.trainer.recipe`), ``bench throughput``, ``bench ingest`` and the distributed test
drivers all get their sharded model here, so they all time and test the model training runs.

1. :func:`build_module`: the configured model (``model.*`` over the schema's sparse and dense features) and
   the configured denoiser (with what it needs injected, :mod:`~denoisrec.trainer.denoising.build`) in one
   :class:`~denoisrec.trainer.module.TrainModule`.
2. :func:`shard_module`: the sparse optimizer fused into backward, the planner's plan (the denoiser's table
   constraints included; tables folded into the model's collection planned again, if need be, to the
   sharding types of the model's own, :func:`~denoisrec.trainer.distributed.shared_lookup.aligned_constraints`),
   ``DistributedModelParallel`` and the combined optimizer
   (:func:`~denoisrec.trainer.distributed.sharding.train_optimizer`).

Example (one process)::

    env = init_distributed("cpu")
    built = build_train_model(cfg, schema, env, batch_size=2048)
    built.model, built.opt.optimizer, plan_summary(built.plan)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.types import ShardingPlan

from denoisrec.models import ModelSpec
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.denoising.build import build_denoiser_for, plan_constraints, static_graph
from denoisrec.trainer.denoising.feature_views import feature_views
from denoisrec.trainer.distributed.env import DistEnv
from denoisrec.trainer.distributed.sharding import (
    TrainOptimizer,
    checkpoint_constraints,
    embedding_tables,
    fuse_sparse_optimizer,
    make_plan,
    train_optimizer,
    wrap,
)
from denoisrec.trainer.distributed.shared_lookup import aligned_constraints
from denoisrec.trainer.module import TrainModule


def model_spec(cfg: Config, schema: DataSchema) -> ModelSpec:
    """The :class:`ModelSpec` of ``cfg.model`` over ``schema`` (the model's view of the features)."""
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
    """Model and denoiser in one unsharded module (the target model may not see the context features)."""
    data_schema, model_schema = feature_views(cfg, schema)
    spec = model_spec(cfg, model_schema)
    return TrainModule(spec.build(), build_denoiser_for(cfg, data_schema, spec))


@dataclass
class BuiltModel:
    """A sharded training model.

    Attributes:
        module: the unsharded :class:`TrainModule` (now inside ``model``).
        plan: the sharding plan every rank agreed on.
        model: the ``DistributedModelParallel`` wrapper to train.
        opt: the combined sparse + dense optimizer.
    """

    module: TrainModule
    plan: ShardingPlan
    model: DistributedModelParallel
    opt: TrainOptimizer


PlanWith = Callable[[Optional[str], Optional[Dict[str, Any]]], ShardingPlan]


def plan_module(
    module: TrainModule, cfg: Config, plan_with: PlanWith, table_constraints: Optional[Dict[str, Any]] = None
) -> ShardingPlan:
    """The plan of ``module``'s tables as ``cfg`` says, from ``plan_with(sharding_type, constraints)``.

    The denoiser's table constraints (or ``table_constraints``), then, where the planner gave tables folded
    into the model's collection other sharding types than the model's own, a second plan that aligns them
    (folded tables have no all-to-all of their own). ``plan_with`` plans over the real world
    (:func:`~denoisrec.trainer.distributed.sharding.make_plan`) or a simulated one (``bench plan``).
    """
    constraints = table_constraints or plan_constraints(module, cfg)
    plan = plan_with(cfg.sharding.sharding_type, constraints)
    if not table_constraints and cfg.sharding.sharding_type is None:
        aligned = aligned_constraints(plan, module, constraints)
        plan = plan if aligned is None else plan_with(None, aligned)
    return plan


def shard_module(
    module: TrainModule,
    cfg: Config,
    env: DistEnv,
    batch_size: int,
    table_constraints: Optional[Dict[str, Any]] = None,
    saved_plan: Optional[Dict[str, Any]] = None,
) -> BuiltModel:
    """Fuse the sparse optimizer, plan, wrap in DMP and build the optimizers, as ``cfg`` says.

    ``table_constraints`` replace the denoiser's own planner constraints (tests that force a placement).
    ``saved_plan`` (the plan of the checkpoint a run resumes from) keeps every table's sharding type on the
    automatic plan (no ``sharding.sharding_type``), whatever the batch size and world size now.
    """
    fuse_sparse_optimizer(module, cfg.optim.sparse, cfg.optim.sparse_lr, cfg.optim.sparse_weight_decay)
    constraints = table_constraints or plan_constraints(module, cfg)
    resumed = None
    if saved_plan and not table_constraints and cfg.sharding.sharding_type is None:
        resumed = checkpoint_constraints(saved_plan, embedding_tables(module))
        constraints = {**(constraints or {}), **(resumed or {})}
    plan = make_plan(module, env, cfg.sharding.sharding_type, batch_size, constraints)
    if not table_constraints and not resumed and cfg.sharding.sharding_type is None:  # folded tables: no all-to-all
        aligned = aligned_constraints(plan, module, constraints)
        plan = plan if aligned is None else make_plan(module, env, None, batch_size, aligned)
    model = wrap(module, plan, env, static_graph=static_graph(module))
    return BuiltModel(module, plan, model, train_optimizer(model, cfg.optim))


def build_train_model(
    cfg: Config, schema: DataSchema, env: DistEnv, batch_size: int, saved_plan: Optional[Dict[str, Any]] = None
) -> BuiltModel:
    """:func:`build_module` then :func:`shard_module`: the model the training job trains (``saved_plan``: the
    plan of the checkpoint it resumes from).
    """
    return shard_module(build_module(cfg, schema), cfg, env, batch_size, saved_plan=saved_plan)

"""Sharding: the TorchRec planner's plan, ``DistributedModelParallel``, and the two optimizers.

- Every ``EmbeddingBagCollection`` in the module (the model's and any auxiliary model's) is planned by
  ``EmbeddingShardingPlanner`` over a ``Topology`` built from the world size and device; a configured
  sharding type constrains every table.
- The sparse optimizer is fused into backward (``apply_optimizer_in_backward`` before DMP: FBGEMM's TBE
  updates the shards in the backward pass); the dense optimizer steps the remaining parameters.

- :func:`train_optimizer` combines both into one TorchRec ``CombinedOptimizer`` (``sparse.*`` and
  ``dense.*`` keys), with TorchRec's ``GradientClippingOptimizer`` on the dense side when clipping is on.

Example::

    plan = make_plan(module, env, sharding_type="table_wise", batch_size=2048)
    dmp = wrap(module, plan, env)
    opt = train_optimizer(dmp, cfg.optim)
    Stepper(dmp, opt.optimizer, env.device, pipelined=False)  # the step: trainer/loop/steps.py

:func:`denoisrec.trainer.factory.shard_module` runs this sequence for every caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingBagCollection
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingPlan
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from denoisrec.trainer.distributed.env import DistEnv

SHARDING_TYPES = ("table_wise", "column_wise", "row_wise", "data_parallel")
SPARSE_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "adam", "sgd")
DENSE_OPTIMIZERS = ("adam", "adamw", "adagrad", "sgd")


def embedding_tables(module: nn.Module) -> List[str]:
    """Names of every embedding table in ``module`` (all ``EmbeddingBagCollection`` s)."""
    names: List[str] = []
    for m in module.modules():
        if isinstance(m, EmbeddingBagCollection):
            names += [c.name for c in m.embedding_bag_configs()]
    return names


def sharding_constraints(
    module: nn.Module,
    device_type: str,
    sharding_type: Optional[str],
    table_constraints: Optional[Dict[str, ParameterConstraints]] = None,
) -> Optional[Dict[str, ParameterConstraints]]:
    """The planner's constraints: ``sharding_type`` forced on every table, else ``table_constraints``.

    Args:
        module: the module whose tables are planned.
        device_type: ``cpu`` or ``cuda`` (row-wise sharding is offered on GPU only).
        sharding_type: one of :data:`SHARDING_TYPES`, or ``None`` to let the planner choose.
        table_constraints: constraints of single tables (e.g. DeCA's MF tables to model-parallel types).

    Returns:
        ``{table: ParameterConstraints}``, or ``None`` for none.
    """
    constraints: Optional[Dict[str, ParameterConstraints]] = dict(table_constraints) if table_constraints else None
    if sharding_type is not None:
        if sharding_type not in SHARDING_TYPES:
            raise ValueError(f"sharding.sharding_type={sharding_type!r}: expected one of {SHARDING_TYPES}")
        if sharding_type == "row_wise" and device_type != "cuda":
            raise ValueError(
                "sharding.sharding_type=row_wise: TorchRec's planner offers row-wise sharding on "
                "GPU only; on CPU use table_wise, column_wise or data_parallel"
            )
        constraints = {t: ParameterConstraints(sharding_types=[sharding_type]) for t in embedding_tables(module)}
    return constraints


def make_planner(
    topology: Topology,
    batch_size: int,
    constraints: Optional[Dict[str, ParameterConstraints]],
    **options: Any,
) -> EmbeddingShardingPlanner:
    """The planner every plan of the project comes from (``options``: more ``EmbeddingShardingPlanner``
    arguments, e.g. a ``storage_reservation`` to read back, for ``bench plan``).
    """
    return EmbeddingShardingPlanner(
        topology=topology, batch_size=batch_size, constraints=constraints, debug=False, **options
    )


def make_plan(
    module: nn.Module,
    env: DistEnv,
    sharding_type: Optional[str],
    batch_size: int,
    table_constraints: Optional[Dict[str, ParameterConstraints]] = None,
) -> ShardingPlan:
    """Plan the module's tables over the world (the same plan on every rank: ``collective_plan``).

    ``table_constraints`` constrain single tables (e.g. DeCA's MF tables to model-parallel types) when no
    ``sharding_type`` forces one type on every table.
    """
    constraints = sharding_constraints(module, env.device.type, sharding_type, table_constraints)
    topology = Topology(
        world_size=env.world_size,
        local_world_size=env.local_world_size,
        compute_device=env.device.type,
    )
    planner = make_planner(topology, batch_size, constraints)
    return planner.collective_plan(module, [EmbeddingBagCollectionSharder()], dist.GroupMember.WORLD)


def checkpoint_constraints(saved_plan: Any, tables: List[str]) -> Optional[Dict[str, ParameterConstraints]]:
    """Planner constraints that give every table the sharding type a checkpoint's plan gave it (``meta.json``'s
    ``plan``: ``{"<module path>.<table>": {"sharding_type", ...}}``), so that a resume with another batch size
    or world size plans each table as it was saved; ``None`` when the plan names none of ``tables``.

    Tables re-shard on load between the model-parallel types, but a table that moves between ``data_parallel``
    and a sharded type cannot load its optimizer state (the dense optimizer trains the one, the fused sparse
    optimizer the other), and the automatic plan may mix both and change with the batch size.
    """
    if not isinstance(saved_plan, dict):
        return None
    out: Dict[str, ParameterConstraints] = {}
    for key, p in saved_plan.items():
        table = str(key).rsplit(".", 1)[-1]
        kind = p.get("sharding_type") if isinstance(p, dict) else None
        if table in tables and kind in SHARDING_TYPES:
            out[table] = ParameterConstraints(sharding_types=[kind])
    return out or None


def check_sparse_optimizer(name: str, sharding_type: Optional[str], device: torch.device) -> None:
    """Fail early where FBGEMM cannot fuse ``name``.

    Its CPU kernels offer row-wise Adagrad, Adagrad and SGD only. (``data_parallel`` tables use TorchRec's dense
    kernel: they are replicated, their gradients are all-reduced like any dense parameter, and the *dense*
    optimizer updates them; ``optim.sparse`` does not apply to them.)
    """
    if name not in SPARSE_OPTIMIZERS:
        raise ValueError(f"optim.sparse={name!r}: expected one of {SPARSE_OPTIMIZERS}")
    if name == "adam" and device.type != "cuda" and sharding_type != "data_parallel":
        raise ValueError(
            "optim.sparse=adam: FBGEMM's CPU kernels fuse only rowwise_adagrad, adagrad and sgd into "
            "sharded tables; on CPU use another optim.sparse, or --sharding data_parallel (tables "
            "replicated and updated by the dense optimizer, optim.dense). On GPU every sharding type "
            "supports adam."
        )


def fuse_sparse_optimizer(module: nn.Module, name: str, lr: float, weight_decay: float = 0.0) -> None:
    """Attach the sparse optimizer to every embedding table so it runs inside backward."""
    params = [p for m in module.modules() if isinstance(m, EmbeddingBagCollection) for p in m.parameters()]
    if name == "rowwise_adagrad":
        apply_optimizer_in_backward(RowWiseAdagrad, params, {"lr": lr, "weight_decay": weight_decay})
    elif name == "adagrad":
        apply_optimizer_in_backward(torch.optim.Adagrad, params, {"lr": lr, "weight_decay": weight_decay})
    elif name == "adam":
        apply_optimizer_in_backward(torch.optim.Adam, params, {"lr": lr, "weight_decay": weight_decay})
    elif name == "sgd":
        apply_optimizer_in_backward(torch.optim.SGD, params, {"lr": lr, "weight_decay": weight_decay})
    else:
        raise ValueError(f"optim.sparse={name!r}: expected one of {SPARSE_OPTIMIZERS}")


def wrap(module: nn.Module, plan: ShardingPlan, env: DistEnv, static_graph: bool = True) -> DistributedModelParallel:
    """Shard ``module`` with ``plan``; dense parameters are wrapped in DDP (TorchRec's default wrapper)."""
    return DistributedModelParallel(
        module,
        device=env.device,
        plan=plan,
        sharders=[EmbeddingBagCollectionSharder()],
        data_parallel_wrapper=DefaultDataParallelWrapper(
            static_graph=static_graph, find_unused_parameters=not static_graph
        ),
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The :class:`TrainModule` inside ``DistributedModelParallel`` (DMP's ``module`` property strips DMP and
    DDP), or ``model`` itself when it is not wrapped.
    """
    return getattr(model, "module", model)


def dense_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0) -> KeyedOptimizerWrapper:
    """The optimizer of every parameter not updated in backward."""
    params = dict(in_backward_optimizer_filter(model.named_parameters()))
    makers = {
        "adam": lambda ps: torch.optim.Adam(ps, lr=lr, weight_decay=weight_decay),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=weight_decay),
        "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=lr, weight_decay=weight_decay),
        "sgd": lambda ps: torch.optim.SGD(ps, lr=lr, weight_decay=weight_decay),
    }
    if name not in makers:
        raise ValueError(f"optim.dense={name!r}: expected one of {DENSE_OPTIMIZERS}")
    return KeyedOptimizerWrapper(params, makers[name])


def plan_summary(plan: ShardingPlan) -> Dict[str, Dict[str, object]]:
    """``{table: {sharding_type, compute_kernel, ranks}}`` for logs and the run summary."""
    out: Dict[str, Dict[str, object]] = {}
    for module_path, module_plan in plan.plan.items():
        for table, ps in module_plan.items():  # type: ignore[union-attr]
            ranks = sorted({r for r in (ps.ranks or [])})
            out[f"{module_path}.{table}" if module_path else table] = {
                "sharding_type": ps.sharding_type,
                "compute_kernel": ps.compute_kernel,
                "ranks": ranks,
            }
    return out


@dataclass
class TrainOptimizer:
    """The run's optimizers.

    Attributes:
        optimizer: ``CombinedOptimizer`` of both; ``zero_grad``/``step`` it once per step (TrainPipeline too).
        sparse: DMP's fused optimizer (its update runs inside backward; ``step`` only sets the learning rate).
        dense: the dense optimizer (clipping wrapper included when on).
        lr_groups: ``(optimizer, base learning rate)`` pairs for :func:`denoisrec.trainer.loop.schedule.set_lr`.
    """

    optimizer: CombinedOptimizer
    sparse: KeyedOptimizer
    dense: KeyedOptimizer
    lr_groups: Sequence[Tuple[Any, float]]

    def grad_norm(self) -> Optional[torch.Tensor]:
        """The dense gradients' norm before clipping at the last step (``None`` when clipping is off)."""
        return self.dense.last_total_grad_norm if isinstance(self.dense, GradientClippingOptimizer) else None


def train_optimizer(model: DistributedModelParallel, optim: Any) -> TrainOptimizer:
    """Build :class:`TrainOptimizer` from the ``optim`` config section for a DMP-wrapped model."""
    dense: KeyedOptimizer = dense_optimizer(model, optim.dense, optim.lr, optim.weight_decay)
    if optim.clip_grad_norm is not None:
        if optim.clip_grad_norm <= 0:
            raise ValueError(f"optim.clip_grad_norm={optim.clip_grad_norm}: must be positive (or null for off)")
        dense = GradientClippingOptimizer(
            dense, clipping=GradientClipping.NORM, max_gradient=float(optim.clip_grad_norm)
        )
    sparse = model.fused_optimizer
    combined = CombinedOptimizer([("sparse", sparse), ("dense", dense)])
    return TrainOptimizer(combined, sparse, dense, [(sparse, optim.sparse_lr), (dense, optim.lr)])

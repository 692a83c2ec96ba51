"""Plain TorchRec: the reference step the GPU check holds denoisrec's BCE step against.

TorchRec's own ``DLRMTrain(DLRM(...))`` over an ``EmbeddingBagCollection`` with the same tables (names,
rows, width), the same bottom and top MLPs, the same planner inputs (topology, batch size), the same fused
row-wise Adagrad in backward and the same dense Adam as a denoisrec model built from ``cfg``. The step is
TorchRec's: ``TrainPipelineSparseDist`` (``progress``; what the trainer uses on CUDA) or ``TrainPipelineBase``
(the plain ``zero_grad → forward → backward → step``); batches are TorchRec's ``Batch`` (dense, KJT, labels).
No denoisrec code runs in it.

Example::

    model, opt = build_reference(schema, dense_arch=[64, 16], over_arch=[128, 64, 1], embedding_dim=16,
                                 lr=1e-3, sparse_lr=0.05, device=torch.device("cpu"), batch_size=256)
    steps = reference_steps(model, opt, torch.device("cpu"), itertools.cycle(batches), pipelined=False)
    next(steps)  # one step; yields the loss tensor
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Generator, Iterator, List, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.datasets.utils import Batch
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.models.dlrm import DLRM, DLRMTrain
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad


def mlp_sizes(model: nn.Module) -> Tuple[List[int], List[int]]:
    """A TorchRec ``DLRM``'s bottom and top MLP widths (from its ``Linear`` layers)."""

    def outs(m: nn.Module) -> List[int]:
        return [x.out_features for x in m.modules() if isinstance(x, nn.Linear)]

    return outs(model.dense_arch), outs(model.over_arch)  # type: ignore[arg-type]


def build_reference(
    schema: Any,
    dense_arch: Sequence[int],
    over_arch: Sequence[int],
    embedding_dim: int,
    lr: float,
    sparse_lr: float,
    device: torch.device,
    batch_size: int,
) -> Tuple[DistributedModelParallel, CombinedOptimizer]:
    """``DLRMTrain`` sharded by DMP with the default planner, and its (fused sparse + Adam) optimizer.

    ``schema``: a :class:`~denoisrec.trainer.data.schema.DataSchema` (only its feature names and table rows
    are read); tables are named ``t_<feature>`` like denoisrec's, so the planner sees the same tables.
    """
    tables = [
        EmbeddingBagConfig(
            name=f"t_{f.name}", embedding_dim=embedding_dim, num_embeddings=f.num_embeddings, feature_names=[f.name]
        )
        for f in schema.sparse
    ]
    ebc = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
    module = DLRMTrain(
        DLRM(
            embedding_bag_collection=ebc,
            dense_in_features=len(schema.dense),
            dense_arch_layer_sizes=list(dense_arch),
            over_arch_layer_sizes=list(over_arch),
        )
    )
    apply_optimizer_in_backward(RowWiseAdagrad, module.model.sparse_arch.parameters(), {"lr": sparse_lr})
    world = dist.get_world_size()
    topology = Topology(world_size=world, local_world_size=world, compute_device=device.type)
    planner = EmbeddingShardingPlanner(topology=topology, batch_size=batch_size)
    plan = planner.collective_plan(module, [EmbeddingBagCollectionSharder()], dist.GroupMember.WORLD)
    model = DistributedModelParallel(module, device=device, plan=plan, sharders=[EmbeddingBagCollectionSharder()])
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(model.named_parameters())), lambda ps: torch.optim.Adam(ps, lr=lr)
    )
    return model, CombinedOptimizer([model.fused_optimizer, dense])


def to_reference_batch(b: Any) -> Batch:
    """TorchRec's ``Batch`` with ``b``'s dense features, KJT and labels (pinned when ``b`` is)."""
    return Batch(dense_features=b.dense_features, sparse_features=b.sparse_features, labels=b.labels)


def reference_steps(
    model: nn.Module,
    optimizer: Any,
    device: torch.device,
    batches: Iterator[Batch],
    pipelined: bool,
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
) -> Generator[torch.Tensor, None, None]:
    """Train on ``batches`` one step per ``next`` (through ``TrainPipelineSparseDist`` when ``pipelined``),
    yielding the step's loss (a device tensor).
    """

    def forward(batch: Batch) -> Any:
        with autocast():
            return model(batch)

    if pipelined:
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        pipeline: Any = TrainPipelineSparseDist(model, optimizer, device, custom_model_fwd=forward)
    else:  # TorchRec's plain step; its TrainPipelineBase calls the model itself (no custom_model_fwd)
        from torchrec.distributed.train_pipeline import TrainPipelineBase

        pipeline = TrainPipelineBase(_Autocast(model, autocast), optimizer, device)
    while True:
        value, _, _ = pipeline.progress(batches)  # DLRMTrain's (loss, logits, labels), after the update
        yield value


class _Autocast(nn.Module):
    """``model`` with its forward under ``autocast`` (for ``TrainPipelineBase``, which has no custom forward)."""

    def __init__(self, model: nn.Module, autocast: Callable[[], ContextManager[Any]]) -> None:
        super().__init__()
        self.model, self.autocast = model, autocast

    def forward(self, batch: Batch) -> Any:
        with self.autocast():
            return self.model(batch)

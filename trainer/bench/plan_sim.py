"""A plan for a cluster this machine is not: TorchRec's planner over a simulated GPU topology, and its costs.

The project's own planning (:func:`~denoisrec.trainer.factory.plan_module`: the denoiser's constraints, the
folded tables' alignment; :func:`~denoisrec.trainer.distributed.sharding.make_planner`; the sparse optimizer fused
first, so the storage estimate holds its state) runs over a :class:`Cluster`'s ``Topology`` with
``compute_device="cuda"``. Nothing is allocated (the tables stay on ``meta``), so it runs on a CPU.
From the chosen plan: per-rank HBM/DDR and the planner's perf estimate (:func:`rank_costs`), and the bytes
of pooled embeddings the all-to-alls move per step (:func:`a2a_bytes`).

Example::

    cluster = Cluster()                                    # H100 hosts of 8 GPUs
    module = planning_module(cfg, schema_for(preset_by_name("product")))
    sim = simulate_plan(module, cfg, cluster, world_size=64, batch_size=8192)
    sim.step_ms, sim.hbm_per_rank, a2a_bytes(sim.tables, 64, 8, 8192)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from torch import nn

from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.schema import DataSchema

GB = 10**9
PERF_PARTS = ("fwd_compute", "fwd_comms", "bwd_compute", "bwd_comms", "input_dist_comms")
MODEL_PARALLEL = ("table_wise", "column_wise", "row_wise", "table_row_wise", "table_column_wise", "grid_shard")


@dataclass(frozen=True)
class Cluster:
    """A GPU cluster's figures, as the planner's ``Topology`` takes them (decimal bytes, bytes per second).

    The defaults are an H100 SXM host of 8 GPUs (a DGX H100 / HGX H100): 80 GiB HBM3 at 3.35 TB/s per GPU;
    NVLink 4 at 450 GB/s per GPU and direction (900 GB/s both ways); one 400 Gb/s NDR InfiniBand NIC per GPU,
    50 GB/s per direction; 2 TiB of host memory, 256 GiB per GPU. Host memory and PCIe bandwidths (which only
    UVM-cached tables use) are TorchRec's defaults.

    Args:
        hbm_bytes: HBM per GPU.
        ddr_bytes: host memory per GPU.
        gpus_per_host: GPUs one NVLink domain joins (``local_world_size``).
        intra_host_bw: NVLink bandwidth per GPU and direction, bytes/s.
        inter_host_bw: network bandwidth per GPU and direction, bytes/s.
        hbm_mem_bw: HBM bandwidth, bytes/s.
    """

    hbm_bytes: int = 80 * 1024**3
    ddr_bytes: int = 256 * 1024**3
    gpus_per_host: int = 8
    intra_host_bw: float = 450e9
    inter_host_bw: float = 50e9
    hbm_mem_bw: float = 3.35e12

    def topology(self, world_size: int) -> Any:
        """The planner's ``Topology`` of ``world_size`` GPUs (bandwidths in its unit, bytes/ms)."""
        from torchrec.distributed.planner import Topology

        return Topology(
            world_size=world_size,
            compute_device="cuda",
            hbm_cap=self.hbm_bytes,
            ddr_cap=self.ddr_bytes,
            local_world_size=min(self.gpus_per_host, world_size),
            hbm_mem_bw=self.hbm_mem_bw / 1000,
            intra_host_bw=self.intra_host_bw / 1000,
            inter_host_bw=self.inter_host_bw / 1000,
        )


def scaled_schema(schema: DataSchema, factor: int) -> DataSchema:
    """``schema`` with every table ``factor`` times as many rows."""
    sparse = [dataclasses.replace(f, num_embeddings=f.num_embeddings * factor) for f in schema.sparse]
    return dataclasses.replace(schema, sparse=sparse)


def planning_module(cfg: Config, schema: DataSchema) -> nn.Module:
    """The training module ``cfg`` builds over ``schema`` (tables on ``meta``), its sparse optimizer fused as
    training fuses it, so the planner's storage estimate counts the optimizer's state.
    """
    from denoisrec.trainer.distributed.sharding import fuse_sparse_optimizer
    from denoisrec.trainer.factory import build_module

    module = build_module(cfg, schema)
    fuse_sparse_optimizer(module, cfg.optim.sparse, cfg.optim.sparse_lr, cfg.optim.sparse_weight_decay)
    return module


@dataclass
class TableShards:
    """One table as planned: its sharding type, its shards' ``(rank, rows, columns, column offset)``."""

    name: str
    sharding_type: str
    compute_kernel: str
    rows: int
    dim: int
    shards: List[Tuple[int, int, int, int]] = field(default_factory=list)


@dataclass
class SimPlan:
    """A plan over a simulated cluster and what the planner estimates for it.

    Attributes:
        world_size: GPUs planned for.
        batch_size: per-rank batch the planner was given.
        tables: every planned table.
        hbm_per_rank / ddr_per_rank: bytes per rank (shards + the planner's reservation for dense
            parameters and the input KJTs, as ``EmbeddingStats`` counts them).
        perf_per_rank: the planner's per-rank estimate, ms, by part (:data:`PERF_PARTS`).
        hbm_usable: the HBM per rank the planner may fill (shards and its reservation): the GPU's less the
            planner's 15% margin.
        proposals: proposals the planner evaluated (all plans it made, summed).
    """

    world_size: int
    batch_size: int
    tables: List[TableShards]
    hbm_per_rank: List[int]
    ddr_per_rank: List[int]
    perf_per_rank: List[Dict[str, float]]
    hbm_usable: int
    proposals: int

    @property
    def step_ms(self) -> float:
        """The planner's estimate of the step's embedding part: its slowest rank's total, ms."""
        return max(sum(p.values()) for p in self.perf_per_rank)

    def slowest_rank(self) -> int:
        return max(range(self.world_size), key=lambda r: sum(self.perf_per_rank[r].values()))


class _NoSpecWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Sharding spec not found")


@contextlib.contextmanager
def _quiet_planner() -> Iterator[None]:
    """Mute what the planner logs on every plan of the project's own set-up too: a warning for a direct
    ``Topology`` and for its default storage reservation, and one line per replicated table.
    """
    planner_log = logging.getLogger("torchrec.distributed.planner")
    level, mute = planner_log.level, _NoSpecWarning()
    planner_log.setLevel(logging.ERROR)
    logging.getLogger().addFilter(mute)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="HeuristicalStorageReservation is known")
            yield
    finally:
        planner_log.setLevel(level)
        logging.getLogger().removeFilter(mute)


def simulate_plan(
    module: nn.Module,
    cfg: Config,
    cluster: Cluster,
    world_size: int,
    batch_size: int,
    timeout_s: Optional[int] = None,
) -> SimPlan:
    """Plan ``module``'s tables for ``world_size`` GPUs of ``cluster`` the way training plans them.

    Args:
        module: from :func:`planning_module`.
        cfg: the config it was built from (``sharding.sharding_type``, the denoiser's constraints).
        cluster: the simulated hardware.
        world_size: GPUs.
        batch_size: per-rank batch.
        timeout_s: stop each plan's search after this many seconds (``None``: the full search).

    Returns:
        The plan and its per-rank figures (:class:`SimPlan`).
    """
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation

    from denoisrec.trainer.distributed.sharding import make_planner, sharding_constraints
    from denoisrec.trainer.factory import plan_module

    topology = cluster.topology(world_size)
    made: List[Any] = []

    def plan_with(sharding_type: Optional[str], constraints: Optional[Dict[str, Any]]) -> Any:
        reservation = HeuristicalStorageReservation(percentage=0.15)  # the planner's default, held to read back
        planner = make_planner(
            topology,
            batch_size,
            sharding_constraints(module, "cuda", sharding_type, constraints),
            storage_reservation=reservation,
            timeout_seconds=timeout_s,
        )
        plan = planner.plan(module, [EmbeddingBagCollectionSharder()])
        made.append((planner, reservation))
        return plan

    with _quiet_planner():
        plan_module(module, cfg, plan_with)  # type: ignore[arg-type]  # a TrainModule from planning_module
    planner, reservation = made[-1]
    best = planner._best_plan or []
    reserved_hbm = reservation._dense_storage.hbm + reservation._kjt_storage.hbm
    reserved_ddr = reservation._dense_storage.ddr + reservation._kjt_storage.ddr
    hbm = [reserved_hbm] * world_size
    ddr = [reserved_ddr] * world_size
    perf = [dict.fromkeys(PERF_PARTS, 0.0) for _ in range(world_size)]
    tables = []
    for so in best:
        rows, dim = int(so.tensor.shape[0]), int(so.tensor.shape[1])
        t = TableShards(so.name, so.sharding_type, so.compute_kernel, rows, dim)
        for sh in so.shards:
            r = int(sh.rank)
            hbm[r] += sh.storage.hbm
            ddr[r] += sh.storage.ddr
            for part in PERF_PARTS:
                perf[r][part] += float(getattr(sh.perf, part))
            t.shards.append((r, int(sh.size[0]), int(sh.size[1]), int(sh.offset[1])))
        tables.append(t)
    return SimPlan(
        world_size=world_size,
        batch_size=batch_size,
        tables=tables,
        hbm_per_rank=hbm,
        ddr_per_rank=ddr,
        perf_per_rank=perf,
        hbm_usable=int(cluster.hbm_bytes * (1 - reservation._percentage)),
        proposals=sum(p._num_proposals for p, _ in made),
    )


def a2a_bytes(
    tables: List[TableShards], world_size: int, gpus_per_host: int, batch_size: int, elem_bytes: int = 4
) -> Dict[str, int]:
    """Bytes of pooled embeddings the plan's all-to-alls move between ranks in one step, summed over ranks.

    ``B`` samples per rank, ``W`` ranks, ``L`` per host, a shard ``d`` columns wide, ``e`` bytes per value
    (fp32: the project sends no quantized comms). Forward, per sharding type:

    - table-wise / column-wise / table-column-wise: each shard pools all ``W·B`` samples and sends the
      ``(W−1)·B`` that live on other ranks: ``(W−1)·B·d·e`` (``(L−1)·B·d·e`` of it inside the host).
    - row-wise: each of the ``n`` row shards pools a partial sum for all samples and reduce-scatters:
      ``n·(W−1)·B·d·e`` (``n·(L−1)·B·d·e`` inside hosts).
    - table-row-wise (rows over the ``n`` GPUs of one host; grid: each column group so): the
      reduce-scatter inside the host, ``(n−1)·W·B·d·e``, then ``(W−L)·B·d·e`` across hosts.

    Backward sends the pooled gradients back the same way: the same bytes. ``data_parallel`` tables move
    no embeddings; their gradient all-reduce (ring: ``2·(W−1)·rows·d·e`` in all) is counted apart.

    Args:
        tables: the plan's tables (:attr:`SimPlan.tables`).
        world_size: ``W``.
        gpus_per_host: ``L`` (capped at ``W``).
        batch_size: ``B``, per rank.
        elem_bytes: ``e``.

    Returns:
        ``forward``, ``backward``, ``intra_host`` and ``inter_host`` (forward plus backward) and
        ``dp_allreduce`` bytes per step, summed over all ranks.
    """
    W, L, B, e = world_size, min(gpus_per_host, world_size), batch_size, elem_bytes
    intra = inter = dp = 0
    for t in tables:
        if t.sharding_type == "data_parallel":
            dp += 2 * (W - 1) * t.rows * t.dim * e if W > 1 else 0
            continue
        if t.sharding_type not in MODEL_PARALLEL:
            raise ValueError(f"table {t.name}: sharding type {t.sharding_type!r} has no all-to-all model here")
        if t.sharding_type in ("table_wise", "column_wise", "table_column_wise"):
            for _, _, d, _ in t.shards:
                intra += (L - 1) * B * d * e
                inter += (W - L) * B * d * e
        elif t.sharding_type == "row_wise":
            n = len(t.shards)
            intra += n * (L - 1) * B * t.dim * e
            inter += n * (W - L) * B * t.dim * e
        else:  # table_row_wise, grid_shard: one group of row shards per column block
            groups: Dict[int, List[Tuple[int, int, int, int]]] = {}
            for s in t.shards:
                groups.setdefault(s[3], []).append(s)
            for group in groups.values():
                d = group[0][2]
                intra += (len(group) - 1) * W * B * d * e
                inter += (W - L) * B * d * e
    forward = intra + inter
    return {
        "forward": forward,
        "backward": forward,
        "intra_host": 2 * intra,
        "inter_host": 2 * inter,
        "dp_allreduce": dp,
    }


def sharding_counts(tables: List[TableShards]) -> Dict[str, int]:
    """``{sharding type: tables}``."""
    out: Dict[str, int] = {}
    for t in tables:
        out[t.sharding_type] = out.get(t.sharding_type, 0) + 1
    return dict(sorted(out.items()))

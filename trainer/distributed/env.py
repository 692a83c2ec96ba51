"""Process-group set-up: torchrun / torchx environments, or a one-process group for plain runs.

Under ``torchrun`` (or a torchx ``dist.ddp``-style component) the ``RANK``/``WORLD_SIZE``/``MASTER_*``
variables are set and the group is created from them: NCCL on CUDA, gloo on CPU. Without them a one-rank
gloo group is created on a free loopback port, because ``DistributedModelParallel`` needs a group even
for one process.

Example::

    env = init_distributed("auto")    # under torchrun: RANK, WORLD_SIZE; else one rank
    env.rank, env.world_size, env.device
    shutdown()
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Dict, List

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: rank, world size, local rank, device and process-group backend."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resolve_device(pref: str, local_rank: int) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cpu``/``cuda`` force it."""
    if pref not in ("auto", "cpu", "cuda"):
        raise ValueError(f"run.device={pref!r}: expected auto, cpu or cuda")
    if pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but CUDA is not available on this machine")
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_s: int = 600) -> DistEnv:
    """Create (or reuse) the default process group and pick this rank's device."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device, local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        else:
            dist.init_process_group(
                backend=backend,
                init_method=f"tcp://127.0.0.1:{_free_port()}",
                rank=0,
                world_size=1,
                timeout=timedelta(seconds=timeout_s),
            )
    return DistEnv(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
        device=dev,
        backend=dist.get_backend(),
    )


def describe_ranks(env: DistEnv) -> List[Dict[str, Any]]:
    """Where every rank ran, gathered on all ranks (for the run summary): global rank, node rank
    (torchelastic's ``GROUP_RANK``), local rank, host, pid, and how often the elastic agent restarted
    the group (``TORCHELASTIC_RESTART_COUNT``). Outside torchrun node rank and restarts are 0.
    """
    me = {
        "rank": env.rank,
        "node_rank": int(os.environ.get("GROUP_RANK", 0)),
        "local_rank": env.local_rank,
        "local_world_size": env.local_world_size,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "restart_count": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)),
    }
    if env.world_size == 1:
        return [me]
    out: List[Any] = [None] * env.world_size
    dist.all_gather_object(out, me)
    return out


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself outside a multi-rank group)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]

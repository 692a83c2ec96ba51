"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP), and the resume contract.

A checkpoint is a directory ``<out>/checkpoints/step_<NNNNNNNN>/``:

- DCP files (``.metadata``, ``__<rank>_0.distcp``): every rank writes its own shards of
  ``{"model": DMP state dict, "sparse_optim": fused optimizer state, "dense_optim": dense optimizer state}``.
  The model state holds the sharded embedding tables (``ShardedTensor``), the dense layers and the denoiser's
  buffers (its global step and schedule state, auxiliary models' tables).
- ``rng/rank<r>.pt``: each rank's Python, NumPy, torch (and CUDA) random states.
- ``meta.json`` (written last, by rank 0, so its presence marks a complete checkpoint): the data position
  (global step, epoch, batches consumed in that epoch), world size, batch sizes, the model spec, the
  early-stopping state and the rows trained so far.

``<out>/checkpoints/latest`` is a symbolic link to the newest complete checkpoint, replaced atomically.
``run.resume=auto`` resumes from it when present. See docs/checkpoints.md for the whole contract.

Example::

    ck = Checkpointer(cfg.run.out, keep=2, env=env)
    ck.save(step, model, opt, meta)            # collective: every rank calls it
    meta = ck.load(ck.resolve("auto"), model, opt)
"""

from __future__ import annotations

import json
import os
import random
import shutil
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch import nn

from denoisrec.trainer.dist import DistEnv
from denoisrec.trainer.sharding import TrainOptimizer

META = "meta.json"
LATEST = "latest"
BEST = "best"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (incomplete, from another model, unloadable); the message says why."""


def checkpoint_root(out: str) -> str:
    return os.path.join(out, "checkpoints")


def step_dir(root: str, step: int) -> str:
    return os.path.join(root, f"step_{step:08d}")


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, META))


def read_meta(path: str) -> Dict[str, Any]:
    with open(os.path.join(path, META)) as f:
        return json.load(f)


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _broadcast(obj: Any) -> Any:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Checkpointer:
    """Save, find and load checkpoints under ``<out>/checkpoints`` (every method is collective).

    Args:
        out: the run's output directory.
        keep: how many step checkpoints to keep (older ones are deleted; ``best`` is separate).
        env: this rank's place in the world.
    """

    def __init__(self, out: str, keep: int, env: DistEnv) -> None:
        if keep < 1:
            raise ValueError(f"run.keep_checkpoints={keep}: must be >= 1")
        self.root = checkpoint_root(out)
        self.keep = keep
        self.env = env

    # ----------------------------------------------------------------------------------------- finding
    def latest(self) -> Optional[str]:
        link = os.path.join(self.root, LATEST)
        if os.path.lexists(link) and is_complete(link):
            return os.path.realpath(link)
        return None

    def resolve(self, resume: str) -> Optional[str]:
        """``auto`` → the latest complete checkpoint or ``None``; ``never`` → ``None``; else that directory.

        Rank 0 decides and broadcasts, so every rank resumes from the same place.
        """
        path: Optional[str] = None
        error: Optional[str] = None
        if self.env.is_main:
            if resume == "never":
                path = None
            elif resume == "auto":
                path = self.latest()
            elif not os.path.isdir(resume):
                error = f"run.resume={resume!r}: no such checkpoint directory (expected auto, never or a path)"
            elif not is_complete(resume):
                error = f"run.resume={resume!r}: not a complete checkpoint (no {META}; an interrupted save?)"
            else:
                path = os.path.realpath(resume)
        path, error = _broadcast((path, error))
        if error:
            raise CheckpointError(error)
        return path

    # ------------------------------------------------------------------------------------------ saving
    def _write(self, path: str, model: nn.Module, opt: Optional[TrainOptimizer], meta: Dict[str, Any]) -> None:
        if self.env.is_main and os.path.exists(path):
            shutil.rmtree(path)
        _barrier()
        state: Dict[str, Any] = {"model": model.state_dict()}
        if opt is not None:
            state["sparse_optim"] = opt.sparse.state_dict()
            state["dense_optim"] = opt.dense.state_dict()
        dcp.save(state, checkpoint_id=path)
        os.makedirs(os.path.join(path, "rng"), exist_ok=True)
        torch.save(rng_state(), os.path.join(path, "rng", f"rank{self.env.rank}.pt"))
        _barrier()
        if self.env.is_main:
            meta = {"format_version": FORMAT_VERSION, "with_optimizer": opt is not None, **meta}
            tmp = os.path.join(path, META + ".tmp")
            with open(tmp, "w") as f:
                json.dump(meta, f, indent=2, default=str)
            os.replace(tmp, os.path.join(path, META))
        _barrier()

    def save(self, step: int, model: nn.Module, opt: TrainOptimizer, meta: Dict[str, Any]) -> str:
        """Write ``step_<step>``, point ``latest`` at it and delete all but the newest ``keep``."""
        path = step_dir(self.root, step)
        self._write(path, model, opt, meta)
        if self.env.is_main:
            tmp_link = os.path.join(self.root, LATEST + ".tmp")
            if os.path.lexists(tmp_link):
                os.remove(tmp_link)
            os.symlink(os.path.basename(path), tmp_link)
            os.replace(tmp_link, os.path.join(self.root, LATEST))
            steps = sorted(d for d in os.listdir(self.root) if d.startswith("step_"))
            for old in steps[: max(0, len(steps) - self.keep)]:
                shutil.rmtree(os.path.join(self.root, old), ignore_errors=True)
        _barrier()
        return path

    def save_best(self, model: nn.Module, meta: Dict[str, Any]) -> str:
        """The model alone (no optimizer state), at ``<out>/checkpoints/best``."""
        path = os.path.join(self.root, BEST)
        self._write(path, model, None, meta)
        return path

    # ----------------------------------------------------------------------------------------- loading
    def load(self, path: str, model: nn.Module, opt: Optional[TrainOptimizer]) -> Dict[str, Any]:
        """Load ``path`` into ``model`` (and ``opt``) in place, re-sharding the tables to the current plan.

        RNG states are restored when the world size matches the checkpoint's (each rank its own). Returns
        the checkpoint's ``meta.json``.
        """
        meta = read_meta(path)
        if opt is not None and not meta.get("with_optimizer", True):
            raise CheckpointError(f"{path}: holds the model only (a 'best' checkpoint); resume from a step_* one")
        if opt is not None:
            opt.dense.init_state()  # materialise lazy optimizer state so DCP can load into it in place
        state: Dict[str, Any] = {"model": model.state_dict()}
        if opt is not None:
            state["sparse_optim"] = opt.sparse.state_dict()
            state["dense_optim"] = opt.dense.state_dict()
        try:
            dcp.load(state, checkpoint_id=path)
        except (Exception, CheckpointException) as e:  # DCP's CheckpointException (a BaseException) carries every rank's failure
            raise CheckpointError(
                f"{path}: could not load the checkpoint written by {meta.get('world_size')} rank(s) with plan "
                f"{_plan_types(meta)} onto {self.env.world_size} rank(s) with the current plan "
                f"({_first_error(e)}). Tables re-shard on load between table_wise, column_wise "
                "and row_wise plans, but data_parallel tables are trained by the dense optimizer and the others by "
                "the fused sparse one, so their optimizer states differ: resume with the checkpoint's sharding "
                "type (--sharding).") from e
        model.load_state_dict(state["model"])
        if opt is not None:
            opt.sparse.load_state_dict(state["sparse_optim"])
            opt.dense.load_state_dict(state["dense_optim"])
            # FBGEMM keeps Adam's bias-correction step outside the state dict: set it from the data position.
            opt.sparse.set_optimizer_step(int(meta["step"]))
            opt.optimizer.zero_grad()
        if int(meta.get("world_size", -1)) == self.env.world_size:
            rng_file = os.path.join(path, "rng", f"rank{self.env.rank}.pt")
            set_rng_state(torch.load(rng_file, weights_only=False))
        return meta


def _first_error(e: BaseException) -> str:
    """The first underlying message of a DCP ``CheckpointException`` (which holds one failure per rank)."""
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:
        inner = next(iter(failures.values()))
        if isinstance(inner, tuple):  # (exception, traceback frames)
            inner = inner[0]
        return f"{type(inner).__name__}: {inner}"[:500]
    return str(e)[:500]


def _plan_types(meta: Dict[str, Any]) -> Any:
    plan = meta.get("plan") or {}
    return sorted({str(p.get("sharding_type")) for p in plan.values()}) if isinstance(plan, dict) else plan

"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP), and the resume contract.

A checkpoint is a directory ``<out>/checkpoints/step_<NNNNNNNN>/``:

- DCP files (``.metadata``, ``__<rank>_0.distcp``): every rank writes its own shards of
  ``{"model": DMP state dict, "sparse_optim": fused optimizer state, "dense_optim": dense optimizer state}``.
  The model state holds the sharded embedding tables (``ShardedTensor``), the dense layers and the denoiser's
  buffers (its global step and schedule state, auxiliary models' tables).
- ``rng/rank<r>.pt``: each rank's Python, NumPy, torch (and CUDA) random states.
- ``meta.json`` (written last, by rank 0): the data position (global step, epoch, batches consumed in that
  epoch), world size, batch sizes, the model spec, the early-stopping state, the rows trained and read so
  far, and every other file's size and SHA-256 (:mod:`~denoisrec.trainer.checkpoint.files`).

A save writes a hidden temporary directory, fsyncs it, and renames it to ``step_<N>`` (atomic publication),
then replaces the ``latest`` link. ``run.resume=auto`` resumes from the newest checkpoint by step number
that is complete and whose checksums match, skipping damaged newer ones with a warning. See
docs/checkpoints.md for the whole contract.

Example::

    ck = Checkpointer(cfg.run.out, keep=2, env=env)
    ck.save(step, model, opt, meta)            # collective: every rank calls it
    meta = ck.load(ck.resolve("auto"), model, opt)
    ck.export_model(model, f"{cfg.run.out}/model.pt", spec, schema.to_dict(), extra)   # the model file
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException

from denoisrec.models import ModelSpec, save_model_file
from denoisrec.models.first_order import has_table_layout
from denoisrec.trainer.checkpoint import files
from denoisrec.trainer.checkpoint.files import META
from denoisrec.trainer.distributed.env import DistEnv
from denoisrec.trainer.distributed.sharding import TrainOptimizer
from denoisrec.trainer.distributed.shared_lookup import refuse_unfolded_checkpoint
from denoisrec.trainer.distributed.unsharded import unsharded_state_dict
from denoisrec.trainer.errors import CheckpointError, StorageError

LATEST = "latest"
BEST = "best"
FORMAT_VERSION = 3  # 2: meta.json lists every file's size and SHA-256; 3: and carries its own (meta_sha256)


def checkpoint_root(out: str) -> str:
    """The folder of a run's checkpoints: ``<out>/checkpoints``."""
    return os.path.join(out, "checkpoints")


def step_dir(root: str, step: int) -> str:
    """The folder of the checkpoint after ``step`` steps: ``<root>/step_00000120``."""
    return os.path.join(root, f"step_{step:08d}")


def read_meta(path: str) -> Dict[str, Any]:
    """A checkpoint's ``meta.json``; :class:`CheckpointError` naming the file when it is unusable."""
    try:
        return files.read_meta(path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def rng_state() -> Dict[str, Any]:
    """This process's random generators' states (Python, NumPy, torch, and CUDA when present)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore the generators' states that :func:`rng_state` returned."""
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


def refuse_other_first_order_layout(path: str, checkpoint_keys: Iterable[str], model_keys: Iterable[str]) -> None:
    """A one-line error for a checkpoint whose first-order weights are in the other layout than the model's
    (``model.params.first_order``: separate ``w_<feature>`` tables or the model's own tables,
    :mod:`denoisrec.models.first_order`); e.g. a run resumed with another ``model.params.first_order``.
    """
    saved, now = has_table_layout(checkpoint_keys), has_table_layout(model_keys)
    if saved != now:
        layout = "table" if saved else "fused"
        raise CheckpointError(
            f"{path}: written with model.params.first_order={layout} (first-order weights "
            f"{'in their own w_<feature> tables' if saved else 'in the embedding tables'}), the model now has the "
            f"other layout: resume with --set model.params.first_order={layout}"
        )


class Checkpointer:
    """Save, find and load checkpoints under ``<out>/checkpoints`` (every method is collective).

    Args:
        out: the run's output directory.
        keep: how many step checkpoints to keep (the highest step numbers; ``best`` is separate).
        env: this rank's place in the world.

    After :meth:`resolve`, ``skipped`` lists the newer checkpoints that were passed over (``"path: why"``) and
    ``note`` is the one line for a checkpoint of an older format, verified less (``None`` otherwise).
    """

    def __init__(self, out: str, keep: int, env: DistEnv) -> None:
        if keep < 1:
            raise ValueError(f"run.keep_checkpoints={keep}: must be >= 1")
        self.root = checkpoint_root(out)
        self.keep = keep
        self.env = env
        self.skipped: List[str] = []
        self._skipped_dirs: List[str] = []
        self.note: Optional[str] = None

    # ----------------------------------------------------------------------------------------- finding
    def latest(self) -> Optional[str]:
        """The newest complete and intact ``step_*`` checkpoint by step number (``None`` when there is none);
        ``self.skipped`` gets the newer ones that are not (``"path: why"``).
        """
        self.skipped, self._skipped_dirs = [], []
        for _, path in reversed(files.list_steps(self.root)):
            why = files.problem(path)
            if why is None:
                return os.path.realpath(path)
            self.skipped.append(why)
            self._skipped_dirs.append(path)
        return None

    def resolve(self, resume: str) -> Optional[str]:
        """``auto`` → the newest complete and verified checkpoint, or ``None`` when there is no checkpoint at all;
        ``never`` → ``None``; else that directory, which must be complete and intact.

        ``auto`` falls back past damaged or incomplete newer checkpoints (they are renamed ``damaged-step_*``
        so that they are neither resumed from nor counted when pruning; ``self.skipped`` names them), and is
        an error when checkpoints exist but none is usable: a run never silently restarts from step 0.
        Rank 0 decides and broadcasts, so every rank resumes from the same place.
        """
        path: Optional[str] = None
        error: Optional[str] = None
        if self.env.is_main:
            if resume == "never":
                path = None
            elif resume == "auto":
                path = self.latest()
                if path is None and self.skipped:
                    error = (
                        f"{self.root}: {len(self.skipped)} checkpoint(s) but none is complete and intact, "
                        f"refusing to start again from step 0 ({'; '.join(self.skipped)}); move them away, or start "
                        "fresh with --set run.resume=never run.overwrite=true"
                    )
                if path is not None:
                    for bad in self._skipped_dirs:
                        error = error or self._set_aside(bad)
            elif not os.path.isdir(resume):
                error = f"run.resume={resume!r}: no such checkpoint directory (expected auto, never or a path)"
            else:
                why = files.problem(resume)
                if why is not None:
                    error = f"run.resume={resume!r}: not a complete, intact checkpoint: {why}"
                else:
                    path = os.path.realpath(resume)
        note = files.note(path) if self.env.is_main and path is not None and not error else None
        path, error, self.skipped, self.note = _broadcast((path, error, self.skipped, note))
        if error:
            raise CheckpointError(error)
        return path

    def _set_aside(self, bad: str) -> Optional[str]:
        """Rename a damaged checkpoint ``damaged-step_<N>`` (``damaged-step_<N>.2``, ... when that name is
        taken by an earlier damage of the same step); the error line when the rename fails.
        """
        target = os.path.join(self.root, "damaged-" + os.path.basename(bad))
        n = 1
        while os.path.lexists(target if n == 1 else f"{target}.{n}"):
            n += 1
        target = target if n == 1 else f"{target}.{n}"
        try:
            os.replace(bad, target)
        except OSError as e:
            return (
                f"{bad}: damaged, and it could not be renamed {os.path.basename(target)} so that resume skips it "
                f"({e.strerror or e}); move it away and launch again"
            )
        return None

    # ------------------------------------------------------------------------------------------ saving
    def _write(self, path: str, model: nn.Module, opt: Optional[TrainOptimizer], meta: Dict[str, Any]) -> None:
        """Write into a temporary directory, fsync, checksum, then rename it to ``path`` (atomic publication:
        ``path`` is either the previous complete checkpoint or the new one, never a partial one).

        A failed write on any rank (a full disk, a read-only folder) removes the temporary directory and
        raises the same one-line ``OSError`` on every rank: the earlier checkpoints stay as they were.
        """
        tmp: Optional[str] = None
        error: Optional[str] = None
        if self.env.is_main:
            try:
                os.makedirs(self.root, exist_ok=True)
                for name in os.listdir(self.root):  # leftovers of saves that were killed
                    if name.startswith((".tmp-", ".old-")):
                        shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
            except OSError as e:
                error = _save_error(self.root, e)
            tmp = os.path.join(self.root, f".tmp-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
        tmp, error = _broadcast((tmp, error))
        if error is None:
            try:
                state: Dict[str, Any] = {"model": model.state_dict()}
                if opt is not None:
                    state["sparse_optim"] = opt.sparse.state_dict()
                    state["dense_optim"] = opt.dense.state_dict()
                dcp.save(state, checkpoint_id=tmp)
                os.makedirs(os.path.join(tmp, "rng"), exist_ok=True)
                rng_file = os.path.join(tmp, "rng", f"rank{self.env.rank}.pt")
                torch.save(rng_state(), rng_file)
                files.fsync_path(rng_file)
            except (Exception, CheckpointException) as e:  # noqa: BLE001 - DCP's CheckpointException is a BaseException
                error = _save_error(path, e)
            error = _first_of_ranks(error)
        if error is None and self.env.is_main:
            try:
                self._publish(tmp, path, opt, meta)
            except OSError as e:
                error = _save_error(path, e)
        error = _broadcast(error)
        if error is not None:
            if self.env.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise StorageError(error)

    def _publish(self, tmp: str, path: str, opt: Optional[TrainOptimizer], meta: Dict[str, Any]) -> None:
        """Rank 0: checksum the files, write ``meta.json`` last, rename ``tmp`` to ``path``."""
        files.fsync_tree(tmp)
        meta = files.seal_meta(
            {
                "format_version": FORMAT_VERSION,
                "with_optimizer": opt is not None,
                **meta,
                "files": files.checksums(tmp),
            }
        )
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        files.fsync_path(tmp)
        old = None
        if os.path.exists(path):  # the same step saved again: keep the old one until the new one is in place
            old = os.path.join(self.root, f".old-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
        os.replace(tmp, path)
        files.fsync_path(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def save(self, step: int, model: nn.Module, opt: TrainOptimizer, meta: Dict[str, Any]) -> str:
        """Write ``step_<step>``, then point ``latest`` at it, then delete all but the ``keep`` highest steps."""
        path = step_dir(self.root, step)
        self._write(path, model, opt, meta)
        if self.env.is_main:
            tmp_link = os.path.join(self.root, LATEST + ".tmp")
            if os.path.lexists(tmp_link):
                os.remove(tmp_link)
            os.symlink(os.path.basename(path), tmp_link)
            os.replace(tmp_link, os.path.join(self.root, LATEST))
            files.fsync_path(self.root)
            steps = [p for s, p in files.list_steps(self.root) if p != path]
            for old in steps[: max(0, len(steps) + 1 - self.keep)]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()
        return path

    def save_best(self, model: nn.Module, meta: Dict[str, Any]) -> str:
        """The model alone (no optimizer state), at ``<out>/checkpoints/best``."""
        path = os.path.join(self.root, BEST)
        self._write(path, model, None, meta)
        return path

    def export_model(
        self,
        model: nn.Module,
        path: str,
        spec: ModelSpec,
        schema: Dict[str, Any],
        extra: Optional[Dict[str, Any]] = None,
    ) -> str:
        """The model alone, unsharded, as a model file at ``path`` (``<out>/model.pt``; the format of
        :mod:`denoisrec.models.model_file`): every rank sends its shards to rank 0, which writes the file.
        Collective; returns ``path`` on every rank.
        """
        state = unsharded_state_dict(model, self.env)
        error: Optional[str] = None
        if self.env.is_main:
            try:
                save_model_file(path, spec, state, schema, extra)  # type: ignore[arg-type]  # rank 0: not None
            except (OSError, RuntimeError) as e:  # a full disk: torch.save's "basic_ios::clear", inline_container
                for leftover in (f"{path}.tmp",):
                    if os.path.exists(leftover):
                        os.remove(leftover)
                why = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())[:200]
                error = (
                    f"{path}: could not write the model file ({why}; a full disk?); nothing partial was kept and the "
                    "checkpoints are intact: free space and launch again (it resumes and exports)"
                )
        error = _broadcast(error)
        if error is not None:
            raise StorageError(error)
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
            saved = list(dcp.FileSystemReader(path).read_metadata().state_dict_metadata)
        except Exception:  # unreadable: dcp.load below says so
            saved = []
        refuse_unfolded_checkpoint(path, saved, state["model"])
        refuse_other_first_order_layout(path, saved, state["model"])
        try:
            dcp.load(state, checkpoint_id=path)
        except (
            Exception,
            CheckpointException,
        ) as e:  # DCP's CheckpointException (a BaseException) carries every rank's failure
            first = _first_error(e)
            if "key" not in first.lower():  # not a layout mismatch: unreadable files
                raise CheckpointError(
                    f"{path}: could not read the checkpoint's files ({first}): damaged, or written with other "
                    f"optimizer settings (optim.sparse={meta.get('sparse_optimizer', 'unknown')}); resume from an "
                    "older checkpoint with --resume PATH"
                ) from e
            raise CheckpointError(
                f"{path}: could not load the checkpoint written by {meta.get('world_size')} rank(s) with plan "
                f"{_plan_types(meta)} onto {self.env.world_size} rank(s) with the current plan "
                f"({first}). Tables re-shard on load between table_wise, column_wise "
                "and row_wise plans, but data_parallel tables are trained by the dense optimizer and the others by "
                "the fused sparse one, so their optimizer states differ: resume without --sharding (the automatic "
                "plan keeps each table's type from the checkpoint's plan), or with --sharding "
                f"{_plan_types(meta)[0] if len(_plan_types(meta)) == 1 else 'unset'}."
            ) from e
        model.load_state_dict(state["model"])
        if opt is not None:
            opt.sparse.load_state_dict(state["sparse_optim"])
            opt.dense.load_state_dict(state["dense_optim"])
            # FBGEMM keeps Adam's bias-correction step outside the state dict: set it from the data position.
            opt.sparse.set_optimizer_step(int(meta["step"]))
            opt.optimizer.zero_grad()
        if int(meta.get("world_size", -1)) == self.env.world_size:
            rng_file = os.path.join(path, "rng", f"rank{self.env.rank}.pt")
            try:
                set_rng_state(torch.load(rng_file, weights_only=False))
            except Exception as e:  # noqa: BLE001 - any unpickling failure means the same: a damaged file
                raise CheckpointError(
                    f"{rng_file}: not a readable RNG state, damaged ({type(e).__name__}: {str(e)[:200]})"
                ) from e
        return meta


def _save_error(path: str, e: BaseException) -> str:
    """One line for a save that failed: which checkpoint, why (a full disk: "No space left on device"), and
    that the earlier checkpoints are intact.
    """
    inner = _first_error(e) if isinstance(e, CheckpointException) else None
    if isinstance(e, OSError) and e.strerror:
        why = f"{e.filename + ': ' if e.filename and e.filename != path else ''}{e.strerror}"
    else:
        why = f"{inner or f'{type(e).__name__}: {e}'}; a full disk?"
    why = " ".join(why.split())[:300]
    return (
        f"{path}: could not save the checkpoint ({why}); nothing partial was kept and the earlier checkpoints are "
        "intact: free space (or fix the folder) and launch again to resume"
    )


def _first_of_ranks(error: Optional[str]) -> Optional[str]:
    """The first rank's error (rank order), on every rank; ``None`` when no rank has one (a collective)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return error
    every: List[Optional[str]] = [None] * dist.get_world_size()
    dist.all_gather_object(every, error)
    return next((e for e in every if e is not None), None)


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

"""Sharded ↔ unsharded state: a sharded model's tensors gathered whole to rank 0, and copied back into shards.

:func:`unsharded_state_dict` is what ``Checkpointer.export_model`` writes as the model file
(``<out>/model.pt``, :mod:`denoisrec.models.model_file`): every rank takes part (the embedding tables are
gathered shard by shard to rank 0). Only the model is exported (the ``model.`` part of ``TrainModule``, less
the denoiser's tables folded into its collection: DeCA's MF heads, the observation model's context tower,
:mod:`~denoisrec.trainer.distributed.shared_lookup`); the
denoiser is a training-time object. Rank 0 holds one full table at a time, so every single table must fit
in its memory; for tables beyond that, use the DCP checkpoint directly.

:func:`load_unsharded_state_dict` is the inverse: full tensors (a model file's ``state_dict``) into a
sharded model, every rank copying the slices of its own shards (e.g. a frozen prior for DeCA(p), or
fine-tuning from an exported model).

Example::

    state = unsharded_state_dict(dmp, env)   # full tensors on rank 0, None elsewhere
    load_unsharded_state_dict(dmp, load_model_file("model.pt").model.state_dict())   # every rank
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.tensor import DTensor

from denoisrec.trainer.distributed.env import DistEnv
from denoisrec.trainer.distributed.sharding import unwrap

PREFIX = "model."


def unsharded_state_dict(model: nn.Module, env: DistEnv, prefix: str = PREFIX) -> Optional[Dict[str, torch.Tensor]]:
    """The ``prefix`` part of ``model.state_dict()`` with every sharded tensor gathered, on rank 0 (CPU).

    Returns ``None`` on the other ranks. Keys lose ``prefix``.
    """
    state = model.state_dict()
    # The denoiser's tables folded into the model's collection (DeCA's MFs, the context tower) are not part of f.
    lookup = getattr(unwrap(model), "shared_lookup", None)
    keys = sorted(k for k in state if k.startswith(prefix) and (lookup is None or lookup.exported(k)))
    if dist.is_initialized() and env.world_size > 1:  # every rank must walk the same keys in the same order
        all_keys = [None] * env.world_size
        dist.all_gather_object(all_keys, keys)
        if any(k != keys for k in all_keys):
            raise RuntimeError("export: the ranks' state dicts differ in their keys; cannot gather the model")
    out: Dict[str, torch.Tensor] = {}
    for k in keys:
        v = state[k]
        if isinstance(v, ShardedTensor):
            full = torch.empty(v.size(), dtype=v.dtype, device=env.device) if env.is_main else None
            v.gather(dst=0, out=full)
            t = full
        elif isinstance(v, DTensor):
            t = v.full_tensor()
        else:
            t = v
        if env.is_main and t is not None:
            out[k[len(prefix) :]] = t.detach().cpu().clone()
    return out if env.is_main else None


def load_full_state(
    module: nn.Module,
    full: Mapping[str, torch.Tensor],
    rename: Callable[[str], str] = lambda k: k,
    where: str = "state dict",
) -> None:
    """Copy full (unsharded) tensors into ``module``'s state, every rank the slices of its own shards.

    Every key of ``module.state_dict()`` must be in ``full`` (after ``rename``) with the full shape; a
    ``ShardedTensor`` or ``DTensor`` receives its local shards' slices, a plain tensor the whole. Every rank
    calls it with the same ``full``.
    """
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    with torch.no_grad():
        for key, dst in module.state_dict().items():
            src_key = rename(key)
            if src_key not in full:
                raise ValueError(
                    f"{where}: no tensor {src_key!r} (needed for {key!r}); "
                    f"it holds {sorted(full)[:8]}{' ...' if len(full) > 8 else ''}"
                )
            src = full[src_key]
            if tuple(src.shape) != tuple(dst.size()):
                raise ValueError(
                    f"{where}: {src_key!r} has shape {tuple(src.shape)}, the model needs {tuple(dst.size())}"
                )
            if isinstance(dst, ShardedTensor):
                for shard in dst.local_shards():
                    md = shard.metadata
                    shard.tensor.copy_(src[tuple(slice(o, o + n) for o, n in zip(md.shard_offsets, md.shard_sizes))])
            elif isinstance(dst, DTensor):
                shape, offset = compute_local_shape_and_global_offset(dst.shape, dst.device_mesh, dst.placements)
                dst.to_local().copy_(src[tuple(slice(o, o + n) for o, n in zip(offset, shape))])
            else:
                dst.copy_(src)


def load_unsharded_state_dict(model: nn.Module, full: Mapping[str, torch.Tensor], prefix: str = PREFIX) -> None:
    """Copy full (unsharded) tensors into the ``prefix`` part of a sharded model; every rank calls it with the
    same ``full`` (keys without ``prefix``). The key sets must match exactly.
    """
    state = model.state_dict()
    keys = {k[len(prefix) :] for k in state if k.startswith(prefix)}
    if keys != set(full):
        raise ValueError(
            f"state dict does not match the model: missing {sorted(keys - set(full))}, "
            f"unexpected {sorted(set(full) - keys)}"
        )
    load_full_state(getattr(unwrap(model), prefix.rstrip(".")), full)

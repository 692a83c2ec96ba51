"""Export: the trained, sharded model as one unsharded model file (``<out>/model.pt``).

Every rank takes part (the embedding tables are gathered shard by shard to rank 0); rank 0 writes the file
with :func:`denoisrec.models.save_model_file`. Only the model is exported (the ``model.`` part of
``TrainModule``); the denoiser is a training-time object. The format is in docs/checkpoints.md.

Rank 0 holds one full table at a time, so every single table must fit in its memory; for tables beyond
that, use the DCP checkpoint directly.

:func:`load_unsharded_state_dict` is the inverse: full tensors (a model file's ``state_dict``) into a
sharded model, every rank copying the slices of its own shards (e.g. a frozen prior for DeCA(p), or
fine-tuning from an exported model).

Example::

    state = unsharded_state_dict(dmp, env)   # full tensors on rank 0, None elsewhere
    load_unsharded_state_dict(dmp, load_model_file("model.pt").model.state_dict())   # every rank
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.tensor import DTensor

from denoisrec.trainer.dist import DistEnv

PREFIX = "model."


def unsharded_state_dict(model: nn.Module, env: DistEnv, prefix: str = PREFIX) -> Optional[Dict[str, torch.Tensor]]:
    """The ``prefix`` part of ``model.state_dict()`` with every sharded tensor gathered, on rank 0 (CPU).

    Returns ``None`` on the other ranks. Keys lose ``prefix``.
    """
    state = model.state_dict()
    keys = sorted(k for k in state if k.startswith(prefix))
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
            out[k[len(prefix):]] = t.detach().cpu().clone()
    return out if env.is_main else None


def load_unsharded_state_dict(model: nn.Module, full: Mapping[str, torch.Tensor], prefix: str = PREFIX) -> None:
    """Copy full (unsharded) tensors into the ``prefix`` part of a sharded model; every rank calls it with the
    same ``full`` (keys without ``prefix``). Shapes and the key set must match exactly."""
    state = model.state_dict()
    keys = {k[len(prefix):] for k in state if k.startswith(prefix)}
    if keys != set(full):
        raise ValueError(f"state dict does not match the model: missing {sorted(keys - set(full))}, "
                         f"unexpected {sorted(set(full) - keys)}")
    for k, v in state.items():
        if not k.startswith(prefix):
            continue
        src = full[k[len(prefix):]]
        if tuple(src.shape) != tuple(v.shape):
            raise ValueError(f"{k}: shape {tuple(src.shape)} in the state dict, {tuple(v.shape)} in the model")
        if isinstance(v, ShardedTensor):
            for shard in v.local_shards():
                md = shard.metadata
                window = tuple(slice(o, o + n) for o, n in zip(md.shard_offsets, md.shard_sizes))
                shard.tensor.detach().copy_(src[window])
        elif isinstance(v, DTensor):
            raise NotImplementedError(f"{k}: loading full tensors into DTensor shards is not supported")
        else:
            v.detach().copy_(src)
    model.load_state_dict(state)

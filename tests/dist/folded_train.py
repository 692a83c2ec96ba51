"""On local gloo ranks (``conftest.launch``): DeCA(p) with its MF heads folded into the model's collection
(trainer/distributed/shared_lookup.py), trained by ``train()`` on N sharded ranks, uninterrupted and stopped
mid-run then resumed from its DCP checkpoint; rank 0 returns what it found (the other ranks None).

    launch(launched, 3, "DATA", "ROOT", "deca_p", {"pretrain_steps": 4, "mf_dim": 8})
"""

import os
from typing import Optional

import torch
import torch.distributed as dist
from observation_train import max_diff

from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.distributed.env import init_distributed
from denoisrec.trainer.train import train


def config(data: str, out: str, name: str, params: dict, **run) -> Config:
    cfg = Config()
    cfg.data.path = data
    cfg.data.global_batch_size = 384  # 16 steps per epoch on 1, 2 or 3 ranks
    cfg.model.embedding_dim = 8
    cfg.denoiser.name, cfg.denoiser.params = name, dict(params)
    cfg.run.out, cfg.run.epochs, cfg.run.log_every, cfg.run.progress = out, 1, 8, "none"
    for k, v in run.items():
        setattr(cfg.run, k, v)
    return cfg


def launched(data: str, root: str, name: str, params: dict) -> Optional[dict]:
    """This rank's part of the three runs; rank 0 returns the findings."""
    env = init_distributed("cpu")
    j = lambda *x: os.path.join(root, *x)  # noqa: E731
    full = train(config(data, j("full"), name, params))
    session = train(config(data, j("part"), name, params, checkpoint_every=5, stop_after_steps=7))
    resumed = train(config(data, j("part"), name, params, checkpoint_every=5))
    out = None
    if env.rank == 0:
        blob = [torch.load(j(r, "model.pt"), weights_only=True) for r in ("full", "part")]
        out = {
            "world": env.world_size,
            "steps": [full["steps"], session["steps"], resumed["steps"]],
            "resumed_from": resumed["resumed"]["from_step"],
            "diff_resumed": max_diff(blob[0]["state_dict"], blob[1]["state_dict"]),
            "metrics": [full["metrics"], resumed["metrics"]],
            "state_keys": sorted(blob[0]["state_dict"]),
            "plan": full["plan"],
        }
    dist.barrier()
    dist.destroy_process_group()
    return out

"""On local gloo ranks (``conftest.launch``): the observation model trained by ``train()`` on N ranks,
uninterrupted and stopped mid-epoch then resumed from its DCP checkpoint; rank 0 returns what it found (the
other ranks None).

    launch(launched, 3, "DATA", "ROOT")
"""

import json
import os
from typing import Optional

import torch
import torch.distributed as dist

from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.distributed.env import init_distributed
from denoisrec.trainer.train import train


def config(data: str, out: str, **run) -> Config:
    cfg = Config()
    cfg.data.path = data
    cfg.data.global_batch_size = 384  # 16 steps per epoch on 1, 2 or 3 ranks
    cfg.model.embedding_dim = 8
    cfg.denoiser.name = "observation_tce"
    cfg.denoiser.params = {"eps_max": 0.1, "num_gradual": 10, "hidden": [8]}
    cfg.run.out, cfg.run.epochs, cfg.run.log_every, cfg.run.progress = out, 1, 8, "none"
    for k, v in run.items():
        setattr(cfg.run, k, v)
    return cfg


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    return max(float((a[k] - b[k]).abs().max()) if a[k].numel() else 0.0 for k in a)


def launched(data: str, root: str) -> Optional[dict]:
    """This rank's part of the three runs; rank 0 returns the findings."""
    env = init_distributed("cpu")
    j = lambda *x: os.path.join(root, *x)  # noqa: E731
    full = train(config(data, j("full")))
    session = train(config(data, j("part"), checkpoint_every=5, stop_after_steps=7))
    resumed = train(config(data, j("part"), checkpoint_every=5))
    out = None
    if env.rank == 0:
        blob = [torch.load(j(r, "model.pt"), weights_only=True) for r in ("full", "part")]
        with open(j("full", "observation.json")) as f:
            diag = json.load(f)
        out = {
            "world": env.world_size,
            "steps": [full["steps"], session["steps"], resumed["steps"]],
            "resumed_from": resumed["resumed"]["from_step"],
            "diff_resumed": max_diff(blob[0]["state_dict"], blob[1]["state_dict"]),
            "metrics": [full["metrics"], resumed["metrics"]],
            "spec_features": [f for f, _ in blob[0]["spec"]["features"]],
            "schema_features": [f["name"] for f in blob[0]["schema"]["sparse"]],
            "state_keys": sorted(blob[0]["state_dict"]),
            "plan": full["plan"],
            "diag_features": sorted(diag["learned"]),
            "diag_errors": diag["errors"],
            "png": os.path.isfile(j("full", "observation.png")),
        }
    dist.barrier()
    dist.destroy_process_group()
    return out

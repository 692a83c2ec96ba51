"""On local gloo ranks (``conftest.launch``, 1 or more): every denoiser through the real trainer on a dataset,
then DeCA's parameter-update pattern and DeCA(p)'s checkpoint loading under DistributedModelParallel. Rank 0
returns a report (the other ranks None); the pytest side asserts on it.

    launch(launched, 2, "data/tiny", "/tmp/w", 6, False)

Report: ``{"train": {name: summary subset}, "updates": {name: [[changed prefixes per step]]},
"checkpoint": {"max_abs_diff": float}}``.
"""

import itertools
import json
import os
from typing import Dict, List, Optional

import torch
import torch.distributed as dist

from denoisrec.models import build_model, embedding_bag_collection
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.denoising.build import prepare_denoiser
from denoisrec.trainer.distributed.env import init_distributed
from denoisrec.trainer.factory import build_train_model
from denoisrec.trainer.loop.steps import Stepper
from denoisrec.trainer.module import denoiser_of
from denoisrec.trainer.run_setup import seed_everything
from denoisrec.trainer.train import train

# Hyperparameters that make each method act within a few steps (and the sharding it runs under).
METHODS = [
    ("bce", {}, None),
    ("tce", {"eps_max": 0.2, "num_gradual": 2}, None),
    ("rce", {"beta": 0.2}, None),
    ("lcd", {"start_step": 2}, None),
    ("lcd_re", {"start_step": 2}, None),
    ("bootstrap_soft", {}, None),
    ("bootstrap_hard", {}, None),
    ("dart", {"t_m": 2, "tau_m": 0.2}, None),
    ("deca", {"mf_dim": 8}, None),
    ("deca_p", {"pretrain_steps": 3, "mf_dim": 8}, None),
    ("observation", {}, None),
    ("observation_tce", {"eps_max": 0.2}, None),
    ("observation_ids", {"form": "examination", "id_noise_dim": 4}, None),
]
# DeCA's models by the TrainModule's state-dict keys: the MF tables live in the model's collection (folded,
# trainer/distributed/shared_lookup.py), so f is the model's keys less those.
GROUPS = {
    "f": lambda k: k.startswith("model.") and ".embedding_bags.deca_" not in k,
    "g": lambda k: ".embedding_bags.deca_g_" in k,
    "h": lambda k: ".embedding_bags.deca_h_" in k,
    "h'": lambda k: ".embedding_bags.deca_hp_" in k,
    "f'": lambda k: k.startswith("denoiser.prior."),
}


def config(data: str, out: str, name: str, params: dict, sharding: Optional[str], steps: int, batch: int) -> Config:
    cfg = Config()
    cfg.data.path, cfg.data.batch_size, cfg.data.eval_batch_size = data, batch, 1024
    cfg.run.out, cfg.run.max_steps, cfg.run.log_every, cfg.run.epochs = out, steps, 2, 1
    cfg.denoiser.name, cfg.denoiser.params = name, dict(params)
    cfg.sharding.sharding_type = sharding
    cfg.model.embedding_dim = 8
    return cfg


def local_state(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """This rank's copy of every floating-point tensor of the module's state (local shards of sharded ones)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor
    from torch.distributed.tensor import DTensor

    out = {}
    for k, v in module.state_dict().items():
        if isinstance(v, ShardedTensor):
            ts = [s.tensor for s in v.local_shards()]
            v = torch.cat([t.reshape(-1) for t in ts]) if ts else torch.zeros(0)
        elif isinstance(v, DTensor):
            v = v.to_local()
        if torch.is_floating_point(v):
            out[k] = v.detach().clone().reshape(-1)
    return out


def changed_groups(before: Dict[str, torch.Tensor], after: Dict[str, torch.Tensor]) -> List[str]:
    """Model groups with at least one changed tensor, on any rank."""
    mine = {g for k in before for g, match in GROUPS.items() if match(k) and not torch.equal(before[k], after[k])}
    every: List = [None] * dist.get_world_size()
    dist.all_gather_object(every, sorted(mine))
    return sorted(set().union(*map(set, every)))


def build(cfg: Config, env):  # type: ignore[no-untyped-def]
    seed_everything(cfg.run.seed)
    schema = DataSchema.load(cfg.data.path)
    built = build_train_model(cfg, schema, env, cfg.data.batch_size)  # the trainer's factory
    model, opt = built.model, built.opt.optimizer
    reader = ParquetBatchReader(
        os.path.join(cfg.data.path, "train"), schema, cfg.data.batch_size, env.rank, env.world_size
    )
    return schema, model, opt, reader


def update_pattern(cfg: Config, env, steps: int) -> List[List[str]]:  # type: ignore[no-untyped-def]
    """The model groups each of ``steps`` training steps (the trainer's ``Stepper``, plain loop) changes."""
    _, model, opt, reader = build(cfg, env)
    pattern = []
    before = local_state(model.module)
    for _ in Stepper(model, opt, env.device, pipelined=False).run(itertools.islice(iter(reader), steps)):
        after = local_state(model.module)
        pattern.append(changed_groups(before, after))
        before = after
    return pattern


def checkpoint_roundtrip(data: str, work: str, env) -> dict:  # type: ignore[no-untyped-def]
    """Save an unsharded target model, load it as DeCA(p)'s prior under DMP, compare the logits; then zero and
    restore the prior's local tensors (phase 1's best-epoch restore) and compare again.
    """
    cfg = config(data, os.path.join(work, "ckpt_run"), "deca_p", {"mf_dim": 8}, "table_wise", 1, 128)
    schema = DataSchema.load(data)
    torch.manual_seed(7)
    ebc = embedding_bag_collection(
        [(f.name, f.num_embeddings) for f in schema.sparse], cfg.model.embedding_dim, device=torch.device("cpu")
    )
    reference = build_model(cfg.model.name, ebc, len(schema.dense), **cfg.model.params)
    path = os.path.join(work, "prior.pt")
    if env.rank == 0:
        torch.save(reference.state_dict(), path)
    dist.barrier()
    cfg.denoiser.params["prior_checkpoint"] = path
    _, model, opt, reader = build(cfg, env)
    prepare_denoiser(model, cfg, reader, opt, env.device, _Quiet())
    batch = next(iter(reader)).to(env.device)
    with torch.no_grad():
        got = denoiser_of(model).prior_logits(batch)
        want = reference(batch.dense_features, batch.sparse_features).reshape(-1)
    # Phase 1's best-epoch restore copies into local_tensors(f'): they must be the live (sharded) weights.
    from denoisrec.trainer.denoising.prior import local_tensors

    prior = denoiser_of(model).prior
    snap = [t.detach().clone() for t in local_tensors(prior)]
    with torch.no_grad():
        for t in local_tensors(prior):
            t.zero_()
        zeroed = denoiser_of(model).prior_logits(batch)
        for t, s in zip(local_tensors(prior), snap):
            t.copy_(s)
        restored = denoiser_of(model).prior_logits(batch)
    diff = torch.tensor(
        [
            float((got - want).abs().max()) if got.numel() else 0.0,
            float((restored - want).abs().max()) if got.numel() else 0.0,
            -float((zeroed - want).abs().max()) if got.numel() else 0.0,
        ]
    )
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return {"max_abs_diff": float(diff[0]), "restored_diff": float(diff[1]), "zeroed_min_change": -float(diff[2])}


def logged_keys(out: str) -> List[str]:
    """Keys of the last training record rank 0 logged (the denoiser's stats and ground-truth report)."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        train = [json.loads(x) for x in f if '"kind": "train"' in x]
    return sorted(train[-1]) if train else []


class _Quiet:
    def print(self, msg: str) -> None:
        pass


def launched(data: str, work: str, steps: int = 6, skip_checkpoint: bool = False) -> Optional[dict]:
    """This rank's part of every run; rank 0 returns the report."""
    env = init_distributed("cpu")
    report: dict = {"train": {}, "updates": {}}
    for name, params, sharding in METHODS:
        s = train(config(data, os.path.join(work, name), name, params, sharding, steps, 256))
        report["train"][name] = {
            "loss": s["loss"],
            "steps": s["steps"],
            "auc": s["metrics"]["test_clean"]["auc"],
            "world_size": s["world_size"],
            "logged": logged_keys(os.path.join(work, name)),
        }
    paper = {"objective": "paper", "C1": 10, "mf_dim": 8}
    report["updates"]["deca"] = update_pattern(
        config(data, os.path.join(work, "u1"), "deca", paper, None, 4, 128), env, 4
    )
    report["updates"]["deca_p"] = update_pattern(
        config(data, os.path.join(work, "u2"), "deca_p", {**paper, "pretrain_steps": 2}, None, 5, 128), env, 5
    )
    report["updates"]["deca_marginal"] = update_pattern(
        config(data, os.path.join(work, "u3"), "deca", {"mf_dim": 8}, None, 2, 128), env, 2
    )
    report["updates"]["deca_p_marginal"] = update_pattern(
        config(data, os.path.join(work, "u4"), "deca_p", {"pretrain_steps": 1, "mf_dim": 8}, None, 3, 128), env, 3
    )
    if not skip_checkpoint:
        report["checkpoint"] = checkpoint_roundtrip(data, work, env)
    dist.destroy_process_group()
    return report if env.rank == 0 else None

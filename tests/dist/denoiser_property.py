"""On local gloo ranks (``conftest.launch``): each rank takes its slice of one fixed global batch and applies a
denoiser for a few steps; rank 0 returns every sample's decisions (by sample id), the loss values, the
per-step stats and the ground-truth report.

    launch(launched, 3, [20, 0, 17], [["tce", {"eps_max": 0.4, "num_gradual": 3}]], 5, 0, 0)

DeCA's models read user / item ids from the batch's KJT; its MF tables (and DeCA(p)'s prior) are plain
replicated modules here, built from a fixed seed on every rank, so the decisions must still be those of one
process on the whole batch. With ``fold=True`` the denoiser's own tables (``needs.shared_tables``: DeCA's MF
heads, the observation model's tower) are folded into a small model's collection, which reads the same
``user_id`` / ``item_id`` (trainer/distributed/shared_lookup.py), and reach the denoiser through that model's forward.
"""

from types import SimpleNamespace
from typing import Any, List, Optional

import torch
import torch.distributed as dist
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.denoisers import DENOISERS, build_denoiser
from denoisrec.denoisers.mf import MFHeads
from denoisrec.models import embedding_bag_collection
from denoisrec.models.embeddings import ordered_values
from denoisrec.trainer.distributed.shared_lookup import fold_denoiser_tables

N_USERS, N_ITEMS = 13, 11


def global_batch(n: int, seed: int, no_pos_prefix: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    logits = torch.round(torch.randn(n, generator=g) * 4) / 2  # coarse values: many tied losses
    labels = (torch.rand(n, generator=g) < 0.5).float()
    labels[:no_pos_prefix] = 0.0  # lets a split give one rank no positives at all
    ids = torch.randperm(10_000, generator=g)[:n] + 5_000_000_000  # ids above 2^32: only low bits are used
    users = torch.randint(0, N_USERS, (n,), generator=g)
    items = torch.randint(0, N_ITEMS, (n,), generator=g)
    noisy = (torch.rand(n, generator=g) < 0.3).float()
    dense = torch.randn(n, 2, generator=g)
    return {
        "logits": logits,
        "labels": labels,
        "ids": ids,
        "users": users,
        "items": items,
        "noisy": noisy,
        "dense": dense,
    }


def batch_slice(b: dict, lo: int, hi: int) -> SimpleNamespace:
    n = hi - lo
    kjt = KeyedJaggedTensor(
        keys=["user_id", "item_id"],
        values=torch.cat([b["users"][lo:hi], b["items"][lo:hi]]),
        lengths=torch.ones(2 * n, dtype=torch.int32),
        stride=n,
    )
    return SimpleNamespace(sparse_features=kjt, dense_features=b["dense"][lo:hi], is_noisy=b["noisy"][lo:hi])


class MFPrior(nn.Module):
    """A stand-in for DeCA(p)'s prior f': ``(dense, KJT) → [B, 1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.mf = MFHeads(["p"], "user_id", "item_id", N_USERS, N_ITEMS, 4, "prior_", torch.device("cpu"))
        self.w = nn.Linear(2, 1)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.mf(kjt)["p"].unsqueeze(1) + self.w(dense)


class Target(nn.Module):
    """A stand-in target model with its own ``t_user_id`` / ``t_item_id`` collection (the fold's destination);
    its logits are not used (the check holds the logits fixed).
    """

    def __init__(self) -> None:
        super().__init__()
        self.ebc = embedding_bag_collection([("user_id", N_USERS), ("item_id", N_ITEMS)], 4, torch.device("cpu"))

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return ordered_values(self.ebc(kjt), ["user_id", "item_id"]).sum(1, keepdim=True)


def make(name: str, params: dict):  # type: ignore[no-untyped-def]
    torch.manual_seed(1234)  # identical auxiliary models on every rank
    context = {
        "tables": {"user_id": N_USERS, "item_id": N_ITEMS},
        "device": torch.device("cpu"),
        "prior": MFPrior(),
        "context_tables": {"user_id": N_USERS, "item_id": N_ITEMS},
    }
    return build_denoiser(name, context={k: context[k] for k in DENOISERS[name].NEEDS.injected}, **params)


def run(
    name: str, params: dict, sizes: list, rank: int, steps: int, seed: int, no_pos: int, fold: bool = False
) -> dict:
    n = sum(sizes)
    b = global_batch(n, seed, no_pos)
    lo = sum(sizes[:rank])
    hi = lo + sizes[rank]
    d = make(name, params)
    target = None
    if fold:
        target = Target()
        lookup = fold_denoiser_tables(target, d)
        assert lookup is not None and lookup.tables, name  # only denoisers with tables of their own
        target.register_forward_pre_hook(lookup.pre_hook)
    d.bind_run(steps, steps)  # schedules given as a share of the run (the observation model's warm-up)
    d.train()
    records = []
    ids = b["ids"]
    # Not the trainer's Stepper: no model and no optimizer here; the check reads each sample's gradient of the
    # denoiser's loss with respect to fixed logits (z.grad), which a model's training step cannot expose.
    for _step in range(steps):
        z = b["logits"][lo:hi].clone().requires_grad_(True)
        part = batch_slice(b, lo, hi)
        if target is not None:  # the model's lookup hands the denoiser its tables' pooled output
            target(part.dense_features, part.sparse_features)
        out = d(z, b["labels"][lo:hi], ids[lo:hi], part)
        out.loss.backward()
        # Data-parallel training averages gradients over ranks: z.grad / W is this sample's contribution.
        world = dist.get_world_size() if dist.is_initialized() else 1
        grad = z.grad if z.grad is not None else torch.zeros_like(z)
        rows = torch.stack(
            [
                ids[lo:hi].double(),
                out.dropped.double(),
                out.relabelled.double(),
                out.weight.double(),
                out.target.double(),
                grad.double() / world,
            ],
            1,
        )
        records.append(
            {
                "value": float(out.value),
                "rows": rows,
                "stats": {k: float(v) for k, v in out.stats.items()},
                "report": {k: float(v) for k, v in d.report().items()},
            }
        )
    return {"records": records}


def launched(sizes: list, cases: list, steps: int, seed: int, no_pos: int, fold: bool = False) -> Optional[list]:
    """One rank's part (``conftest.launch``): apply every case to this rank's slice; rank 0 returns, per case
    and step, the loss value, stats, report and every rank's rows, gathered (the other ranks return None).
    """
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert len(sizes) == world, (sizes, world)
    results = []
    for name, params in cases:
        res = run(name, params, sizes, rank, steps, seed, no_pos, fold)
        out = []
        for rec in res["records"]:
            gathered: List[Any] = [None] * world
            dist.all_gather_object(gathered, rec["rows"].tolist())
            out.append(
                {
                    "value": rec["value"],
                    "stats": rec["stats"],
                    "report": rec["report"],
                    "rows": [r for g in gathered for r in g],
                }
            )
        results.append(out)
    dist.destroy_process_group()
    return results if rank == 0 else None

"""Run under torchrun: each rank takes its slice of one fixed global batch and applies a denoiser for a
few steps; rank 0 writes every sample's decisions (by sample id) and the loss values to --out (JSON).

    torchrun --nproc_per_node 3 tests/dist/denoiser_property.py --sizes 20,0,17 \
        --cases '[["tce", {"eps_max": 0.4, "num_gradual": 3}]]' --out /tmp/x.json
"""

import argparse
import json

import torch
import torch.distributed as dist

from denoisrec.denoisers import build_denoiser


def global_batch(n: int, seed: int, no_pos_prefix: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    logits = torch.round(torch.randn(n, generator=g) * 4) / 2  # coarse values: many tied losses
    labels = (torch.rand(n, generator=g) < 0.5).float()
    labels[:no_pos_prefix] = 0.0  # lets a split give one rank no positives at all
    ids = torch.randperm(10_000, generator=g)[:n] + 5_000_000_000  # ids above 2^32: only low bits are used
    return logits, labels, ids


def run(name: str, params: dict, sizes: list, rank: int, steps: int, seed: int, no_pos: int) -> dict:
    n = sum(sizes)
    logits, labels, ids = global_batch(n, seed, no_pos)
    lo = sum(sizes[:rank])
    hi = lo + sizes[rank]
    d = build_denoiser(name, **params)
    d.train()
    records = []
    for step in range(steps):
        z = logits[lo:hi].clone().requires_grad_(True)
        out = d(z, labels[lo:hi], ids[lo:hi])
        out.loss.backward()
        # Data-parallel training averages gradients over ranks: z.grad / W is this sample's contribution.
        world = dist.get_world_size() if dist.is_initialized() else 1
        rows = torch.stack([ids[lo:hi].double(), out.dropped.double(), out.relabelled.double(),
                            out.weight.double(), out.target.double(), z.grad.double() / world], 1)
        records.append({"value": float(out.value), "rows": rows, "stats": {k: float(v) for k, v in out.stats.items()}})
    return {"records": records}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", required=True, help="rows per rank, e.g. 20,0,17")
    p.add_argument("--cases", required=True, help='JSON list of [denoiser name, params], e.g. [["tce", {}]]')
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-pos", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    sizes = [int(s) for s in a.sizes.split(",")]
    assert len(sizes) == world, (sizes, world)
    results = []
    for name, params in json.loads(a.cases):
        res = run(name, params, sizes, rank, a.steps, a.seed, a.no_pos)
        out = []
        for rec in res["records"]:
            gathered = [None] * world
            dist.all_gather_object(gathered, rec["rows"].tolist())
            out.append({"value": rec["value"], "stats": rec["stats"], "rows": [r for g in gathered for r in g]})
        results.append(out)
    if rank == 0:
        with open(a.out, "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

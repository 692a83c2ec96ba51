"""On 2 local gloo ranks (``conftest.launch``): every model sharded by DMP does what the same model does unsharded.

For each case: build the model on ``meta``, shard it (the case's sharding type), gather its full state,
load that into an unsharded copy on every rank, and check on this rank's batch that

- the sharded forward equals the unsharded one (eval mode),
- one training step (the trainer's ``Stepper``: fused sparse optimizer in backward + dense optimizer) changes
  every table and every dense tensor, with a finite loss,
- the full state from before the step loads back into the sharded model (``load_unsharded_state_dict``),
- the plan used the sharding type asked for and spread the tables over both ranks.

Rank 0 returns a report per case; any failed check raises (the launch fails with its message).

    launch(launched, 2, "DIR")
"""

from typing import Any, Dict, List

import torch
import torch.distributed as dist

from denoisrec.denoisers import build_denoiser
from denoisrec.models.first_order import fuse_state
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.distributed.env import init_distributed
from denoisrec.trainer.distributed.sharding import plan_summary
from denoisrec.trainer.distributed.unsharded import load_unsharded_state_dict, unsharded_state_dict
from denoisrec.trainer.factory import model_spec, shard_module
from denoisrec.trainer.loop.steps import Stepper
from denoisrec.trainer.module import TrainModule
from denoisrec.trainer.run_setup import seed_everything

CASES = [
    ("dlrm", {}, "table_wise"),
    ("dcnv2", {"cross_layers": 2, "structure": "stacked"}, "table_wise"),
    ("dcnv2", {"cross_layers": 2, "low_rank": 4, "structure": "parallel", "dropout": 0.1}, "column_wise"),
    ("deepfm", {"mlp": [16, 16], "dropout": 0.2, "first_order": "fused"}, "table_wise"),
    ("fm", {"first_order": "fused"}, "table_wise"),
    (
        "fm",
        {"first_order": "fused"},
        "column_wise",
    ),  # fused tables of 8 + 4 columns split by columns: the zero rows start in a shard
    ("fm", {"first_order": "table"}, "table_wise"),
    ("widedeep", {"mlp": [32, 16], "first_order": "fused"}, "data_parallel"),
]
FUSED = {"fm", "deepfm", "widedeep"}  # first_order=fused: their first-order rows in the tables' last 4 columns


def launched(data: str) -> List[Dict[str, Any]]:
    """Every case on this rank; rank 0 returns the report (model, sharding, forward difference, tensors,
    tables, loss), the other rank an empty list.
    """
    env = init_distributed("cpu")
    schema = DataSchema.load(data)
    reader = ParquetBatchReader(f"{data}/train", schema, 64 + 13 * env.rank, env.rank, env.world_size)
    batch = next(iter(reader))
    report: List[Dict[str, Any]] = []
    for name, params, sharding in CASES:
        cfg = Config()
        cfg.model.name, cfg.model.params, cfg.model.embedding_dim = name, dict(params), 8
        if name == "dcnv2" and sharding == "column_wise":
            cfg.model.embedding_dim = 16  # column-wise shards of width 8 (a multiple of 4)
        seed_everything(0)
        spec = model_spec(cfg, schema)
        module = TrainModule(spec.build(), build_denoiser("bce"))
        cfg.sharding.sharding_type = sharding
        built = shard_module(module, cfg, env, batch_size=64)  # the trainer's factory
        model, opt, plan = built.model, built.opt, built.plan
        info = plan_summary(plan)
        assert {t["sharding_type"] for t in info.values()} == {sharding}, (name, info)
        assert {r for t in info.values() for r in t["ranks"]} == {0, 1}, (name, info)

        box = [unsharded_state_dict(model, env)]
        dist.broadcast_object_list(box, src=0)
        before = box[0]
        if name in FUSED and params.get("first_order") == "fused":  # materialised by DMP: zero rows, uniform embeddings
            tables = [v for k, v in before.items() if ".embedding_bags.t_" in k]
            assert tables and all(t.shape[1] == 12 and not t[:, 8:].any() and t[:, :8].all() for t in tables), name
        ref = spec.build(torch.device("cpu"))
        ref.load_state_dict(before)
        ref.eval()
        model.eval()
        with torch.no_grad():
            _, (_, logits, _) = model(batch)
            expected = ref(batch.dense_features, batch.sparse_features).squeeze(-1)
        diff = float((logits - expected).abs().max())
        assert diff < 1e-5, (name, sharding, diff)

        model.train()
        value, _, _ = next(Stepper(model, opt.optimizer, env.device, pipelined=False).run(iter([batch])))
        assert torch.isfinite(value), (name, value)
        after = unsharded_state_dict(model, env)
        # ... and the full state from before the step loads back into the sharded model (every rank its shards)
        load_unsharded_state_dict(model, before)
        reloaded = unsharded_state_dict(model, env)
        if env.is_main:
            assert all(torch.equal(before[k], reloaded[k]) for k in before), (name, sharding, "reload differs")
            unchanged = [k for k in before if torch.equal(before[k], after[k])]
            assert not unchanged, (name, sharding, "unchanged after a step:", unchanged)
            tables = [k for k in before if ".embedding_bags." in k]
            report.append(
                {
                    "model": f"{name}/table" if params.get("first_order") == "table" else name,
                    "sharding": sharding,
                    "max_abs_diff": diff,
                    "tensors": len(before),
                    "tables": len(tables),
                    "loss": float(value),
                }
            )
        dist.barrier()
    diff = same_step_both_layouts(env, schema, batch)
    if env.is_main:
        report.append({"model": "deepfm", "sharding": "fused-vs-table", "max_abs_diff": diff})
    dist.destroy_process_group()
    return report


def same_step_both_layouts(env: Any, schema: DataSchema, batch: Any) -> float:
    """One training step of DeepFM in both first-order layouts from the same weights, element-wise Adagrad
    (sparse and dense): the largest difference between the fused model's state after it and the table model's
    (its ``w_`` tables moved into the fused columns).
    """
    after = {}
    start: Dict[str, torch.Tensor] = {}
    for layout in ("table", "fused"):
        cfg = Config()
        cfg.model.name, cfg.model.embedding_dim = "deepfm", 8
        cfg.model.params = {"mlp": [16, 16], "dropout": 0.2, "first_order": layout}
        cfg.optim.sparse, cfg.optim.dense = "adagrad", "adagrad"
        cfg.sharding.sharding_type = "table_wise"  # left to itself, the planner may keep small tables data-parallel
        seed_everything(0)
        built = shard_module(TrainModule(model_spec(cfg, schema).build(), build_denoiser("bce")), cfg, env, 64)
        if layout == "table":
            full = unsharded_state_dict(built.model, env)  # rank 0's; None elsewhere
            box = [{k: torch.rand_like(v) - 0.5 if ".w_" in k else v for k, v in full.items()} if full else None]
            dist.broadcast_object_list(box, src=0)
            start = box[0]
        load_unsharded_state_dict(built.model, start if layout == "table" else fuse_state(start))
        seed_everything(1)  # the same dropout masks in both
        next(Stepper(built.model, built.opt.optimizer, env.device, pipelined=False).run(iter([batch])))
        after[layout] = unsharded_state_dict(built.model, env)
    if not env.is_main:
        return 0.0
    want = fuse_state(after["table"])
    assert set(want) == set(after["fused"]), sorted(set(want) ^ set(after["fused"]))
    return max(float((want[k] - after["fused"][k]).abs().max()) for k in want)

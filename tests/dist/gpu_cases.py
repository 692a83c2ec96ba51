"""The GPU path's checks, written once for any device: under torchrun with ``--device cuda`` on one GPU in
``tests/trainer/test_gpu.py``; ``launched("cpu", ...)`` on gloo ranks (``conftest.launch``) in
``tests/trainer/test_gpu_cases_cpu.py``, so CPU CI runs the same code.

Cases (``--cases``, comma-separated); each raises on a failed check and returns what it measured:

- ``sharding``: DLRM sharded by DMP with every sharding type TorchRec's sharder offers on the device
  (``row_wise``, ``table_row_wise``, ``grid_shard`` on CUDA), each forced on every table: the plan uses it,
  the sharded forward equals the unsharded model's, one step (fused sparse optimizer in backward: row-wise
  Adagrad, and Adam on CUDA) changes every table. A type the planner cannot place on this topology is
  reported as refused, with the planner's message.
- ``pipeline``: ``TrainPipelineSparseDist`` against the plain step (the trainer's ``Stepper``), two copies of
  one model, the same batches: per-step losses and final parameters.
- ``checkpoint``: ``train()`` stopped mid-epoch with a checkpoint, then resumed, against an uninterrupted run.
- ``denoisers``: every registered denoiser's step (loss + backward) under :class:`HostSyncGuard` in
  ``error`` mode (on CUDA: ``torch.cuda.set_sync_debug_mode("error")``); DeCA and DeCA(p), whose loss looks
  up sharded tables (TorchRec's input distribution syncs by design), in ``warn`` mode with no sync issued
  from denoisrec's own code.
- ``trainer_step``: the trainer's step (plain and pipelined) in ``warn`` mode: no sync issued from
  denoisrec's code; TorchRec's / FBGEMM's own syncs are listed.

Rank 0 writes ``{case: result}`` as JSON to ``--out``.
"""

import argparse
import itertools
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist
from host_sync import HostSyncGuard

from denoisrec.denoisers import DENOISERS
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.distributed.env import DistEnv, init_distributed
from denoisrec.trainer.distributed.sharding import plan_summary, unwrap
from denoisrec.trainer.distributed.unsharded import unsharded_state_dict
from denoisrec.trainer.factory import build_module, model_spec, shard_module
from denoisrec.trainer.loop.steps import Stepper
from denoisrec.trainer.module import denoiser_of
from denoisrec.trainer.run_setup import seed_everything
from denoisrec.trainer.train import train

# Schedules ramped from the first step, so T-CE's and DART's radix select runs in every guarded step.
RAMPED = {
    "tce": {"num_gradual": 1},
    "dart": {"t_m": 1},
    "deca_p": {"pretrain_steps": 0},
    "deca": {"objective": "paper", "C1": 10},
}
TABLE_LOOKUPS = ("deca", "deca_p", "observation", "observation_tce")  # loss runs sharded lookups of its own
BATCH = 96


def config(data: str, denoiser: str = "bce", sparse: str = "rowwise_adagrad") -> Config:
    cfg = Config()
    cfg.data.path, cfg.model.name, cfg.model.embedding_dim = data, "dlrm", 16
    cfg.denoiser.name, cfg.denoiser.params = denoiser, dict(RAMPED.get(denoiser, {}))
    cfg.optim.sparse = sparse
    return cfg


def sharded(cfg: Config, schema: DataSchema, env: DistEnv, constraints: Any = None):  # type: ignore[no-untyped-def]
    """The trainer's build: module → fused sparse optimizer → plan → DMP → combined optimizer."""
    seed_everything(cfg.run.seed)
    built = shard_module(build_module(cfg, schema), cfg, env, BATCH, constraints)  # the trainer's factory
    return built.model, built.opt, built.plan


def batches(data: str, schema: DataSchema, env: DistEnv, n: int) -> List[Any]:
    """``n`` batches of this rank's share; uneven across ranks (rank r reads BATCH + 7·r rows)."""
    pin = env.device.type == "cuda"
    reader = ParquetBatchReader(
        os.path.join(data, "train"), schema, BATCH + 7 * env.rank, env.rank, env.world_size, pin_memory=pin
    )
    out = list(itertools.islice(iter(reader), n))
    assert len(out) == n, f"{data}: fewer than {n} batches per rank"
    return out


def full_state(model: Any, env: DistEnv) -> Dict[str, torch.Tensor]:
    """The unsharded state on every rank (gathered on rank 0, then broadcast)."""
    box = [unsharded_state_dict(model, env)]
    if env.world_size > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def max_state_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()), default=0.0)


# ------------------------------------------------------------------------------------------------- cases


def case_sharding(a: argparse.Namespace, env: DistEnv, schema: DataSchema) -> Dict[str, Any]:
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import ParameterConstraints

    from denoisrec.trainer.distributed.sharding import embedding_tables

    batch = batches(a.data, schema, env, 1)[0].to(env.device)
    offered = EmbeddingBagCollectionSharder().sharding_types(env.device.type)
    optimizers = ["rowwise_adagrad"] + (["adam"] if env.device.type == "cuda" else [])
    results: List[Dict[str, Any]] = []
    for stype, sparse in itertools.product(offered, optimizers):
        cfg = config(a.data, sparse=sparse)
        cfg.optim.dense = "adam"
        tables = embedding_tables(build_module(cfg, schema))
        try:
            model, opt, plan = sharded(
                cfg, schema, env, {t: ParameterConstraints(sharding_types=[stype]) for t in tables}
            )
        except Exception as e:  # the planner found no placement of this type on this topology
            results.append(
                {
                    "sharding": stype,
                    "optimizer": sparse,
                    "planned": False,
                    "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                }
            )
            continue
        info = plan_summary(plan)
        assert {t["sharding_type"] for t in info.values()} == {stype}, (stype, info)
        before = full_state(model, env)
        ref = model_spec(cfg, schema).build(env.device)
        ref.load_state_dict({k: v.to(env.device) for k, v in before.items()})
        model.eval(), ref.eval()
        with torch.no_grad():
            _, (_, logits, _) = model(batch)
            expected = ref(batch.dense_features, batch.sparse_features).squeeze(-1).float()
        diff = float((logits - expected).abs().max())
        assert diff <= a.tol, (stype, sparse, "sharded forward differs from the unsharded model", diff)
        model.train()
        _, _, out = next(Stepper(model, opt.optimizer, env.device, pipelined=False).run(iter([batch])))
        loss = out.loss  # the step's loss tensor (the trainer's one step ran backward and the update)
        after = full_state(model, env)
        unchanged = [k for k in before if ".t_" in k and torch.equal(before[k], after[k])]
        assert torch.isfinite(loss).item() and not unchanged, (stype, sparse, float(loss), unchanged)
        results.append(
            {
                "sharding": stype,
                "optimizer": sparse,
                "planned": True,
                "max_abs_diff": diff,
                "loss": float(loss),
                "tables": len(info),
            }
        )
        del model, opt
    return {"offered": offered, "results": results}


def run_steps(cfg: Config, schema: DataSchema, env: DistEnv, data: List[Any], pipelined: bool) -> Dict[str, Any]:
    model, opt, _ = sharded(cfg, schema, env)
    stepper = Stepper(model, opt.optimizer, env.device, pipelined)
    values = [float(v.detach()) for v, _, _ in stepper.run(iter(data))]
    stepper.pause()
    return {"values": values, "state": full_state(model, env), "modules": stepper.pipelined_modules}


def case_pipeline(a: argparse.Namespace, env: DistEnv, schema: DataSchema) -> Dict[str, Any]:
    data = batches(a.data, schema, env, 8)
    cfg = config(a.data, "tce")
    plain = run_steps(cfg, schema, env, data, pipelined=False)
    piped = run_steps(cfg, schema, env, data, pipelined=True)
    assert len(plain["values"]) == len(piped["values"]) == len(data)
    loss_diff = max(abs(x - y) for x, y in zip(plain["values"], piped["values"]))
    param_diff = max_state_diff(plain["state"], piped["state"])
    assert piped["modules"] >= 1, "TrainPipelineSparseDist drove no sharded module"
    assert loss_diff <= a.tol and param_diff <= a.tol, ("pipeline differs from the plain step", loss_diff, param_diff)
    return {
        "losses_plain": plain["values"],
        "losses_pipelined": piped["values"],
        "max_loss_diff": loss_diff,
        "max_param_diff": param_diff,
        "pipelined_modules": piped["modules"],
    }


def case_checkpoint(a: argparse.Namespace, env: DistEnv, schema: DataSchema) -> Dict[str, Any]:
    def cfg_for(out: str, **run: Any) -> Config:
        cfg = config(a.data, "tce")
        cfg.data.batch_size = 2 * BATCH
        cfg.run.device, cfg.run.out, cfg.run.epochs, cfg.run.max_steps = a.device, out, 1, 12
        cfg.run.progress, cfg.run.log_every, cfg.run.eval_every = "log", 4, 0
        for k, v in run.items():
            setattr(cfg.run, k, v)
        return cfg

    root = os.path.join(a.root, "checkpoint")
    full = train(cfg_for(os.path.join(root, "full")))
    part = train(cfg_for(os.path.join(root, "part"), checkpoint_every=4, stop_after_steps=7))
    resumed = train(cfg_for(os.path.join(root, "part"), checkpoint_every=4, resume="auto"))
    assert part["interrupted"] and part["steps"] == 7, part
    assert resumed["resumed"]["from_step"] == 7 and resumed["steps"] == full["steps"] == 12, resumed
    load = lambda p: torch.load(os.path.join(root, p, "model.pt"), weights_only=True)["state_dict"]  # noqa: E731
    diff = max_state_diff(load("full"), load("part"))
    assert diff <= a.tol, ("resumed run differs from the uninterrupted one", diff)
    return {
        "steps": full["steps"],
        "stopped_at": part["steps"],
        "max_param_diff": diff,
        "device": resumed["device"],
        "loss_full": full["loss"],
        "loss_resumed": resumed["loss"],
    }


def case_denoisers(a: argparse.Namespace, env: DistEnv, schema: DataSchema) -> Dict[str, Any]:
    # On CPU the radix select may stop early by reading its histogram on the host (free there); the GPU
    # path runs every round on device. Run the GPU path here, so the guard checks the code CUDA runs.
    import inspect

    from denoisrec.denoisers import collectives

    names = [
        n
        for n, p in inspect.signature(collectives.radix_select).parameters.items()
        if p.default is not inspect.Parameter.empty
    ]  # group, extra, early_exit, sums, hint
    collectives.radix_select.__defaults__ = tuple(False if n == "early_exit" else None for n in names)
    data = [b.to(env.device) for b in batches(a.data, schema, env, 3)]
    # Not the trainer's Stepper: this case guards the denoiser's loss + backward alone (the sharded forward,
    # whose TorchRec syncs are by design, runs outside the guard) and updates nothing.
    out: Dict[str, Any] = {}
    for name in sorted(DENOISERS):
        model, _, _ = sharded(config(a.data, name), schema, env)
        module, den = unwrap(model), denoiser_of(model)
        mode = "warn" if name in TABLE_LOOKUPS else "error"
        guards = []
        for i, batch in enumerate(data):
            logits = module.model(batch.dense_features, batch.sparse_features).squeeze(-1).float()
            logits = logits.detach().requires_grad_()
            if i == 0:  # warm-up: first-call set-up (the host mirror of the step) is not the steady state
                den(logits, batch.labels, batch.sample_ids, batch).loss.backward()
                continue
            with HostSyncGuard(env.device, mode) as g:
                res = den(logits, batch.labels, batch.sample_ids, batch)
                res.loss.backward()
            guards.append(g)
            assert logits.grad is not None and bool(torch.isfinite(res.loss)), (name, "no finite loss/gradient")
        own = [str(s) for g in guards for s in g.own()]
        assert not own, (name, "host syncs issued by denoisrec inside the denoiser's step", own)
        out[name] = {"mode": mode, "library_syncs": sorted({str(s) for g in guards for s in g.syncs})}
        del model
    return out


def case_trainer_step(a: argparse.Namespace, env: DistEnv, schema: DataSchema) -> Dict[str, Any]:
    data = batches(a.data, schema, env, 4)
    out: Dict[str, Any] = {}
    for pipelined in (False, True):
        model, opt, _ = sharded(config(a.data, "tce"), schema, env)
        steps = Stepper(model, opt.optimizer, env.device, pipelined).run(itertools.cycle(data))
        for _ in range(3):
            next(steps)  # warm-up (the pipeline fills; first-call set-up)
        with HostSyncGuard(env.device, "warn") as g:
            for _ in range(3):
                next(steps)
        own = [str(s) for s in g.own()]
        assert not own, ("host syncs issued by denoisrec inside the trainer's step", pipelined, own)
        key = "pipelined" if pipelined else "plain"
        out[key] = {"library_syncs": len(g.syncs), "sites": sorted({str(s) for s in g.syncs})}
        steps.close()
        del model, opt
    return out


CASES: Dict[str, Callable[[argparse.Namespace, DistEnv, DataSchema], Dict[str, Any]]] = {
    "sharding": case_sharding,
    "pipeline": case_pipeline,
    "checkpoint": case_checkpoint,
    "denoisers": case_denoisers,
    "trainer_step": case_trainer_step,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", choices=("cpu", "cuda"), required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="JSON report (rank 0)")
    p.add_argument("--root", required=True, help="scratch folder for run outputs")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--tol", type=float, default=None, help="max abs difference (default: 0 on CPU, 1e-4 CUDA)")
    a = p.parse_args()
    report = run_cases(a)
    if report is not None:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1, default=str)


def run_cases(a: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """Every case of ``a.cases`` on this rank; rank 0 returns the report (the other ranks None)."""
    env = init_distributed(a.device)
    if a.tol is None:
        a.tol = 0.0 if env.device.type == "cpu" else 1e-4
    schema = DataSchema.load(a.data)
    report: Dict[str, Any] = {"device": str(env.device), "world_size": env.world_size}
    for name in a.cases.split(","):
        t0 = time.time()
        report[name] = {**CASES[name](a, env, schema), "seconds": round(time.time() - t0, 2)}  # raises on failure
        if env.rank == 0:
            print(f"gpu_cases: {name} ok ({time.time() - t0:.1f}s)", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return report if env.rank == 0 else None


def launched(device: str, data: str, root: str) -> Optional[Dict[str, Any]]:
    """Every case on local ranks started by ``conftest.launch`` (the CPU tests); rank 0 returns the report."""
    return run_cases(argparse.Namespace(device=device, data=data, root=root, cases=",".join(CASES), tol=None))


if __name__ == "__main__":
    main()

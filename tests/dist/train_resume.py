"""On local gloo ranks (``conftest.launch``): whole training runs (``train()``) in one process group, checked
against each other.

``resume`` mode (2 ranks), under ``--root``:

- ``full``: 32 uninterrupted steps (2 epochs) of DeepFM with dropout, T-CE, warm-up + cosine LR, clipping;
- ``part``: the same run stopped after 21 steps (mid-epoch) with checkpoints, then resumed (``auto``);
- ``pipe``: the same run through ``TrainPipelineSparseDist`` with evaluations and checkpoints in between,
  reporting RealImp against ``full``;
- ``mismatch``: resuming ``part`` with another model must fail with a clear message;
- ``early``: early stopping that must stop and restore the best model (under bf16 autocast).

``reshard`` mode (3 ranks): load ``part``'s 2-rank checkpoint at step 21 onto 3 ranks (no further step) and
export it; then resume it on 3 ranks to the end; resuming it with data_parallel tables must fail clearly.
Also checks the distributed metrics against scikit-learn.

Rank 0 returns what it found (the other ranks an empty dict); the pytest side asserts on it.

    launch(launched, 2, "resume", "DATA", "ROOT"); launch(launched, 3, "reshard", "DATA", "ROOT")
"""

import json
import os

import numpy as np
import torch
import torch.distributed as dist

from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.distributed.env import init_distributed
from denoisrec.trainer.train import train


def base_config(data: str, out: str) -> Config:
    cfg = Config()
    cfg.data.path = data
    cfg.data.global_batch_size = 384  # 192 per rank on 2 ranks, 128 on 3: 16 steps per epoch on both
    cfg.model.name = "deepfm"
    cfg.model.embedding_dim = 8
    cfg.model.params = {"mlp": [16, 16], "dropout": 0.2, "first_order": "fused"}  # fused tables re-shard on resume
    cfg.denoiser.name = "tce"
    cfg.denoiser.params = {"eps_max": 0.2, "num_gradual": 10}
    cfg.sharding.sharding_type = "table_wise"
    cfg.optim.warmup_steps, cfg.optim.decay, cfg.optim.clip_grad_norm = 4, "cosine", 1.0
    cfg.run.out, cfg.run.epochs, cfg.run.log_every, cfg.run.progress = out, 2, 8, "log"
    cfg.eval.keep_selected = False  # model.pt is the last step's: the runs compare training, not selection
    return cfg


def with_run(cfg: Config, **run) -> Config:
    for k, v in run.items():
        setattr(cfg.run, k, v)
    return cfg


def state(path: str) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    return max(float((a[k] - b[k]).abs().max()) if a[k].numel() else 0.0 for k in a)


def resume_mode(data: str, root: str, rank: int) -> dict:
    j = lambda *p: os.path.join(root, *p)  # noqa: E731
    full = train(base_config(data, j("full")))
    session = train(with_run(base_config(data, j("part")), checkpoint_every=10, stop_after_steps=21))
    ckpts_after_stop = sorted(os.listdir(j("part", "checkpoints"))) if rank == 0 else []
    resumed = train(with_run(base_config(data, j("part")), checkpoint_every=10, keep_checkpoints=3))
    pipe = train(
        with_run(
            base_config(data, j("pipe")),
            pipeline="on",
            eval_every=5,
            checkpoint_every=7,
            eval_during=["valid", "test_clean"],
            baseline=j("full"),
        )
    )
    cfg = base_config(data, j("part"))
    cfg.model.name, cfg.model.params = "dlrm", {}
    try:
        train(cfg)
        mismatch = None
    except ValueError as e:
        mismatch = str(e)
    early = train(
        with_run(
            base_config(data, j("early")),
            eval_every=4,
            early_stop_patience=1,
            early_stop_min_delta=1.0,
            precision="bf16",
        )
    )
    if rank != 0:
        return {}
    jsonl = [json.loads(line) for line in open(j("part", "metrics.jsonl"))]
    return {
        "full_steps": full["steps"],
        "session": {k: session[k] for k in ("interrupted", "steps", "checkpoint")},
        "ckpts_after_stop": ckpts_after_stop,
        "resumed": resumed["resumed"],
        "resumed_steps": resumed["steps"],
        "rows": [full["rows_trained"]["total"], resumed["rows_trained"]["total"]],
        "diff_resumed": max_diff(state(j("full", "model.pt")), state(j("part", "model.pt"))),
        "diff_pipe": max_diff(state(j("full", "model.pt")), state(j("pipe", "model.pt"))),
        "pipelined_modules": pipe["pipeline"]["pipelined_modules"],
        "pipe_evals": [e["step"] for e in pipe["evaluations"]],
        "pipe_realimp": pipe["realimp"],
        "metrics": [full["metrics"], resumed["metrics"], pipe["metrics"]],
        "loss": [full["loss"], resumed["loss"]],
        "train_log_steps": [r["step"] for r in jsonl if r["kind"] == "train"],
        "latest": os.readlink(j("part", "checkpoints", "latest")),
        "mismatch": mismatch,
        "early": {
            "steps": early["steps"],
            **early["early_stopping"],
            "precision": early["precision"],
            "loss": early["loss"],
            "final_valid_auc": early["metrics"]["valid"]["auc"],
            "evals": early["evaluations"],
        },
    }


def sklearn_metrics(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray) -> dict:
    from sklearn.metrics import log_loss, roc_auc_score

    num = den = 0.0
    for g in np.unique(groups):
        m = groups == g
        if 0 < labels[m].sum() < m.sum():
            num += roc_auc_score(labels[m], probs[m]) * m.sum()
            den += m.sum()
    return {"auc": roc_auc_score(labels, probs), "gauc": num / den, "logloss": log_loss(labels, probs)}


def reshard_mode(data: str, root: str, rank: int, world: int) -> dict:
    from denoisrec.trainer.evaluation.metrics import all_metrics
    from denoisrec.trainer.evaluation.scoring import all_gather_varlen

    j = lambda *p: os.path.join(root, *p)  # noqa: E731
    ckpt = j("part", "checkpoints", "step_00000021")
    loaded = train(with_run(base_config(data, j("re3")), resume=ckpt, max_steps=21))
    cont = train(with_run(base_config(data, j("re3b")), resume=ckpt, checkpoint_every=5))
    dp = with_run(base_config(data, j("re3dp")), resume=ckpt)
    dp.sharding.sharding_type = "data_parallel"
    try:
        train(dp)
        dp_error = None
    except ValueError as e:
        dp_error = str(e)
    # Issue 17 on 3 ranks: a huge learning rate stops every rank at the same step; a held lock refuses every rank.
    nan = with_run(base_config(data, j("nan3")), max_steps=8, nonfinite_check_every=3)
    nan.model.name, nan.model.params, nan.optim.lr, nan.optim.sparse_lr = "dlrm", {}, 1e10, 1e10
    try:
        train(nan)
        nan_error = None
    except ValueError as e:
        nan_error = f"{type(e).__name__}: {e}"
    if rank == 0:
        os.makedirs(j("locked3"), exist_ok=True)
        from denoisrec.trainer.checkpoint.run_lock import _start_time, socket

        with open(j("locked3", ".lock"), "w") as f:  # held by a live process of this host: the launcher
            json.dump({"pid": os.getppid(), "host": socket.gethostname(), "start": _start_time(os.getppid())}, f)
    dist.barrier()
    try:
        train(base_config(data, j("locked3")))
        lock_error = None
    except ValueError as e:
        lock_error = f"{type(e).__name__}: {e}"
    errors: list = [None] * world
    dist.all_gather_object(errors, [nan_error, lock_error])

    # Metrics over ranks: uneven random shares (one rank empty), gathered, against scikit-learn.
    sizes = [1000, 0, 537][:world]
    rng = np.random.default_rng(100 + rank)
    n = sizes[rank]
    local = torch.tensor(
        np.stack([np.round(rng.normal(size=n), 1), rng.integers(0, 2, n), rng.integers(0, 40, n)], 1)
        if n
        else np.zeros((0, 3)),
        dtype=torch.float64,
    )
    rows = all_gather_varlen(local).numpy()
    dist_metrics = all_metrics(rows[:, 1], rows[:, 0], rows[:, 2].astype(np.int64))
    if rank != 0:
        return {}
    import pyarrow.parquet as pq
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from denoisrec.trainer.serving.predict import predict_file

    dcp_to_torch_save(ckpt, j("ckpt21.pt"))
    saved = {
        k[len("model.") :]: v
        for k, v in torch.load(j("ckpt21.pt"), weights_only=False)["model"].items()
        if k.startswith("model.")
    }
    report = predict_file(
        j("re3b", "model.pt"),
        os.path.join(data, "valid"),
        j("valid_scores.parquet"),
        keep_columns="row_id,user_id,label",
    )
    scores = pq.read_table(j("valid_scores.parquet"))
    labels = scores.column("label").to_numpy().astype(np.int64)
    probs = 1 / (1 + np.exp(-scores.column("logit").to_numpy().astype(np.float64)))
    groups = scores.column("user_id").to_numpy()
    parts = []
    for r, n_r in enumerate(sizes):
        g = np.random.default_rng(100 + r)
        parts.append(
            np.stack([np.round(g.normal(size=n_r), 1), g.integers(0, 2, n_r), g.integers(0, 40, n_r)], 1)
            if n_r
            else np.zeros((0, 3))
        )
    allrows = np.concatenate(parts)
    return {
        "loaded_steps": loaded["steps"],
        "loaded_resumed": loaded["resumed"],
        "diff_loaded_vs_checkpoint": max_diff(saved, state(j("re3", "model.pt"))),
        "plan_ranks": sorted({r for t in loaded["plan"].values() for r in t["ranks"]}),
        "cont_steps": cont["steps"],
        "cont_loss_last": cont["loss"]["last"],
        "dp_error": dp_error,
        "cont_rows": [
            (r["epoch"], r["launch"], r["total"], len(r["per_rank"]), sum(r.get("rows_skipped", [0])), r["complete"])
            for r in cont["rows_read"]
        ],
        "errors_per_rank": errors,
        "nan_files": sorted(os.listdir(j("nan3"))),
        "dist_valid": cont["metrics"]["valid"],
        "single_valid": sklearn_metrics(labels, probs, groups),
        "predict_rows": report["rows"],
        "predict_observed": report.get("observed"),
        "random_dist": dist_metrics,
        "random_sklearn": sklearn_metrics(allrows[:, 1], 1 / (1 + np.exp(-allrows[:, 0])), allrows[:, 2]),
        "random_rows": len(rows),
    }


def launched(mode: str, data: str, root: str) -> dict:
    """One rank of ``mode`` ('resume' or 'reshard') under ``root``; rank 0 returns the findings."""
    env = init_distributed("cpu")
    if mode == "resume":
        out = resume_mode(data, root, env.rank)
    else:
        out = reshard_mode(data, root, env.rank, env.world_size)
    dist.destroy_process_group()
    return out

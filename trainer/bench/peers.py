"""``denoisrec bench peers``: DeepFM in denoisrec against well-known CTR libraries, same data, same shape.

Peers (the ``bench`` extra, never the core install): **DeepCTR-Torch** (``deepctr-torch``) and
**pytorch-fm** (``torchfm``); docs/benchmarks.md says why FuxiCTR is not among them.

**Same data**: a synthetic preset, read from the same Parquet files. torchfm's DeepFM takes one id per field,
so every system sees the preset's single-valued categorical features only (no multi-hot, no dense): the bench
writes a dataset view (``<out>/peers-data``: a ``schema.json`` listing those features, the splits linked)
that denoisrec reads, and the peers get the same columns as arrays.

**Same shape**: DeepFM with embedding dim ``--embedding-dim``, MLP ``--mlp``, dropout ``--dropout``, batch
``--batch-size`` (global: split over denoisrec's ranks), one ``--optimizer`` with ``--lr`` for every parameter
(denoisrec's fused sparse optimizer too; on CPU FBGEMM's fused embedding kernels have no Adam, so ``auto``
picks Adagrad there and Adam on CUDA), no L2, ``--epochs`` epochs over the train split, shuffled.
Known differences: torchfm's MLP always has BatchNorm after each hidden layer (DeepCTR's is plain); DeepCTR
initialises embeddings with N(0, 1e-4²), torchfm with Xavier, denoisrec with TorchRec's default.

**Measured**: training samples/s (train rows × epochs / training seconds; peers: their training loop incl.
their DataLoader over in-memory arrays; denoisrec: its trainer incl. the Parquet reader), and AUC on the test
split (observed labels, and clean labels). denoisrec runs as one process and as ``--nproc`` ranks (torchrun,
gloo on CPU). Threads: the peers and the one-process denoisrec run with ``--threads`` torch threads (default:
all usable cores); each of N ranks gets cores // N.

Target (issue 7): denoisrec ≥ 2× the fastest peer's samples/s at equal AUC (± 0.002).

denoisrec's side uses ``--model deepfm`` (:class:`denoisrec.models.deepfm.DeepFM`).

Example::

    denoisrec bench peers --preset small --epochs 1 --out runs/bench
    denoisrec bench peers --preset criteo --table-rows 100000 --mlp 256,128,64 --dropout 0.2 \
        --batch-size 8192 --out runs/bench-criteo          # the Criteo-like shape
    denoisrec bench peers --quick --out /tmp/p
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from denoisrec.trainer.bench.harness import RanksFailed, run_ranks
from denoisrec.trainer.bench.throughput import ensure_data, usable_cores

PEERS = ("deepctr_torch", "torchfm")
AUC_TOLERANCE = 0.002
SPEEDUP_TARGET = 2.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="synthetic dataset directory (default: data/<preset>)")
    p.add_argument("--preset", default="small", help="synthetic preset used when --data is not given")
    p.add_argument("--rows", type=int, help="with --preset: training rows (valid/test scaled alike)")
    p.add_argument("--out", default="runs/bench", help="report directory (peers.{json,md,png})")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {', '.join(PEERS)}")
    p.add_argument(
        "--table-rows",
        type=int,
        help="give every embedding table this many rows (at least the data's vocabulary), e.g. 100000 "
        "for the Criteo-like shape on --preset criteo",
    )
    p.add_argument("--embedding-dim", type=int, default=16, help="embedding dimension of every system")
    p.add_argument("--mlp", default="128,64", help="hidden layer sizes of the DNN part")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout of the DNN part")
    p.add_argument("--batch-size", type=int, default=2048, help="global batch size")
    p.add_argument(
        "--optimizer",
        choices=("auto", "adam", "adagrad"),
        default="auto",
        help="one optimizer for every parameter of every system; auto: adam on CUDA, adagrad on CPU "
        "(FBGEMM's fused CPU embedding kernels have no Adam)",
    )
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3 for adam, 0.01 for adagrad)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the train split")
    p.add_argument("--nproc", type=int, default=2, help="ranks of the distributed denoisrec run (0: skip)")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the one-process runs (0: all cores)")
    p.add_argument("--seed", type=int, default=0, help="random seed of every system")
    p.add_argument(
        "--denoisrec-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for the denoisrec runs (e.g. model.params.hidden=[128,64])",
    )
    p.add_argument("--quick", action="store_true", help="CI smoke test: tiny preset, batch 256")
    p.add_argument("--timeout", type=int, default=3600, help="seconds for each system's run")


def _resolve_optimizer(a: argparse.Namespace) -> None:
    if a.optimizer == "auto":
        import torch

        a.optimizer = "adam" if torch.cuda.is_available() else "adagrad"
    if a.lr is None:
        a.lr = 1e-3 if a.optimizer == "adam" else 0.01


def make_optimizer(a: argparse.Namespace, params):  # type: ignore[no-untyped-def]
    import torch

    return (torch.optim.Adam if a.optimizer == "adam" else torch.optim.Adagrad)(params, lr=a.lr)


def _apply_quick(a: argparse.Namespace) -> None:
    """``--quick``'s values, except for the options given explicitly (those win)."""
    from denoisrec.trainer.bench.report import apply_quick

    apply_quick(a, {"preset": "tiny", "batch_size": 256, "epochs": 1, "mlp": "32,16", "threads": a.threads or 1})


# ------------------------------------------------------------------------------------------------- data


def single_valued_view(data: str, out: str, table_rows: Optional[int] = None):  # type: ignore[no-untyped-def]
    """A dataset view at ``out`` whose schema keeps ``data``'s single-valued sparse features only, every table
    ``table_rows`` rows when given (never fewer than the data's vocabulary).
    """
    import dataclasses

    from denoisrec.trainer.data.schema import SPLITS, DataSchema

    schema = DataSchema.load(data)
    sparse = [f for f in schema.sparse if not f.multi_hot]
    if table_rows is not None:
        small = [f.name for f in sparse if f.num_embeddings > table_rows]
        if small:
            raise ValueError(f"--table-rows {table_rows}: fewer rows than the vocabulary of {small}")
        sparse = [dataclasses.replace(f, num_embeddings=table_rows) for f in sparse]
    view = DataSchema(
        sparse=sparse,
        dense=[],
        label=schema.label,
        group_id=schema.group_id,
        sample_id=schema.sample_id,
        clean_label=schema.clean_label,
        is_noisy=schema.is_noisy,
        oov_policy=schema.oov_policy,
        extra={
            **schema.extra,
            "view_of": os.path.abspath(data),
            "view": "single-valued sparse features only (bench peers)",
        },
    )
    if not view.sparse:
        raise ValueError(f"{data}: no single-valued sparse feature to compare on")
    os.makedirs(out, exist_ok=True)
    for split in SPLITS:
        link = os.path.join(out, split)
        if os.path.islink(link):
            os.remove(link)
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(data, split)), link)
    view.save(os.path.join(out, "schema.json"))
    return view


def load_arrays(data: str, split: str, schema: Any) -> Dict[str, Any]:
    """``x`` int64 [N, F] (the schema's features in order), ``y`` and ``clean`` float32 [N]."""
    import numpy as np
    import pyarrow.dataset as ds

    cols = schema.sparse_names + [schema.label] + ([schema.clean_label] if schema.clean_label else [])
    t = ds.dataset(os.path.join(data, split), format="parquet").to_table(columns=cols)
    x = np.stack([t.column(c).to_numpy().astype(np.int64) for c in schema.sparse_names], axis=1)
    y = t.column(schema.label).to_numpy().astype(np.float32)
    clean = t.column(schema.clean_label).to_numpy().astype(np.float32) if schema.clean_label else None
    return {"x": x, "y": y, "clean": clean}


# ------------------------------------------------------------------------------------------------ peers


def _auc(y: Any, p: Any) -> Optional[float]:
    from denoisrec.trainer.evaluation.metrics import auc

    return None if y is None else auc(y, p)


def run_deepctr(
    train: Dict[str, Any], test: Dict[str, Any], sizes: List[Tuple[str, int]], a: argparse.Namespace, hidden: List[int]
) -> Dict[str, Any]:
    """DeepCTR-Torch's DeepFM, its own ``fit`` loop (timed) and ``predict``."""
    import contextlib
    import io

    import torch
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DeepFM

    torch.manual_seed(a.seed)
    cols = [SparseFeat(name, vocabulary_size=n, embedding_dim=a.embedding_dim) for name, n in sizes]
    model = DeepFM(
        cols,
        cols,
        dnn_hidden_units=tuple(hidden),
        l2_reg_linear=0.0,
        l2_reg_embedding=0.0,
        l2_reg_dnn=0.0,
        dnn_dropout=a.dropout,
        task="binary",
        device="cpu",
        seed=a.seed,
    )
    model.compile(make_optimizer(a, model.parameters()), "binary_crossentropy")
    x_train = {name: train["x"][:, j] for j, (name, _) in enumerate(sizes)}
    x_test = {name: test["x"][:, j] for j, (name, _) in enumerate(sizes)}
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        model.fit(x_train, train["y"], batch_size=a.batch_size, epochs=a.epochs, verbose=0, shuffle=True)
        seconds = time.perf_counter() - t0
        pred = model.predict(x_test, batch_size=8192).reshape(-1)
    return {"seconds": seconds, "pred": pred, "params": sum(p.numel() for p in model.parameters())}


def run_torchfm(
    train: Dict[str, Any], test: Dict[str, Any], sizes: List[Tuple[str, int]], a: argparse.Namespace, hidden: List[int]
) -> Dict[str, Any]:
    """pytorch-fm's DeepFactorizationMachineModel in the standard loop of its examples (timed)."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from torchfm.model.dfm import DeepFactorizationMachineModel

    torch.manual_seed(a.seed)
    model = DeepFactorizationMachineModel([n for _, n in sizes], a.embedding_dim, tuple(hidden), a.dropout)
    opt = make_optimizer(a, model.parameters())
    loss_fn = torch.nn.BCELoss()
    loader = DataLoader(
        TensorDataset(torch.from_numpy(train["x"]), torch.from_numpy(train["y"])), batch_size=a.batch_size, shuffle=True
    )
    model.train()
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            model.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    model.eval()
    preds = []
    with torch.no_grad():
        for (xb,) in DataLoader(TensorDataset(torch.from_numpy(test["x"])), batch_size=8192):
            preds.append(model(xb).numpy())
    return {
        "seconds": seconds,
        "pred": np.concatenate(preds).astype(np.float64),
        "params": sum(p.numel() for p in model.parameters()),
    }


PEER_RUNNERS: Dict[str, Tuple[str, Callable[..., Dict[str, Any]]]] = {
    "deepctr_torch": ("deepctr-torch", run_deepctr),
    "torchfm": ("torchfm", run_torchfm),
}


# -------------------------------------------------------------------------------------------- denoisrec


def deepfm_overrides(hidden: List[int], dropout: float) -> List[str]:
    """``--set`` overrides giving denoisrec's ``deepfm`` the bench's MLP and dropout.

    Named explicitly after :class:`denoisrec.models.deepfm.DeepFM`'s arguments ``mlp`` (hidden sizes, no
    output layer) and ``dropout``; the trainer checks them against the constructor, so a renamed argument is
    a one-line "unknown option" error, never a guess.
    """
    return [f"model.params.mlp={json.dumps(list(hidden))}", f"model.params.dropout={dropout}"]


def run_denoisrec(view: str, a: argparse.Namespace, nproc: int, hidden: List[int], out: str) -> Dict[str, Any]:
    """Train ``--model deepfm`` with the real trainer on ``nproc`` ranks; samples/s and test AUC from its
    summary.
    """
    if a.batch_size % nproc:
        raise ValueError(f"--batch-size {a.batch_size} is not divisible by {nproc} ranks")
    sets = [] if any(s.startswith("model.params.") for s in a.denoisrec_set) else deepfm_overrides(hidden, a.dropout)
    sets += [
        f"model.embedding_dim={a.embedding_dim}",
        f"optim.dense={a.optimizer}",
        f"optim.lr={a.lr}",
        f"optim.sparse={a.optimizer}",
        f"optim.sparse_lr={a.lr}",
        "optim.weight_decay=0",
        "optim.sparse_weight_decay=0",
        "run.log_every=1000000000",
    ] + list(a.denoisrec_set)
    args = [
        "--data",
        view,
        "--out",
        out,
        "--model",
        "deepfm",
        "--denoiser",
        "bce",
        "--batch-size",
        str(a.batch_size // nproc),
        "--epochs",
        str(a.epochs),
        "--seed",
        str(a.seed),
    ]
    for s in sets:
        args += ["--set", s]
    threads = (a.threads or usable_cores()) if nproc == 1 else max(1, usable_cores() // nproc)
    summary_path = os.path.join(out, "summary.json")
    what = "bench peers"
    summary = run_ranks(
        "denoisrec.trainer", args, nproc, result=summary_path, what=what, threads=threads, timeout=a.timeout
    )
    return {
        "samples_per_s": summary["throughput_samples_per_s"],
        "seconds": summary["train_seconds"],
        "auc": summary["metrics"]["test_observed"]["auc"],
        "clean_auc": summary["metrics"].get("test_clean", {}).get("auc"),
        "threads": threads,
        "rows": summary["rows_trained"]["total"],
    }


# --------------------------------------------------------------------------------------------------- run


def run(a: argparse.Namespace) -> int:
    _apply_quick(a)
    _resolve_optimizer(a)
    import torch

    from denoisrec.trainer.bench.report import BenchReport, markdown_table

    hidden = [int(x) for x in a.mlp.split(",") if x.strip()]
    peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEER_RUNNERS]
    if unknown:
        raise ValueError(f"--peers: unknown peer(s) {unknown}; known: {sorted(PEER_RUNNERS)}")
    os.makedirs(a.out, exist_ok=True)
    data = ensure_data(a.data, a.preset, a.out, a.quick, a.rows)
    view_dir = os.path.join(a.out, "peers-data")
    schema = single_valued_view(data, view_dir, a.table_rows)
    sizes = [(f.name, f.num_embeddings) for f in schema.sparse]
    train, test = load_arrays(data, "train", schema), load_arrays(data, "test", schema)
    n_train = int(train["x"].shape[0])
    threads = a.threads or usable_cores()
    rows: List[Dict[str, Any]] = []

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name in peers:
            dist_name, fn = PEER_RUNNERS[name]
            row: Dict[str, Any] = {"system": name, "package": dist_name, "processes": 1, "threads": threads}
            try:
                __import__(name)
            except ImportError:
                row["status"] = "not installed (pip install 'denoisrec[bench]', see requirements/bench.txt)"
                rows.append(row)
                continue
            print(f"bench peers: training {name}", flush=True)
            r = fn(train, test, sizes, a, hidden)
            row.update(
                {
                    "samples_per_s": n_train * a.epochs / r["seconds"],
                    "seconds": r["seconds"],
                    "auc": _auc(test["y"], r["pred"]),
                    "clean_auc": _auc(test["clean"], r["pred"]),
                    "parameters": r["params"],
                    "status": "ok",
                }
            )
            rows.append(row)
    finally:
        torch.set_num_threads(prev_threads)

    for nproc in [1] + ([a.nproc] if a.nproc and a.nproc > 1 else []):
        row = {"system": "denoisrec", "package": "denoisrec", "processes": nproc}
        print(f"bench peers: training denoisrec deepfm on {nproc} rank(s)", flush=True)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                r = run_denoisrec(view_dir, a, nproc, hidden, os.path.join(tmp, "run"))
            row.update(r)
            row["status"] = "ok"
        except RanksFailed as e:
            row["status"] = f"failed: {e.reason}"
        except ValueError as e:
            row["status"] = f"failed: {e}"
        rows.append(row)

    ok_peers = [r for r in rows if r["system"] != "denoisrec" and r["status"] == "ok"]
    fastest = max(ok_peers, key=lambda r: r["samples_per_s"]) if ok_peers else None
    for r in rows:
        if r["status"] != "ok" or fastest is None:
            continue
        r["vs_fastest_peer"] = r["samples_per_s"] / fastest["samples_per_s"]
        r["auc_delta_vs_fastest_peer"] = r["auc"] - fastest["auc"]
        if r["system"] == "denoisrec" and not a.quick:  # --quick is a smoke test: no grade
            r["meets_target"] = bool(
                r["vs_fastest_peer"] >= SPEEDUP_TARGET and abs(r["auc_delta_vs_fastest_peer"]) <= AUC_TOLERANCE
            )
    rep = BenchReport(
        "peers",
        params={
            "data": data,
            "view": view_dir,
            "features": [n for n, _ in sizes],
            "embedding_dim": a.embedding_dim,
            "table_rows": a.table_rows,
            "mlp": hidden,
            "dropout": a.dropout,
            "batch_size": a.batch_size,
            "optimizer": a.optimizer,
            "lr": a.lr,
            "epochs": a.epochs,
            "train_rows": n_train,
            "test_rows": int(test["x"].shape[0]),
            "nproc": a.nproc,
            "quick": a.quick,
        },
    )
    rep.rows = rows
    cols = [
        ("system", "system", "{}"),
        ("processes", "processes", "{}"),
        ("threads", "threads", "{}"),
        ("samples/s", "samples_per_s", "{:,.0f}"),
        ("× fastest peer", "vs_fastest_peer", "{:.2f}"),
        ("test AUC", "auc", "{:.4f}"),
        ("clean-test AUC", "clean_auc", "{:.4f}"),
        ("ΔAUC vs fastest peer", "auc_delta_vs_fastest_peer", "{:+.4f}"),
        (
            "meets ≥2× at ±0.002",
            lambda r: None if "meets_target" not in r else ("yes" if r["meets_target"] else "**no**"),
            "{}",
        ),
        ("status", "status", "{}"),
    ]
    rep.markdown = (
        f"DeepFM, {len(sizes)} single-valued features of `{data}` ({n_train:,} train rows), "
        f"embedding {a.embedding_dim}, MLP {hidden}, dropout {a.dropout}, global batch {a.batch_size}, "
        f"{a.optimizer} lr {a.lr} on every parameter, {a.epochs} epoch(s); AUC on the test split.\n\n"
        f"{markdown_table(rows, cols)}\n"
    )
    rep.notes.append("torchfm's MLP has BatchNorm after every hidden layer; DeepCTR-Torch's does not")
    rep.notes.append(
        "FuxiCTR: not installed as a peer (PyPI 2.3.10 needs ray[data], polars, h5py, pandas, pydantic "
        "and ships no DeepFM; its models live in the repository's model_zoo/)"
    )
    if a.quick:
        rep.notes.append("--quick: tiny data; a smoke test, not a measurement")
    paths = rep.write(a.out, plot=lambda fig: plot(fig, rep))
    print(rep.markdown)
    print("wrote " + ", ".join(paths.values()))
    return 0


def plot(fig: Any, rep: Any) -> None:
    """Training samples/s per system (AUC written on each bar); a peer that did not run (not installed,
    failed) keeps its place on the axis, marked as missing with the reason, so nothing is hidden.

    ``rep`` is the :class:`~denoisrec.trainer.bench.report.BenchReport` or one read back from ``peers.json``.
    """
    from matplotlib.patches import Patch

    from denoisrec.trainer.outputs import plot_style

    rows = rep.rows
    ax = fig.add_subplot(1, 1, 1)
    p = rep.params
    title = f"bench peers: DeepFM, same data and shape ({p.get('data')}, {p.get('epochs')} epoch(s))"
    if not rows:
        plot_style.empty(ax, "no system ran")
        fig.suptitle(title, fontsize=10)
        return
    ok = [r.get("status") == "ok" for r in rows]
    labels = [f"{r['system']}\n{r['processes']} proc" + ("" if good else "\n(missing)") for r, good in zip(rows, ok)]
    heights = [float(r["samples_per_s"]) if good else 0.0 for r, good in zip(rows, ok)]
    colours = ["tab:blue" if r["system"] == "denoisrec" else "0.6" for r in rows]
    xs = list(range(len(rows)))
    ax.bar(xs, heights, color=colours)
    top = max(heights) if any(heights) else 1.0
    for x, r, good in zip(xs, rows, ok):
        if good:
            ax.annotate(f"AUC {r['auc']:.4f}", (x, r["samples_per_s"]), ha="center", va="bottom", fontsize=8)
            continue
        # a missing system: its whole slot hatched (no height to misread as a measurement), the reason inside
        ax.axvspan(x - 0.4, x + 0.4, facecolor="none", edgecolor="0.7", hatch="//", linewidth=0)
        reason = str(r.get("status") or "did not run").split(" (")[0]
        ax.text(
            x,
            0.5,
            f"{reason}\n({r.get('package', r['system'])})",
            ha="center",
            va="center",
            fontsize=8,
            transform=ax.get_xaxis_transform(),
            bbox={"facecolor": "white", "edgecolor": "0.6", "boxstyle": "round"},
        )
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=8)
    for tick, good in zip(ax.get_xticklabels(), ok):
        if not good:
            tick.set_color("0.45")
    ax.set_ylim(0, top * 1.15)
    ax.set_ylabel("training samples/s")
    ax.grid(alpha=0.3, axis="y")
    plot_style.legend_outside(
        ax,
        "right",
        handles=[Patch(color="tab:blue", label="denoisrec")]
        + (
            [Patch(color="0.6", label="peer")]
            if any(g and r["system"] != "denoisrec" for r, g in zip(rows, ok))
            else []
        )
        + ([Patch(facecolor="none", edgecolor="0.6", hatch="//", label="missing: did not run")] if not all(ok) else []),
        fontsize=8,
    )
    fig.suptitle(title, fontsize=10)

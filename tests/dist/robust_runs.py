"""Whole training runs that machines and users interrupt, damage and collide (one process, world size 1).

Run as ``python tests/dist/robust_runs.py --data TINY --root DIR``. The parent imports the trainer once and
runs every training in a forked child (its own world-1 gloo group), so a child can be SIGKILLed mid-save
without paying the import again. The parent never runs a torch op itself before the last fork. What every
scenario found goes to ``<root>/robust.json``; ``tests/trainer/test_robust_runs.py`` asserts on it.

- ``kill``: a reference run; then the same run launched again and again, each launch SIGKILLing itself at a
  random point inside a checkpoint save (seeded), then a launch that finishes. After every kill all
  ``step_*`` directories must be intact; the finished run must equal the reference bit for bit, and its
  summary and metrics must account for every launch without duplicates.
- ``damage``: copies of the finished run with a flipped bit, a truncated shard, a broken ``meta.json``, a
  missing key, garbage in an RNG file, a removed ``latest`` link.
- ``nan``: a copy of the finished run continued for a third epoch with a huge learning rate (stops, exports
  nothing, keeps its checkpoints), then with the normal one (from the last good checkpoint). ``skip``: a
  dataset with one overflowing row under ``run.nonfinite=skip`` (its batch skipped each epoch, the run ends).
- ``budget``: resuming a finished run with a smaller step budget.
- ``lock``: a long run under torchrun whose launcher alone is SIGKILLed (its worker trains on); a second
  run on the same ``--out`` is refused. (Stale locks: every killed launch of ``kill`` leaves one behind.)
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import time
import traceback
from typing import Any, Callable, Dict

from denoisrec.trainer.checkpoint import checkpointer as C
from denoisrec.trainer.checkpoint import files as F
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.train import train


def config(data: str, out: str, **run: Any) -> Config:
    cfg = Config()
    cfg.data.path, cfg.data.batch_size = data, 512  # 12 steps per epoch of tiny's 6,000 rows
    cfg.model.name, cfg.model.embedding_dim = "dlrm", 8
    cfg.denoiser.name, cfg.denoiser.params = "tce", {"eps_max": 0.2, "num_gradual": 10}
    cfg.run.out, cfg.run.epochs, cfg.run.log_every, cfg.run.progress = out, 2, 4, "log"
    cfg.run.checkpoint_every = 3
    for k, v in run.items():
        section, name = k.split("__") if "__" in k else ("run", k)
        setattr(getattr(cfg, section), name, v)
    return cfg


def child(fn: Callable[[], Any], log: str) -> Dict[str, Any]:
    """Run ``fn`` in a forked process; ``{"rc", "result" or "error", "killed", "output"}``."""
    res = log + ".json"
    pid = os.fork()
    if pid == 0:
        code = 0
        with open(log, "w") as f, contextlib.redirect_stdout(f):
            try:
                out: Dict[str, Any] = {"result": fn()}
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                out = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}
                code = 1
            f.flush()
        with open(res, "w") as f:
            json.dump(out, f, default=str)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    got: Dict[str, Any] = {"killed": os.WIFSIGNALED(status), "rc": os.waitstatus_to_exitcode(status)}
    if os.path.exists(res):
        got.update(json.load(open(res)))
    got["output"] = open(log).read() if os.path.exists(log) else ""
    return got


def arm_kill(save: int, k: int) -> None:
    """In a child: SIGKILL this process at the ``k``-th file operation (before or after one) counted from the
    ``save``-th call of ``Checkpointer.save`` on (a save takes about 36).
    """
    import torch

    count, inside, saves = [0], [False], [0]

    def tick() -> None:
        if inside[0] and saves[0] >= save:
            count[0] += 1
            if count[0] >= k:
                os.kill(os.getpid(), signal.SIGKILL)

    def wrap(obj: Any, name: str) -> None:
        orig = getattr(obj, name)

        def w(*a: Any, **kw: Any) -> Any:
            tick()
            r = orig(*a, **kw)
            tick()
            return r

        setattr(obj, name, w)

    for obj, name in [
        (F, "fsync_path"),
        (F, "sha256_file"),
        (os, "replace"),
        (shutil, "rmtree"),
        (torch, "save"),
        (C.dcp, "save"),
        (os, "symlink"),
    ]:
        wrap(obj, name)
    original = C.Checkpointer.save

    def guarded(self: Any, *a: Any, **kw: Any) -> Any:
        inside[0] = True
        saves[0] += 1
        try:
            return original(self, *a, **kw)
        finally:
            inside[0] = False

    C.Checkpointer.save = guarded


def brief(s: Dict[str, Any]) -> Dict[str, Any]:
    keys = (
        "steps",
        "resumed",
        "rows_read",
        "launch",
        "checkpoint",
        "model_file",
        "loss",
        "nonfinite_skipped_steps",
        "interrupted",
    )
    return {k: s.get(k) for k in keys}


def intact(out: str) -> Dict[str, Any]:
    root = os.path.join(out, "checkpoints")
    steps = F.list_steps(root)
    return {
        "steps": [s for s, _ in steps],
        "problems": [F.problem(p) for _, p in steps],
        "hidden": sorted(n for n in os.listdir(root) if n.startswith(".")) if os.path.isdir(root) else [],
    }


def kill_scenario(data: str, root: str, rng: random.Random) -> Dict[str, Any]:
    ref = child(lambda: brief(train(config(data, f"{root}/ref"))), f"{root}/ref.log")
    out = f"{root}/run"
    kills = []
    for i in range(3):
        save, k = rng.randint(1, 5), rng.randint(1, 36)
        r = child(lambda save=save, k=k: (arm_kill(save, k), brief(train(config(data, out))))[1], f"{root}/kill{i}.log")
        kills.append(
            {
                "save": save,
                "k": k,
                "killed": r["killed"],
                "after": intact(out),
                "lock_left": os.path.exists(os.path.join(out, ".lock")),
                "resumed_line": [ln for ln in r["output"].splitlines() if ln.startswith("resumed from")],
            }
        )
    final = child(lambda: brief(train(config(data, out))), f"{root}/final.log")
    metrics = [json.loads(ln) for ln in open(f"{out}/metrics.jsonl")]
    return {
        "ref": ref.get("result"),
        "kills": kills,
        "final": final.get("result"),
        "final_error": final.get("error"),
        "final_output": final["output"][-3000:],
        "metric_keys": [[m["step"], m["kind"]] for m in metrics],
        "after_final": intact(out),
    }


def damage_scenario(data: str, root: str) -> Dict[str, Any]:
    import torch

    env = C.DistEnv(0, 1, 0, 1, torch.device("cpu"), "gloo")
    src = f"{root}/run"
    found: Dict[str, Any] = {}

    def copy(name: str) -> str:
        dst = f"{root}/dmg-{name}"
        shutil.copytree(src, dst, symlinks=True)
        return dst

    def newest(out: str) -> str:
        return F.list_steps(os.path.join(out, "checkpoints"))[-1][1]

    def resolve(out: str, how: str = "auto") -> Dict[str, Any]:
        ck = C.Checkpointer(out, 2, env)
        try:
            return {"path": ck.resolve(how), "skipped": ck.skipped}
        except C.CheckpointError as e:
            return {"error": str(e)}

    def flip(file: str, at: int) -> None:
        with open(file, "r+b") as f:
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0x10]))

    out = copy("bitflip")
    shard = os.path.join(newest(out), "__0_0.distcp")
    flip(shard, os.path.getsize(shard) // 2)
    found["bitflip_explicit"] = resolve(out, newest(out))
    found["bitflip_auto"] = {**resolve(out), "newest": newest(out), "after": sorted(os.listdir(f"{out}/checkpoints"))}

    out = copy("truncated")
    shard = os.path.join(newest(out), "__0_0.distcp")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 3)
    found["truncated"] = resolve(out, newest(out))

    out = copy("meta")
    with open(os.path.join(newest(out), "meta.json"), "w") as f:
        f.write('{"step": 24, "epo')
    found["broken_meta"] = resolve(out, newest(out))

    out = copy("key")
    meta_file = os.path.join(newest(out), "meta.json")
    meta = json.load(open(meta_file))
    del meta["steps_per_epoch"]
    json.dump(meta, open(meta_file, "w"))
    found["missing_key"] = resolve(out, newest(out))

    out = copy("rng")
    with open(os.path.join(newest(out), "rng", "rank0.pt"), "wb") as f:
        f.write(b"not a pickle" * 10)
    found["garbage_rng"] = resolve(out, newest(out))
    # the same damage in a checkpoint without checksums (format 1): the load names the file
    meta_file = os.path.join(newest(out), "meta.json")
    meta = json.load(open(meta_file))
    meta.pop("files")
    meta.pop(F.META_SHA)  # format 1 had neither (a format 3 meta.json without them is damaged)
    meta["format_version"] = 1
    json.dump(meta, open(meta_file, "w"))
    r = child(lambda: brief(train(config(data, out, resume=newest(out)))), f"{root}/rng.log")
    found["garbage_rng_unverified"] = r.get("error")

    out = copy("nolatest")
    os.remove(os.path.join(out, "checkpoints", "latest"))
    found["no_latest"] = {**resolve(out), "newest": newest(out)}

    out = copy("all")
    for _, p in F.list_steps(os.path.join(out, "checkpoints")):
        os.remove(os.path.join(p, "meta.json"))
    found["all_damaged"] = resolve(out)
    # a relaunch on it refuses rather than starting again from step 0
    return found


def nan_scenario(data: str, root: str) -> Dict[str, Any]:
    out = f"{root}/nan"
    shutil.copytree(f"{root}/run", out, symlinks=True)
    for f in ("model.pt", "summary.json"):
        os.remove(os.path.join(out, f))
    huge = child(
        lambda: brief(train(config(data, out, epochs=3, optim__lr=1e10, optim__sparse_lr=1e10))), f"{root}/nan1.log"
    )
    after = intact(out)
    files = sorted(os.listdir(out))
    good = child(lambda: brief(train(config(data, out, epochs=3))), f"{root}/nan2.log")
    skip = child(
        lambda: brief(train(config(poisoned(data, root), f"{root}/skip", nonfinite="skip"))), f"{root}/skip.log"
    )
    return {
        "huge_error": huge.get("error"),
        "after": after,
        "files": files,
        "good": good.get("result"),
        "good_error": good.get("error"),
        "skip": skip.get("result"),
        "skip_error": skip.get("error"),
    }


def poisoned(data: str, root: str) -> str:
    """A copy of ``data`` where one training row's dense values are 3e38: finite (so nan_policy accepts them),
    but they overflow the model's dense layers, so the batch that holds the row has a non-finite loss.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = f"{root}/poisoned"
    shutil.copytree(data, out)
    f = f"{out}/train/part-00001.parquet"
    t = pq.read_table(f)
    dense = json.load(open(f"{out}/schema.json"))["dense"]
    for c in dense:
        v = t.column(c).to_numpy().copy()
        v[100] = np.float32(3e38)
        t = t.set_column(t.schema.get_field_index(c), c, pa.array(v, type=pa.float32()))
    pq.write_table(t, f, row_group_size=500)
    return out


def budget_scenario(data: str, root: str) -> Dict[str, Any]:
    r = child(lambda: brief(train(config(data, f"{root}/run", max_steps=10))), f"{root}/budget.log")
    return {"error": r.get("error")}


def lock_scenario(data: str, root: str) -> Dict[str, Any]:
    """A long run under torchrun; its launcher (only) is SIGKILLed; a second run on its --out is refused."""
    import subprocess

    out = f"{root}/locked"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=1",
        "-m",
        "denoisrec.trainer",
        "--data",
        data,
        "--out",
        out,
        "--epochs",
        "1000",
        "--batch-size",
        "64",
        "--set",
        "run.progress=log",
        "run.log_every=1",
    ]
    with open(f"{root}/torchrun.log", "w") as f:
        launcher = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1")
        )
    holder: Dict[str, Any] = {}
    try:
        t0 = time.time()
        while not os.path.exists(os.path.join(out, "metrics.jsonl")) and time.time() - t0 < 180:
            time.sleep(0.2)
        holder = json.load(open(os.path.join(out, ".lock")))
        os.kill(launcher.pid, signal.SIGKILL)  # the launcher only: its worker trains on, unsupervised
        launcher.wait()
        time.sleep(1.0)
        worker_alive = _alive(holder["pid"])
        steps_before = _last_step(out)
        second = child(lambda: brief(train(config(data, out, epochs=1))), f"{root}/second.log")
        worker_still = _alive(holder["pid"]) and _last_step(out) > steps_before
    finally:  # torchelastic starts workers in sessions of their own: end the launcher and the worker by pid
        for pid in (launcher.pid, holder.get("pid")):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
    return {
        "holder_pid": holder["pid"],
        "launcher_pid": launcher.pid,
        "worker_alive": worker_alive,
        "worker_still_training": worker_still,
        "second_error": second.get("error"),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _last_step(out: str) -> int:
    lines = open(os.path.join(out, "metrics.jsonl")).read().splitlines()
    return max([json.loads(x)["step"] for x in lines if x.strip().endswith("}")] or [0])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = random.Random(a.seed)
    found: Dict[str, Any] = {}
    t = time.time()
    for name, fn in [
        ("kill", lambda: kill_scenario(a.data, a.root, rng)),
        ("damage", lambda: damage_scenario(a.data, a.root)),
        ("nan", lambda: nan_scenario(a.data, a.root)),
        ("budget", lambda: budget_scenario(a.data, a.root)),
        ("lock", lambda: lock_scenario(a.data, a.root)),
    ]:
        found[name] = fn()
        found.setdefault("seconds", {})[name] = round(time.time() - t, 1)
        t = time.time()
    with open(os.path.join(a.root, "robust.json"), "w") as f:
        json.dump(found, f, indent=1, default=str)
    sys.exit(0)


if __name__ == "__main__":
    main()

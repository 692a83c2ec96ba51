r"""One training epoch of a ``product``-shaped dataset on N ranks, killed once in the middle and resumed.

Launches ``denoisrec train`` under torchrun (gloo on CPU) with a checkpoint every ``--checkpoint-every``
steps; once a checkpoint at or past ``--kill-at`` of the epoch exists, kills the whole process group
(SIGKILL to every rank and the launcher: nothing is flushed) and launches the same command again, which resumes from
``<out>/checkpoints/latest``. Meanwhile it samples every rank's peak RSS (``VmHWM``). Prints and writes
(``<out>/product_epoch.json``) the wall time of both sessions, samples/s, peak RSS per rank, the row
accounting (rows trained over both sessions against the split's rows; the epoch's per-rank reports) and the
clean-test AUC, plus a linear extrapolation to ``--full-rows`` rows.

Example::

    denoisrec gen-data --preset product --rows 2000000 --out data/product-2m
    python benchmarks/product_epoch.py --data data/product-2m --out runs/product-epoch --nproc 2 \\
        --batch-size 4096 --denoiser tce --checkpoint-every 40
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List

import pyarrow.parquet as pq


def _children(pid: int) -> List[int]:
    out = []
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            with open(status) as f:
                text = f.read()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(pid):
            out.append(int(fields["Pid"]))
    return out


def _hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def _latest_step(out: str) -> int:
    meta = os.path.join(out, "checkpoints", "latest", "meta.json")
    try:
        with open(meta) as f:
            return int(json.load(f)["step"])
    except (OSError, ValueError, KeyError):
        return -1


def session(cmd: List[str], out: str, env: Dict[str, str], kill_step: int, peaks: Dict[int, int]) -> Dict[str, float]:
    """Run ``cmd`` in its own process group; kill it once the latest checkpoint reaches ``kill_step`` (> 0)."""
    t0 = time.time()
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=open(os.path.join(out, "log.txt"), "a"), stderr=subprocess.STDOUT
    )
    killed = False
    ranks: Dict[int, int] = {}  # pid -> local rank order of appearance
    while proc.poll() is None:
        for agent in [proc.pid] + _children(proc.pid):
            for pid in _children(agent):
                if pid not in ranks:
                    ranks[pid] = len(ranks)
        for pid, r in ranks.items():
            peaks[r] = max(peaks.get(r, 0), _hwm_kib(pid))
        if kill_step > 0 and _latest_step(out) >= kill_step:
            # the ranks run in sessions of their own (torch elastic): kill them by pid, then the launcher
            for pid in list(ranks):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for pid in list(ranks):  # make sure they are gone before the next session starts
                while os.path.exists(f"/proc/{pid}") and _state(pid) not in ("Z", "X"):
                    time.sleep(0.1)
            killed = True
            break
        time.sleep(0.2)
    return {
        "seconds": time.time() - t0,
        "killed": killed,
        "returncode": proc.returncode,
        "checkpoint_step": _latest_step(out),
        "ranks_seen": len(ranks),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4096, help="rows per rank per step")
    p.add_argument("--model", default="dlrm")
    p.add_argument("--denoiser", default="tce")
    p.add_argument("--checkpoint-every", type=int, default=40)
    p.add_argument("--kill-at", type=float, default=0.5, help="fraction of the epoch after which to kill once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--full-rows", type=int, default=77_110_000, help="rows of the full epoch to extrapolate to")
    p.add_argument("--set", nargs="*", default=[], help="extra --set overrides")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    files = sorted(glob.glob(os.path.join(a.data, "train", "*.parquet")))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    spe = math.ceil(math.ceil(rows / a.nproc) / a.batch_size)
    kill_step = int(spe * a.kill_at) // a.checkpoint_every * a.checkpoint_every
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={a.nproc}",
        "-m",
        "denoisrec.trainer",
        "--data",
        a.data,
        "--out",
        a.out,
        "--model",
        a.model,
        "--denoiser",
        a.denoiser,
        "--batch-size",
        str(a.batch_size),
        "--epochs",
        "1",
        "--set",
        f"run.checkpoint_every={a.checkpoint_every}",
        "run.log_every=20",
        *a.set,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONUNBUFFERED="1")
    peaks: Dict[int, int] = {}
    print(
        f"{rows:,} rows, {spe} steps of {a.nproc} x {a.batch_size}; kill after the checkpoint at step {kill_step}",
        flush=True,
    )
    first = session(cmd, a.out, env, kill_step, peaks)
    print(f"session 1: {first}", flush=True)
    second = session(cmd, a.out, env, 0, peaks)
    print(f"session 2: {second}", flush=True)
    with open(os.path.join(a.out, "summary.json")) as f:
        s = json.load(f)
    wall = first["seconds"] + second["seconds"]
    trained = s["rows_trained"]["total"]
    result = {
        "rows": rows,
        "steps_per_epoch": spe,
        "nproc": a.nproc,
        "batch_size": a.batch_size,
        "model": a.model,
        "denoiser": a.denoiser,
        "threads": a.threads,
        "sessions": [first, second],
        "wall_seconds": wall,
        "samples_per_s_session2": s["throughput_samples_per_s"],
        "peak_rss_gib_per_rank": {r: round(k / 2**20, 3) for r, k in sorted(peaks.items())},
        "rows_trained_total": trained,
        "every_row_once": trained == rows,
        "rows_read_session2": s.get("rows_read"),
        "clean_test_auc": s["metrics"]["test_clean"]["auc"],
        "test_auc": s["metrics"]["test_observed"]["auc"],
        "resumed_from": s.get("resumed"),
        "train_seconds_session2": s["train_seconds"],
        "rows_trained_session2": s["rows_trained"]["this_session"],
        # the full epoch at session 2's training rate (startup, the kill and evaluation excluded)
        "extrapolated_full_epoch_minutes": round(a.full_rows / max(s["throughput_samples_per_s"], 1e-9) / 60, 1),
    }
    with open(os.path.join(a.out, "product_epoch.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    return 0 if result["every_row_once"] else 1


if __name__ == "__main__":
    sys.exit(main())

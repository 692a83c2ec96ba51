"""The torchx component end to end: real ``torchx run -s local_cwd`` jobs (CPU, gloo), and what they prove.

- ``-j 1x2``: 2 ranks through torchx, every row read once (also the reference for the resume test);
- ``-j 3x1``: three elastic agents (simulated nodes) meet by c10d rendezvous; node ranks 0, 1, 2; an odd
  world size with an uneven row split;
- failure propagation: a SIGKILLed worker with ``max_restarts=0`` fails the job promptly; a rank that
  raises on bad input brings both simulated nodes down with its message, not a collective timeout; a
  mistake the ranks refuse is one line and one launcher summary (``denoisrec torchrun``), no traceback;
- elastic restart: with ``max_restarts=1`` a worker killed mid-run is restarted, the trainer resumes from
  its latest checkpoint and ends with the uninterrupted run's steps and metrics.

Every launch costs 10-20 s of imports on 2 cores, so each test checks many things in one launch.
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from job_probes import data_bad_on_rank_1, free_port, logged_step, worker_pids

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = "launch/components.py:train"
TORCHX = [sys.executable, "-m", "torchx.cli.main"]
# The reference run and the resume run share these trainer options (2 epochs of 47 steps at batch 64).
EPOCHS, BATCH = 2, 64
TRAIN_ARGS = [
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    str(BATCH),
    "--denoiser",
    "tce",
    "-p",
    "eps_max=0.2",
    "num_gradual=40",
]


def _share(n: int, w: int, r: int) -> int:
    """Rows of rank ``r`` of ``w``: the contiguous global range [r·n/w, (r+1)·n/w)."""
    return (r + 1) * n // w - r * n // w


class Job:
    """One ``torchx run -s local_cwd launch/components.py:train`` in its own session (so it can be ended
    as a group), tagged through ``--env`` so that its worker processes can be found by their environment.
    """

    def __init__(self, tmp: Path, j: str, trainer_args: List[str], component_args: Tuple[str, ...] = ()) -> None:
        self.tag = uuid.uuid4().hex
        self.log = tmp / f"torchx-{self.tag[:8]}.log"
        cmd = [
            *TORCHX,
            "run",
            "-s",
            "local_cwd",
            "-cfg",
            f"log_dir={tmp / 'torchx-logs'}",
            COMPONENT,
            "-j",
            j,
            "--python",
            sys.executable,
            "--rdzv_port",
            str(free_port()),
            "--env",
            f"OMP_NUM_THREADS=1,DENOISREC_TEST_TAG={self.tag}",
            *component_args,
            "--",
            *trainer_args,
        ]
        self.t0 = time.time()
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float = 240) -> Tuple[int, str]:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own session: torchx, its agents and workers
            self.proc.wait()
            raise AssertionError(f"torchx job still running after {timeout}s:\n{self.output()[-6000:]}") from None
        return rc, self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> Dict[int, int]:
        """``{global rank: pid}`` of this job's live worker processes."""
        return worker_pids(self.tag)

    def kill_worker_when(self, ready, rank: int, timeout: float = 180) -> int:
        """SIGKILL the worker of ``rank`` as soon as ``ready()`` holds; return its pid."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the job ended before the kill:\n{self.output()[-6000:]}")
            if ready():
                pid = self.workers()[rank]
                os.kill(pid, signal.SIGKILL)
                return pid
            time.sleep(0.05)
        raise AssertionError(f"not ready to kill after {timeout}s:\n{self.output()[-6000:]}")


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _assert_succeeded(rc: int, text: str) -> None:
    assert rc == 0 and "Job finished: SUCCEEDED" in text, text[-6000:]


@pytest.fixture(scope="module")
def reference_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted 2-rank run through torchx: the end-to-end test checks it, the resume test compares."""
    tmp = tmp_path_factory.mktemp("launch_ref")
    out = tmp / "run"
    job = Job(tmp, "1x2", ["--data", str(tiny_data), "--out", str(out), *TRAIN_ARGS, "--set", "run.log_every=5"])
    rc, text = job.wait()
    return {"rc": rc, "text": text, "out": out}


@pytest.mark.dist
def test_two_ranks_through_torchx_local_cwd(reference_run: dict) -> None:
    _assert_succeeded(reference_run["rc"], reference_run["text"])
    s = _summary(reference_run["out"])
    per_epoch = math.ceil(math.ceil(6000 / 2) / BATCH)
    assert s["world_size"] == 2 and s["steps"] == EPOCHS * per_epoch
    assert s["rows_trained"]["per_rank"] == [EPOCHS * _share(6000, 2, r) for r in range(2)]
    assert [(r["rank"], r["node_rank"], r["local_rank"], r["restart_count"]) for r in s["ranks"]] == [
        (0, 0, 0, 0),
        (1, 0, 1, 0),
    ]
    assert s["config"]["denoiser"]["params"] == {"eps_max": 0.2, "num_gradual": 40}  # -p a=1 b=2 passed through
    assert s["loss"]["last"] < s["loss"]["first"] - 0.02 and s["metrics"]["test_clean"]["auc"] > 0.75
    text = reference_run["text"]
    assert "trainer/0 [0]:done:" in text  # rank 0's summary, streamed by torchx with replica and rank prefixes


@pytest.mark.dist
def test_three_simulated_nodes_odd_world_size(tmp_path: Path) -> None:
    """``-j 3x1``: three torchrun agents (simulated nodes) meet by c10d rendezvous.

    An odd world size with an uneven split. (``-j 2x1`` and ``-j 1x3`` run the same code paths; docs/launch.md
    shows both.)
    """
    from denoisrec.trainer.datasets.synthetic import PRESETS, generate, scaled

    n = 6001  # 2000 / 2000 / 2001 rows: the last rank has one more, and every rank ends on a short batch
    data = tmp_path / "data"
    generate(str(data), scaled(PRESETS["tiny"], n), seed=3)
    out = tmp_path / "run"
    job = Job(
        tmp_path,
        "3x1",
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "256",
            "--denoiser",
            "tce",
            "-p",
            "eps_max=0.1",
            "num_gradual=4",
        ],
    )
    rc, text = job.wait()
    _assert_succeeded(rc, text)
    s = _summary(out)
    ranks = s["ranks"]
    # One worker per agent: node ranks 0, 1, 2 (c10d numbers the agents in joining order), local rank 0 on
    # each, and global rank = node rank × nproc_per_node + local rank.
    assert s["world_size"] == 3 and sorted(r["node_rank"] for r in ranks) == [0, 1, 2]
    assert all(r["local_rank"] == 0 and r["local_world_size"] == 1 for r in ranks)
    assert [r["node_rank"] * 1 + r["local_rank"] for r in ranks] == [0, 1, 2]
    assert s["rows_trained"]["per_rank"] == [_share(n, 3, r) for r in range(3)] == [2000, 2000, 2001]
    assert s["steps"] == math.ceil(math.ceil(n / 3) / 256) and s["rows_trained"]["total"] == n
    assert len({rk for p in s["plan"].values() for rk in p["ranks"]}) > 1  # tables sharded across the nodes
    assert len({(r["host"], r["pid"]) for r in ranks}) == 3  # three replicas ran (their consoles are quiet)
    assert s["metrics"]["test_clean"]["rows"] == s["metrics"]["test_observed"]["rows"] > 0


@pytest.mark.dist
def test_killed_worker_without_restarts_fails_the_job_promptly(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    job = Job(
        tmp_path,
        "1x2",
        ["--data", str(tiny_data), "--out", str(out), *TRAIN_ARGS, "--set", "run.log_every=1"],
        ("--max_restarts", "0"),
    )
    killed = job.kill_worker_when(lambda: logged_step(out) >= 3, rank=1)
    t_kill = time.time()
    rc, text = job.wait(timeout=120)
    took = time.time() - t_kill
    assert rc != 0 and "Job finished: FAILED" in text, text[-6000:]
    # the launcher's one summary line names the killed worker and the signal, with no traceback
    summary = [x for x in text.splitlines() if "denoisrec torchrun: the job failed:" in x]
    assert len(summary) == 1 and f"rank 1 (SIGKILL, pid {killed})" in summary[0], text[-6000:]
    # rank 0, if it sees the lost connection before the agent's SIGTERM, says so in one line, not a traceback
    assert "ChildFailedError" not in text and "Root Cause" not in text and "Traceback" not in text, text[-6000:]
    stopped = [x for x in text.splitlines() if "stopped: its peer failed" in x]
    assert all(x.endswith("denoisrec train: rank 0 stopped: its peer failed (rank 1: SIGKILL)") for x in stopped)
    assert not (out / "summary.json").exists()
    assert job.workers() == {}  # nothing left behind
    assert took < 60, f"the job took {took:.0f}s to fail after the kill"  # no hang until a collective timeout


@pytest.mark.dist
def test_bad_input_on_one_rank_brings_both_nodes_down_with_its_message(tiny_data: Path, tmp_path: Path) -> None:
    data = data_bad_on_rank_1(tiny_data, tmp_path)  # rank 1 of 2 meets a label 2 mid-epoch
    out = tmp_path / "run"
    job = Job(
        tmp_path,
        "2x1",
        ["--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "256", "--set", "data.shuffle=false"],
    )
    rc, text = job.wait(timeout=150)  # the default collective timeout is 600 s: a hang would fail here
    assert rc != 0 and "Job finished: FAILED" in text, text[-6000:]
    msg = (
        "part-00002.parquet: row group 1: column 'label' has 1 value(s) outside {0, 1} (first: 2 at row 493 of "
        "the row group (row 993 of the file)); labels must be 0 or 1"
    )
    # the failed rank's line, said once by its node's launcher (denoisrec torchrun), not by the rank as well
    said = [x for x in text.splitlines() if x.endswith(f"denoisrec train: error: {data}/train/{msg}")]
    assert len(said) == 1 and re.fullmatch(r"trainer/[01] denoisrec train: error: .*", said[0]), text[-6000:]
    # one summary line per node's launcher instead of torchelastic's ChildFailedError report: the failed rank's
    # node names it; the other names its rank's lost connection, or (when the failed node's agent, which may
    # host the rendezvous store, ended first) the lost rendezvous
    summaries = [x for x in text.splitlines() if "denoisrec torchrun: the job failed:" in x]
    assert len(summaries) == 2 and "ChildFailedError" not in text, text[-6000:]
    assert any("rank 1 (exit 1, pid" in x for x in summaries), summaries
    assert any("rank 0 (" in x or "rendezvous error" in x for x in summaries), summaries
    # the launcher passes the rank's error file on: torchx's status carries the line (YAML-wrapped)
    status = text[text.index("AppStatus:") :]
    assert "errorCode: 1" in status and "labels must be 0 or 1'" in status, status
    # the other node's worker was released, not left waiting, and says so in one line (no gloo traceback)
    assert "Traceback" not in text and "Connection closed by peer" not in text, text[-6000:]
    stopped = [
        x
        for x in text.splitlines()
        if x.endswith("denoisrec train: rank 0 stopped: its peer failed; see rank 1's error above")
    ]
    # (or, when torchx stopped that node first, or its agent lost the rendezvous, its summary line says that)
    other = ("rendezvous error", "this node was stopped (SIGTERM")
    assert len(stopped) <= 1 and (stopped or any(w in x for x in summaries for w in other)), text[-6000:]
    assert "timed out" not in text.lower() and not (out / "summary.json").exists()


@pytest.mark.dist
def test_a_mistake_at_rank_time_is_one_line_and_one_summary(tiny_data: Path, tmp_path: Path) -> None:
    """A usage mistake that only the ranks see (``--precheck False`` lets it through): the job log has the
    trainer's line once and the launcher's summary once, no traceback; torchx's status carries the line.
    """
    out = tmp_path / "run"
    job = Job(
        tmp_path,
        "1x2",
        ["--data", str(tiny_data), "--out", str(out), "--denoiser", "tce", "-p", "beta=1"],
        ("--precheck", "False"),
    )
    rc, text = job.wait(timeout=150)
    assert rc != 0 and "Job finished: FAILED" in text, text[-6000:]
    line = "denoisrec train: error: -p beta=1: tce has no option 'beta'; its options: eps_max, num_gradual"
    said = [x for x in text.splitlines() if x.startswith("trainer/") and "denoisrec train: error:" in x]
    assert said == [f"trainer/0 {line}"], text[-6000:]
    summary = [x for x in text.splitlines() if "denoisrec torchrun: the job failed:" in x]
    assert len(summary) == 1 and re.search(r"rank [01] \(exit 2, pid \d+\)", summary[0]), text[-6000:]
    assert "Traceback" not in text and "ChildFailedError" not in text and "Root Cause" not in text, text[-6000:]
    assert "errorCode: 2" in text[text.index("AppStatus:") :], text[-3000:]
    assert not out.exists()


def test_gen_data_component_writes_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "data"
    proc = subprocess.run(
        [
            *TORCHX,
            "run",
            "-s",
            "local_cwd",
            "-cfg",
            f"log_dir={tmp_path / 'logs'}",
            "launch/components.py:gen_data",
            "--python",
            sys.executable,
            "--",
            "--preset",
            "tiny",
            "--rows",
            "1200",
            "--out",
            str(out),
            "--quiet",
        ],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "Job finished: SUCCEEDED" in proc.stderr, proc.stderr[-4000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["train"]["rows"] == 1200 and (out / "schema.json").exists()


@pytest.mark.dist
def test_killed_worker_restarts_and_resumes_from_checkpoint(
    tiny_data: Path, tmp_path: Path, reference_run: dict
) -> None:
    every = 10
    out = tmp_path / "run"
    job = Job(
        tmp_path,
        "1x2",
        [
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            *TRAIN_ARGS,
            "--set",
            "run.log_every=5",
            f"run.checkpoint_every={every}",
            "run.resume=auto",
        ],
        ("--max_restarts", "1"),
    )
    # Kill rank 1 once a checkpoint exists and training has moved past it (that work is lost and redone).
    killed = job.kill_worker_when(
        lambda: (out / "checkpoints" / "latest").exists() and logged_step(out) >= every + 5, rank=1
    )
    rc, text = job.wait()
    _assert_succeeded(rc, text)

    s, ref = _summary(out), _summary(reference_run["out"])
    assert s["steps"] == ref["steps"] == EPOCHS * math.ceil(3000 / BATCH)
    assert [r["restart_count"] for r in s["ranks"]] == [1, 1]  # the agent restarted the whole group once
    assert killed not in [r["pid"] for r in s["ranks"]]
    # The restarted group (torchelastic's attempt_1) resumed: rank 0's first progress line is past the
    # checkpoint, not step 5 again.
    restarted = list(tmp_path.glob("torchx-logs/torchx/*/torchelastic/trainer/*/attempt_1/0/stdout.log"))
    assert len(restarted) == 1 and not list(tmp_path.glob("torchx-logs/**/attempt_2")), text[-6000:]
    first = re.search(r"step\s+(\d+)/\d+", restarted[0].read_text())
    assert first and int(first.group(1)) > every, f"the restarted group did not resume: {first}"
    for split in ("valid", "test_clean", "test_observed"):
        for k in ("auc", "gauc", "logloss"):
            assert s["metrics"][split][k] == pytest.approx(ref["metrics"][split][k], abs=2e-3), (split, k)

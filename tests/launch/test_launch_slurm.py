"""The torchx component through a real Slurm scheduler: ``torchx run -s slurm launch/components.py:train``.

The session's one-host cluster (``slurm_cluster`` in conftest.py, built by ``launch/slurm_local.py``: munge,
MariaDB + slurmdbd, slurmctld, slurmd) runs three jobs of the unchanged component; each test checks what
the scheduler reports (``torchx status``, which reads ``sacct``; ``torchx log``, which reads the
``slurm-<id>-trainer-<node>.{out,err}`` files) as well as what the trainer wrote:

- ``-j 1x2``: a job that trains on ``tiny`` and writes its summary; status SUCCEEDED, logs with rank prefixes;
- ``-j 2x1`` (a heterogeneous job of two 1-task groups): one rank raises on bad input; the job is FAILED and
  its log carries the rank's own message once, said by its node's launcher (``denoisrec torchrun``); the
  other node goes down with it (srun --kill-on-bad-exit);
- ``-j 1x2 --max_restarts 1``: a worker killed mid-run is restarted by torchelastic inside the allocation,
  and the trainer resumes from its checkpoint and ends with the uninterrupted job's steps and metrics.

The tests skip (with the reason) where the cluster cannot come up: see ``.ci/install-slurm``.
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
COMPONENT = str(ROOT / "launch" / "components.py") + ":train"
TORCHX = [sys.executable, "-m", "torchx.cli.main"]
EPOCHS, BATCH = 2, 64  # 2 epochs of 47 steps per rank on tiny; the reference and the resumed job share them
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

pytestmark = pytest.mark.dist


class SlurmJob:
    """One ``torchx run -s slurm --wait`` of ``launch/components.py:train``, submitted from its own folder
    (so the job's ``slurm-<id>-*.out/.err`` land there) and tagged through ``--env`` so that its worker
    processes can be found by their environment.
    """

    def __init__(self, cluster, cwd: Path, j: str, trainer_args: List[str], component_args: Tuple[str, ...] = ()):
        self.cwd = cwd
        self.env = {**os.environ, **cluster.env()}
        self.tag = uuid.uuid4().hex
        cwd.mkdir(parents=True, exist_ok=True)
        self.log = cwd / "torchx-run.log"
        # --cpu 1 --memMB 1024 per node fit a 2-CPU host (requests are bookkeeping here: no cgroups).
        cmd = [
            *TORCHX,
            "run",
            "-s",
            "slurm",
            "--wait",
            COMPONENT,
            "-j",
            j,
            "--cpu",
            "1",
            "--memMB",
            "1024",
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
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(
                cmd, cwd=str(cwd), stdout=f, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self.handle = self._handle(timeout=60)
        self.job_id = self.handle.rsplit("/", 1)[1]

    def _handle(self, timeout: float) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(r"slurm://torchx/(\d+)", self.output())
            if m:
                return m.group(0)
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"torchx run printed no slurm:// handle:\n{self.output()[-4000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 240) -> Tuple[int, str]:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            subprocess.run(["scancel", self.job_id], env=self.env)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(
                f"slurm job {self.job_id} still running after {timeout}s (cancelled):\n"
                f"{self.output()[-3000:]}\n{self.slurm_logs()[-6000:]}"
            ) from None
        return rc, self.output()

    def torchx(self, *args: str) -> subprocess.CompletedProcess:
        """``torchx <args>`` from the submit folder (``torchx log`` finds the job's files there)."""
        return subprocess.run(
            [*TORCHX, *args], cwd=str(self.cwd), env=self.env, capture_output=True, text=True, timeout=60
        )

    def slurm_logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')}" for p in sorted(self.cwd.glob("slurm-*")))

    def workers(self) -> Dict[int, int]:
        """``{global rank: pid}`` of this job's live worker processes."""
        return worker_pids(self.tag)


def _state(status: str) -> str:
    m = re.search(r"State: (\w+)", status)
    return m.group(1) if m else f"(no state in {status!r})"


@pytest.fixture(scope="module")
def reference_job(slurm_cluster, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted 1x2 job: the first test checks it, the resume test compares against it."""
    tmp = tmp_path_factory.mktemp("slurm_ref")
    out = tmp / "run"
    t0 = time.time()
    job = SlurmJob(
        slurm_cluster,
        tmp / "submit",
        "1x2",
        ["--data", str(tiny_data), "--out", str(out), *TRAIN_ARGS, "--set", "run.log_every=5"],
    )
    rc, text = job.wait()
    return {"job": job, "rc": rc, "text": text, "out": out, "seconds": time.time() - t0}


def test_two_ranks_train_through_slurm_with_status_and_log(reference_job: dict) -> None:
    job, text = reference_job["job"], reference_job["text"]
    assert reference_job["rc"] == 0 and "Job finished: SUCCEEDED" in text, text[-3000:] + job.slurm_logs()[-6000:]
    s = json.loads((reference_job["out"] / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps"] == EPOCHS * math.ceil(3000 / BATCH)
    assert s["rows_trained"]["per_rank"] == [EPOCHS * 3000] * 2
    assert [(r["rank"], r["local_rank"], r["restart_count"]) for r in s["ranks"]] == [(0, 0, 0), (1, 1, 0)]
    assert s["loss"]["last"] < s["loss"]["first"] - 0.02 and s["metrics"]["test_clean"]["auc"] > 0.75
    # Slurm ran it: the batch script and one srun step (torchrun on the node), all COMPLETED, per sacct.
    acct = subprocess.run(
        ["sacct", "-n", "-P", "-j", job.job_id, "-o", "JobID,State"], env=job.env, capture_output=True, text=True
    ).stdout.split()
    assert acct == [f"{job.job_id}|COMPLETED", f"{job.job_id}.batch|COMPLETED", f"{job.job_id}.0|COMPLETED"], acct

    # torchx status reads sacct (slurmdbd): the job and its one replica.
    st = job.torchx("status", job.handle)
    assert st.returncode == 0 and _state(st.stdout) == "SUCCEEDED", st.stdout + st.stderr
    assert "trainer[0]:SUCCEEDED" in st.stdout and "Msg: COMPLETED" in st.stdout
    # torchx log reads slurm-<id>-trainer-0.out/.err in the submit folder, prefixed by replica and rank.
    log = job.torchx("log", "--streams", "stdout", job.handle)
    assert log.returncode == 0, log.stderr[-3000:]
    assert re.search(r"^trainer/0 \[0\]:done: 94 steps", log.stdout, re.M), log.stdout[-3000:]
    assert re.search(r"^trainer/0 \[0\]:  test_clean +AUC 0\.\d{4}", log.stdout, re.M)
    assert (job.cwd / f"slurm-{job.job_id}-trainer-0.out").exists()
    err = job.torchx("log", f"{job.handle}/trainer/0")  # default stream on Slurm: stderr
    # the ranks keep third-party warnings in <out>/warnings*.log, so stderr may be short: what it has is theirs
    assert err.returncode == 0 and (job.cwd / f"slurm-{job.job_id}-trainer-0.err").exists(), err.stderr[-3000:]
    assert all(line.startswith("trainer/0 ") for line in err.stdout.splitlines() if line.strip()), err.stdout[-3000:]


def test_bad_input_on_one_rank_fails_the_slurm_job_with_its_message(
    slurm_cluster, tiny_data: Path, tmp_path: Path
) -> None:
    data = data_bad_on_rank_1(tiny_data, tmp_path)  # rank 1 of 2 meets a label 2 mid-epoch
    out = tmp_path / "run"
    # -j 2x1: two heterogeneous-job groups whose agents meet at $SLURM_JOB_NODELIST_HET_GROUP_0:<rdzv_port>.
    job = SlurmJob(
        slurm_cluster,
        tmp_path / "submit",
        "2x1",
        ["--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "256", "--set", "data.shuffle=false"],
    )
    rc, text = job.wait(timeout=180)  # a collective timeout (600 s) would fail here
    assert rc != 0 and "Job finished: FAILED" in text, text[-3000:] + job.slurm_logs()[-6000:]

    st = job.torchx("status", job.handle)
    assert _state(st.stdout) == "FAILED" and "Msg: FAILED" in st.stdout, st.stdout + st.stderr
    assert "trainer[0]:FAILED" in st.stdout and "trainer[1]:FAILED" in st.stdout  # both het groups
    log = job.torchx("log", job.handle)  # stderr of both replicas
    assert log.returncode == 0, log.stderr[-3000:]
    msg = (
        "part-00002.parquet: row group 1: column 'label' has 1 value(s) outside {0, 1} (first: 2 at row 493 of "
        "the row group (row 993 of the file)); labels must be 0 or 1"
    )
    # The rank's line, said once by its node's launcher (denoisrec torchrun), through torchx log; one summary
    # line per node instead of torchelastic's ChildFailedError report.
    assert re.search(rf"^trainer/\d denoisrec train: error: {re.escape(f'{data}/train/{msg}')}$", log.stdout, re.M), (
        log.stdout[-6000:]
    )
    assert log.stdout.count(f"denoisrec train: error: {data}/train/{msg}") == 1, log.stdout[-6000:]
    # each node's launcher sums up once: the failing node names its rank; the other node is cancelled by srun
    # (--kill-on-bad-exit), and says its rank stopped because its peer failed, or that srun stopped it, or
    # that it lost the rendezvous (whichever it saw first); no rank or launcher prints a traceback
    summaries = [x for x in log.stdout.splitlines() if "denoisrec torchrun: the job failed:" in x]
    assert sorted(x.split()[0] for x in summaries) == ["trainer/0", "trainer/1"], log.stdout[-6000:]
    assert "Traceback" not in log.stdout and "frame #" not in log.stdout, log.stdout[-6000:]
    assert "timed out" not in log.stdout.lower() and not (out / "summary.json").exists()
    assert job.workers() == {}  # nothing left behind on either "node"


def test_killed_rank_restarts_in_the_allocation_and_resumes(
    slurm_cluster, tiny_data: Path, tmp_path: Path, reference_job: dict
) -> None:
    every = 10
    out = tmp_path / "run"
    job = SlurmJob(
        slurm_cluster,
        tmp_path / "submit",
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
    # Kill rank 1 once a checkpoint exists and training has moved past it (that work is redone).
    deadline = time.time() + 180
    while not ((out / "checkpoints" / "latest").exists() and logged_step(out) >= every + 5):
        assert time.time() < deadline and job.proc.poll() is None, job.output()[-3000:] + job.slurm_logs()[-6000:]
        time.sleep(0.05)
    killed = job.workers()[1]
    os.kill(killed, signal.SIGKILL)
    rc, text = job.wait()
    assert rc == 0 and "Job finished: SUCCEEDED" in text, text[-3000:] + job.slurm_logs()[-6000:]

    s, ref = (json.loads((p / "summary.json").read_text()) for p in (out, reference_job["out"]))
    assert s["steps"] == ref["steps"] == EPOCHS * math.ceil(3000 / BATCH)
    assert [r["restart_count"] for r in s["ranks"]] == [1, 1]  # torchelastic restarted the group once
    assert killed not in [r["pid"] for r in s["ranks"]]
    slurm_out = (job.cwd / f"slurm-{job.job_id}-trainer-0.out").read_text()
    m = re.search(r"^\[0\]:resumed from \S+ at step (\d+)", slurm_out, re.M)
    assert m and int(m.group(1)) >= every, slurm_out[-3000:]
    # One Slurm job, one allocation: the restart happened inside it, not by a requeue.
    st = job.torchx("status", job.handle)
    assert _state(st.stdout) == "SUCCEEDED", st.stdout + st.stderr
    show = subprocess.run(["scontrol", "show", "job", job.job_id], env=job.env, capture_output=True, text=True)
    assert "JobState=COMPLETED" in show.stdout and "Restarts=0" in show.stdout, show.stdout + show.stderr
    for split in ("valid", "test_clean", "test_observed"):
        for k in ("auc", "gauc", "logloss"):
            assert s["metrics"][split][k] == pytest.approx(ref["metrics"][split][k], abs=2e-3), (split, k)

"""Shared fixtures: a tiny synthetic dataset; ``launch``, which runs a function on local gloo ranks and returns
what each rank returned (tests of distributed computation); ``torchrun``, which runs a script under real
torchrun (tests where launching itself is what is tested). ``tests/dist`` is importable (its drivers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIST_DIR = Path(__file__).resolve().parent / "dist"
sys.path.insert(0, str(DIST_DIR))  # the drivers' entry points, importable by the spawned ranks too


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` preset (6,000 train rows in 3 files of 500-row groups), generated once per session.

    Without the trusted signals (``trusted_label``, ``valid_random``) gen-data writes by default: the tests of
    those build them on purpose (tests/data/test_noise_families.py, tests/data/test_trusted.py).
    """
    from denoisrec.trainer.datasets.synthetic import PRESETS, generate, with_trusted

    out = tmp_path_factory.mktemp("tiny")
    generate(str(out), with_trusted(PRESETS["tiny"], 0, 0, 0), seed=0)
    return out


def torchrun(
    script: str, nproc: int, args: List[str], timeout: int = 240, env: Optional[dict] = None
) -> subprocess.CompletedProcess:
    """Run ``tests/dist/<script>`` (or ``-m module``) on ``nproc`` local gloo ranks; fail with its output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", script[3:]] if script.startswith("-m ") else [str(DIST_DIR / script)]
    cmd += args
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, cwd=str(ROOT))
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def _rank(fn: Callable[..., Any], *args: Any) -> Any:
    """A launched rank: one intra-op thread (a forked rank inherits the test process's thread count), then ``fn``."""
    import torch

    torch.set_num_threads(1)
    return fn(*args)


# Imported once by the fork server, so a launched rank starts with them loaded.
FORKSERVER_PRELOAD = ["torch", "torchrec", "torch.distributed.elastic.multiprocessing", "denoisrec.trainer.train"]


def launch(fn: Callable[..., Any], nproc: int, *args: Any) -> List[Any]:
    """Run ``fn(*args)`` on ``nproc`` local ranks and return their return values, in rank order.

    ``torch.distributed.launcher.api.elastic_launch``: processes with ``RANK``, ``WORLD_SIZE`` and
    ``MASTER_ADDR/PORT`` set (``fn`` calls ``init_process_group("gloo")``), no restarts, one thread each.
    The ranks are forked from a fork server (``multiprocessing``'s ``forkserver``) that imported torch,
    TorchRec and the trainer once for the session: no second import per rank (about 2.5x less CPU than
    spawned ranks), and never a fork of this test process, whose threads (gloo, Arrow, OpenMP pools left by
    earlier tests) can hold a lock at the instant of the fork and deadlock the child (seen in the full suite);
    ``fn`` must be a module-level function (of a ``tests/dist`` module) returning something picklable. A rank
    that raises fails the launch with that rank's traceback (``ChildFailedError``).

    >>> launch(world_sum, 3, 10)  # doctest: +SKIP
    [30, 30, 30]
    """
    import multiprocessing

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    multiprocessing.set_forkserver_preload(FORKSERVER_PRELOAD)  # read when the server starts (first launch)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
        start_method="forkserver",
    )
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "PYTHONUNBUFFERED")}
    os.environ.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # inherited by the spawned ranks
    try:
        out = elastic_launch(config, _rank)(fn, *args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return [out[r] for r in range(nproc)]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Tests marked ``gpu`` are collected everywhere and skipped, with the reason, where CUDA is absent."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not cuda_available():
        skip = pytest.mark.skip(reason="no CUDA device: the gpu-marked tests run on a GPU machine (`make gpu-check`)")
        for item in gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-host Slurm cluster (``launch/slurm_local.py``) shared by every Slurm test of the session, stopped
    at its end; the tests skip with the reason where it cannot come up (packages missing, a daemon failed).
    ``DENOISREC_SLURM_KEEP=1`` keeps its folder (daemon logs, ``log/sacct.txt``) for a post-mortem.
    """
    import shutil
    import tempfile

    from denoisrec.launch.slurm_local import LocalSlurm, SlurmUnavailable

    # Under /tmp, not pytest's tmp_path: munged wants a short socket path whose parents every user can reach.
    cluster = LocalSlurm(Path(tempfile.mkdtemp(prefix="denoisrec-slurm-")))
    try:
        cluster.up()
    except SlurmUnavailable as e:
        shutil.rmtree(cluster.root, ignore_errors=True)
        pytest.skip(f"no local Slurm cluster: {e}")
    yield cluster
    killed = cluster.down()
    if os.environ.get("DENOISREC_SLURM_KEEP") == "1":
        print(f"\nSlurm cluster folder kept: {cluster.root}")
    else:
        shutil.rmtree(cluster.root, ignore_errors=True)
    assert not killed, f"Slurm daemons needed SIGKILL to stop: {killed}"


def run_dist_driver(script: str, data: Path, root: Path) -> Dict[str, Any]:
    """Run ``tests/dist/<script>.py --data DATA --root ROOT`` in a fresh process and read what it found.

    The robust-run drivers write their findings to ``<root>/<name>.json`` (:data:`RESULT_FILES`); the result gets
    ``root`` added, for the tests that look at the run folders.
    """
    proc = subprocess.run(
        [sys.executable, str(DIST_DIR / f"{script}.py"), "--data", str(data), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(ROOT),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    found = json.loads((root / f"{RESULT_FILES[script]}.json").read_text())
    found["root"] = root
    return found


RESULT_FILES = {"robust_runs": "robust", "robust_round2": "round2"}
"""Driver → the name of the JSON file it writes into ``--root``."""

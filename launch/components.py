"""torchx components for denoisrec: ``train``, ``bench`` and ``gen_data``.

Each is a typed function that returns a :class:`torchx.specs.AppDef`, in the style of
``torchx/components/dist.py``. ``train`` and ``bench`` start ``nnodes × nproc_per_node`` workers with
torchrun, through ``denoisrec torchrun`` (``python -m denoisrec.trainer.cli torchrun``: torchrun's own
launcher and options, with one line per failure instead of its ``ChildFailedError`` traceback). The elastic
agent on each node rendezvouses with the others, sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``
for its workers, and restarts the whole group ``max_restarts`` times when a worker fails. The trainer builds
its process group from those variables (NCCL on CUDA, gloo on CPU). Before it returns the AppDef, ``train``
runs the trainer's torch-free option check (``denoisrec launch --check-only``) in a subprocess, so a mistake
is one line before anything is submitted (``precheck=False`` skips it).

This module *names* the entry points (``python -m denoisrec.trainer.cli``) and never imports them.
``torchx`` loads this file in a process that needs only torchx.

The same component runs on a laptop and on a cluster; only the scheduler (``-s``) changes::

    # 2 ranks on this machine (CPU + gloo); .torchxconfig points --python at .venv/bin/python
    torchx run -s local_cwd launch/components.py:train -j 1x2 -- --data data/tiny --out runs/x --epochs 1
    # 2 simulated nodes × 1 rank: two elastic agents meet by c10d rendezvous on localhost
    torchx run -s local_cwd launch/components.py:train -j 2x1 --rdzv_port 29611 -- --data data/tiny ...
    # 8 nodes × 8 GPUs on Slurm (see docs/launch.md)
    torchx run -s slurm -cfg partition=gpu,time=04:00:00 launch/components.py:train -j 8x8 --gpu 8 ...

Example (Python)::

    from denoisrec.launch.components import train

    app = train("--data", "data/tiny", j="2x1", max_restarts=3)
    role = app.roles[0]
    role.num_replicas        # 2: one torchrun agent per node
    role.args[1]             # 'python -m denoisrec.trainer.cli torchrun --rdzv_backend c10d --rdzv_endpoint
                             #  $${${rank0_env}:=localhost}:29500 --rdzv_id '${app_id}' --nnodes 2
                             #  --nproc_per_node 1 --max_restarts 3 ... -- --data data/tiny'
                             # (the scheduler fills in the macros ${rank0_env}, ${app_id})
"""

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torchx.specs as specs
from torchx.components.dist import parse_nnodes
from torchx.specs import macros
from torchx.specs.finder import ComponentValidationException

CLI_MODULE = "denoisrec.trainer.cli"
"""``python -m denoisrec.trainer.cli <command> ...``: the ``denoisrec`` command line (``torchrun``, ``launch``,
``gen-data``, ``bench``)."""

LAUNCHER = "torchrun"
"""``denoisrec torchrun [torchrun options] -- ARGS``: the launcher on every node. It starts ``python -m
denoisrec.trainer ARGS`` (``denoisrec bench`` for ``-- bench ...``) on each rank."""

PRECHECK = "launch"
"""``denoisrec launch --check-only -j J -- TRAINER_ARGS``: the torch-free option check run before submitting."""

PRECHECKED_ENV = "DENOISREC_PRECHECKED"
"""Set by ``denoisrec launch`` to the trainer options it has already checked: the component does not repeat it."""

PRECHECK_TIMEOUT_S = 120
"""The most the pre-submit check may take (it needs about a second)."""

DEFAULT_IMAGE = "denoisrec:latest"
"""Container image for container schedulers (Kubernetes); built from ``launch/Dockerfile``. Ignored by
``local_cwd`` and Slurm, which run in the current directory."""

DEBUG_ENV: Dict[str, str] = {
    "NCCL_DEBUG": "INFO",
    "NCCL_DEBUG_SUBSYS": "INIT,NET",
    "TORCH_DISTRIBUTED_DEBUG": "DETAIL",
    "TORCH_SHOW_CPP_STACKTRACES": "1",
    "LOGLEVEL": "INFO",
}
"""Set by ``--debug``: NCCL's transport choice and init log, collective checks, C++ stack traces, and the
elastic agent's INFO log."""


class PreSubmitError(ComponentValidationException, ValueError):
    """A component argument or trainer option refused before anything is submitted. torchx's ``run`` prints
    its message as one error line (it is a ``ComponentValidationException``); Python callers catch a
    ``ValueError``.
    """


class _noquote(str):
    """An argument that :func:`_shell_join` leaves unquoted (a ``${VAR:=default}`` the shell must expand)."""


def _shell_join(args: Iterable[str]) -> str:
    return " ".join(a if isinstance(a, _noquote) else shlex.quote(a) for a in args)


def parse_j(j: str) -> Tuple[int, int, int]:
    """``-j [MIN:]NxM`` → ``(min_nnodes, max_nnodes, nproc_per_node)``: torchx's ``parse_nnodes`` (``-j M``
    means ``1xM``), and the counts at least 1 with MIN ≤ MAX, which it leaves unchecked.

    Example::

        parse_j("2x4")    # (2, 2, 4)
        parse_j("2:4x8")  # (2, 4, 8): elastic, starts with 2 to 4 nodes
        parse_j("3")      # (1, 1, 3)
    """
    try:
        min_nnodes, max_nnodes, nproc_per_node, _ = parse_nnodes(j.strip())
    except ValueError:
        raise PreSubmitError(
            f"-j {j!r}: expected NxM (nodes x processes per node), MIN:MAXxM, or M; e.g. -j 2x4"
        ) from None
    if nproc_per_node < 1 or max_nnodes < 1 or not 1 <= min_nnodes <= max_nnodes:
        raise PreSubmitError(f"-j {j!r}: need 1 <= MIN <= MAX nodes and at least 1 process per node")
    return min_nnodes, max_nnodes, nproc_per_node


def _rdzv_endpoint(max_nnodes: int, rdzv_port: int, rdzv_endpoint: Optional[str]) -> str:
    if rdzv_endpoint:
        return rdzv_endpoint
    if max_nnodes == 1:
        return "localhost:0"  # one agent: it hosts the store itself on a free port
    # Every node reaches the store that the first node's agent hosts. The scheduler names that host in the
    # variable ``macros.rank0_env`` stands for (TORCHX_RANK0_HOST on local_cwd, the het-group-0 node list on
    # Slurm, the Volcano service name on Kubernetes); some set it on every node but node 0, hence the default.
    return _noquote(f"$${{{macros.rank0_env}:=localhost}}:{rdzv_port}")


def presubmit_check(trainer_args: Sequence[str], j: str, python: str) -> None:
    """Check the trainer options as every rank would, torch-free, in a subprocess (this module never imports
    the trainer): ``PYTHON -m denoisrec.trainer.cli launch --check-only -j J -- TRAINER_ARGS``. The world size
    comes from ``j``; the data's schema is read only where ``--data`` is visible from here.

    Example::

        presubmit_check(["--data", "data/tiny", "--denoiser", "tce", "-p", "beta=1"], "1x2", "python")
        # PreSubmitError: denoisrec train: error: -p beta=1: tce has no option 'beta'; its options: ...

    Args:
        trainer_args: the trainer's options, as the component passes them on.
        j: the component's ``-j``.
        python: the job's interpreter, used when this one (``sys.executable``, torchx's) lacks denoisrec.

    Raises:
        PreSubmitError: the check's one line, or why the check could not run (and that ``--precheck False``
            skips it).
    """
    if os.environ.get(PRECHECKED_ENV) == shlex.join(trainer_args):  # denoisrec launch checked these already
        return
    exe = sys.executable if importlib.util.find_spec("denoisrec") is not None else (shutil.which(python) or python)
    cmd = [exe, "-m", CLI_MODULE, PRECHECK, "--check-only", "-j", j, "--", *trainer_args]
    check = f"the pre-submit check ({exe} -m {CLI_MODULE} {PRECHECK} --check-only)"
    skip = "pass --precheck False to submit without it (e.g. when this host lacks the job's interpreter)"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PRECHECK_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PreSubmitError(f"{check} failed: {e}; {skip}") from None
    lines = proc.stderr.strip().splitlines()
    if proc.returncode == 2 and lines:
        raise PreSubmitError(lines[-1])
    if proc.returncode != 0:
        said = lines[-1] if lines else "no output"
        raise PreSubmitError(f"{check} exited {proc.returncode}: {said}; {skip}")


class _Torchrun:
    """The torchrun role that ``train`` and ``bench`` share. A class, not a module-level function: torchx's
    component finder lists every module-level function that returns an ``AppDef`` (``torchx builtins``).
    """

    @staticmethod
    def app(
        role_name: str,
        worker_args: List[str],
        *,
        j: str,
        name: str,
        image: str,
        python: str,
        cpu: int,
        gpu: int,
        memMB: int,
        h: Optional[str],
        env: Optional[Dict[str, str]],
        max_restarts: int,
        max_retries: int,
        rdzv_backend: str,
        rdzv_endpoint: Optional[str],
        rdzv_port: int,
        rdzv_conf: Optional[str],
        mounts: Optional[List[str]],
        debug: bool,
        tee: int,
        precheck: bool,
    ) -> specs.AppDef:
        min_nnodes, max_nnodes, nproc_per_node = parse_j(j)
        if max_restarts < 0 or max_retries < 0:
            raise PreSubmitError(f"max_restarts={max_restarts}, max_retries={max_retries}: must be >= 0")
        if precheck:
            presubmit_check(worker_args, j, python)
        nnodes = f"{min_nnodes}:{max_nnodes}" if min_nnodes != max_nnodes else str(max_nnodes)
        cmd: List[str] = [
            python,
            "-m",
            CLI_MODULE,
            LAUNCHER,
            "--rdzv_backend",
            rdzv_backend,
            "--rdzv_endpoint",
            _rdzv_endpoint(max_nnodes, rdzv_port, rdzv_endpoint),
            "--rdzv_id",
            macros.app_id,
            "--nnodes",
            nnodes,
            "--nproc_per_node",
            str(nproc_per_node),
            "--max_restarts",
            str(max_restarts),
            "--tee",
            str(tee),
            "--role",
            "",
        ]
        if rdzv_conf:
            cmd += ["--rdzv_conf", rdzv_conf]
        if rdzv_backend == "static":
            cmd += ["--node_rank", macros.replica_id]
        cmd += ["--", *worker_args]

        role_env = {"PYTHONUNBUFFERED": "1", "LOGLEVEL": "WARNING"}
        # torchelastic >= 2.5 shares its rendezvous TCPStore with the workers by default, without a per-restart
        # key prefix, so a restarted group can read the dead group's addresses and fail to connect (gloo
        # "connectFullMesh ... Connection refused", NCCL the same: pytorch/pytorch#135712, #167288). Opting out
        # gives every restart a fresh store hosted by rank 0.
        role_env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
        if debug:
            role_env.update(DEBUG_ENV)
        role_env.update(env or {})
        return specs.AppDef(
            name=name,
            roles=[
                specs.Role(
                    name=role_name,
                    image=image,
                    entrypoint="bash",
                    args=["-c", _shell_join(cmd)],
                    env=role_env,
                    num_replicas=max_nnodes,
                    min_replicas=min_nnodes,
                    resource=specs.resource(cpu=cpu, gpu=gpu, memMB=memMB, h=h),
                    max_retries=max_retries,
                    port_map={"c10d": rdzv_port},
                    mounts=specs.parse_mounts(mounts) if mounts else [],
                )
            ],
        )


def train(
    *trainer_args: str,
    j: str = "1x2",
    name: str = "denoisrec-train",
    image: str = DEFAULT_IMAGE,
    python: str = "python",
    cpu: int = 4,
    gpu: int = 0,
    memMB: int = 16384,
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_restarts: int = 0,
    max_retries: int = 0,
    rdzv_backend: str = "c10d",
    rdzv_endpoint: Optional[str] = None,
    rdzv_port: int = 29500,
    rdzv_conf: Optional[str] = None,
    mounts: Optional[List[str]] = None,
    debug: bool = False,
    tee: int = 3,
    precheck: bool = True,
) -> specs.AppDef:
    """Train denoisrec on ``nnodes × nproc_per_node`` ranks: ``denoisrec torchrun ... -- TRAINER_ARGS`` on each node.

    Usage:
        torchx run -s local_cwd launch/components.py:train -j 1x2 -- --data data/tiny --out runs/x --epochs 1

    Give repeated trainer options as one list (``--set a=1 b=2``): torchx rejects an option named twice.
    The recommended set-up is ``-- --preset recommended --data DIR`` (``denoisrec train --help``: presets).
    Registered as ``denoisrec.train`` (``torchx builtins``): ``torchx run denoisrec.train ...`` from any folder.
    On Slurm, ``--log`` follows stderr; the training console is stdout: ``torchx log --streams stdout APP``.

    Args:
        trainer_args: the trainer's own options, passed through unchanged (``python -m denoisrec.trainer --help``)
        j: [MIN:]NxM: N nodes (MIN:N for an elastic range) of M processes each; M alone means 1xM.
            On GPU hosts M is the number of GPUs per node (each rank takes cuda:LOCAL_RANK)
        name: job name shown by the scheduler
        image: container image (Kubernetes); local_cwd and Slurm run in the current directory and ignore it
        python: the interpreter on every node that has torch and denoisrec installed
            (the repository's .torchxconfig sets .venv/bin/python)
        cpu: CPU cores per node
        gpu: GPUs per node
        memMB: memory per node in MB
        h: a registered named resource (e.g. aws_p4d.24xlarge); overrides cpu, gpu and memMB
        env: environment variables for every worker, e.g. NCCL_SOCKET_IFNAME=eth0,NCCL_IB_HCA=mlx5
        max_restarts: how many times torchelastic restarts the whole worker group after a worker fails
            (resume needs the trainer's --set run.checkpoint_every=N run.resume=auto)
        max_retries: how many times the scheduler resubmits a failed node or job (Slurm requeue, Volcano retry)
        rdzv_backend: torchelastic rendezvous backend: c10d (a store hosted by the first node's agent),
            etcd-v2 (an external etcd; give --rdzv_endpoint) or static (fixed node ranks, no elasticity)
        rdzv_endpoint: HOST:PORT of the rendezvous; default: a free port on one node, else the scheduler's
            rank-0 host on rdzv_port
        rdzv_port: the port of the first node's rendezvous store (multi-node c10d only)
        rdzv_conf: extra rendezvous settings, e.g. join_timeout=900,read_timeout=120 for large jobs
        mounts: storage to mount (Kubernetes/Docker), e.g. type=volume,src=denoisrec-pvc,dst=/mnt/shared
        debug: enable NCCL/torch.distributed debug logs (see DEBUG_ENV)
        tee: which worker streams torchrun copies to the job log with a [rank] prefix:
            0 none, 1 stdout, 2 stderr, 3 both
        precheck: check the trainer options here first (torch-free, about a second) and refuse a mistake in
            one line before submitting; False where this host lacks the job's interpreter
    """
    return _Torchrun.app(
        "trainer",
        list(trainer_args),
        j=j,
        name=name,
        image=image,
        python=python,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_restarts=max_restarts,
        max_retries=max_retries,
        rdzv_backend=rdzv_backend,
        rdzv_endpoint=rdzv_endpoint,
        rdzv_port=rdzv_port,
        rdzv_conf=rdzv_conf,
        mounts=mounts,
        debug=debug,
        tee=tee,
        precheck=precheck,
    )


def bench(
    *bench_args: str,
    j: str = "1x1",
    name: str = "denoisrec-bench",
    image: str = DEFAULT_IMAGE,
    python: str = "python",
    cpu: int = 4,
    gpu: int = 0,
    memMB: int = 16384,
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    rdzv_backend: str = "c10d",
    rdzv_endpoint: Optional[str] = None,
    rdzv_port: int = 29500,
    mounts: Optional[List[str]] = None,
    debug: bool = False,
    tee: int = 3,
) -> specs.AppDef:
    """Run ``denoisrec bench BENCH_ARGS`` on ``nnodes × nproc_per_node`` ranks: ``denoisrec torchrun ... -- bench``.

    Usage:
        torchx run -s local_cwd launch/components.py:bench -j 1x2 -- throughput --quick

    A benchmark must measure what it reports, so there are no restarts: a failed bench fails the job.

    Args:
        bench_args: the arguments of ``denoisrec bench`` (its subcommand first)
        j: [MIN:]NxM: N nodes of M processes each; M alone means 1xM
        name: job name shown by the scheduler
        image: container image (Kubernetes); ignored by local_cwd and Slurm
        python: the interpreter on every node that has torch and denoisrec installed
        cpu: CPU cores per node
        gpu: GPUs per node
        memMB: memory per node in MB
        h: a registered named resource; overrides cpu, gpu and memMB
        env: environment variables for every worker, e.g. NCCL_SOCKET_IFNAME=eth0
        rdzv_backend: torchelastic rendezvous backend (c10d, etcd-v2, static)
        rdzv_endpoint: HOST:PORT of the rendezvous (default as for train)
        rdzv_port: the port of the first node's rendezvous store (multi-node c10d only)
        mounts: storage to mount (Kubernetes/Docker), e.g. type=volume,src=denoisrec-pvc,dst=/mnt/shared
        debug: enable NCCL/torch.distributed debug logs
        tee: worker streams copied to the job log: 0 none, 1 stdout, 2 stderr, 3 both
    """
    return _Torchrun.app(
        "bench",
        ["bench", *bench_args],
        j=j,
        name=name,
        image=image,
        python=python,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_restarts=0,
        max_retries=0,
        rdzv_backend=rdzv_backend,
        rdzv_endpoint=rdzv_endpoint,
        rdzv_port=rdzv_port,
        rdzv_conf=None,
        mounts=mounts,
        debug=debug,
        tee=tee,
        precheck=False,
    )


def gen_data(
    *gen_args: str,
    name: str = "denoisrec-gen-data",
    image: str = DEFAULT_IMAGE,
    python: str = "python",
    cpu: int = 2,
    memMB: int = 8192,
    env: Optional[Dict[str, str]] = None,
    mounts: Optional[List[str]] = None,
) -> specs.AppDef:
    """Write a synthetic dataset with ``denoisrec gen-data GEN_ARGS`` (one process, on one node).

    Usage:
        torchx run -s local_cwd launch/components.py:gen_data -- --preset tiny --out data/tiny

    On a cluster, write to storage every training node mounts (see docs/launch.md).

    Args:
        gen_args: the arguments of ``denoisrec gen-data`` (--preset, --out, --seed, --rows)
        name: job name shown by the scheduler
        image: container image (Kubernetes); ignored by local_cwd and Slurm
        python: the interpreter that has denoisrec installed
        cpu: CPU cores
        memMB: memory in MB
        env: environment variables
        mounts: storage to mount (Kubernetes/Docker), e.g. type=volume,src=denoisrec-pvc,dst=/mnt/shared
    """
    return specs.AppDef(
        name=name,
        roles=[
            specs.Role(
                name="gen-data",
                image=image,
                entrypoint="bash",
                args=["-c", _shell_join([python, "-m", CLI_MODULE, "gen-data", *gen_args])],
                env={"PYTHONUNBUFFERED": "1", **(env or {})},
                num_replicas=1,
                resource=specs.resource(cpu=cpu, gpu=0, memMB=memMB),
                mounts=specs.parse_mounts(mounts) if mounts else [],
            )
        ],
    )

"""The benches' one way to run a job on N ranks: a spec file in, torchrun (or this process), one result file out.

:func:`run_spec` writes a bench's spec (a JSON dict) to a temporary folder, names the result file in it
(``spec["result"]``), runs the bench module's worker on ``nproc`` local ranks under
``python -m torch.distributed.run --standalone`` (or, for one rank outside torchrun, in this process) and
returns the result the worker wrote. :func:`run_ranks` is the step below it, for a job that takes plain
arguments (``bench peers`` trains with ``python -m denoisrec.trainer``) and leaves a result file of its own.
A job that exits non-zero, runs past its time limit or writes no result raises one :class:`RanksFailed`
carrying the tail of the ranks' stderr. A worker module ends with :func:`worker_main`; its worker reads the
spec with :func:`read_spec` and writes the result (on rank 0) with :func:`write_result`.

Example::

    from denoisrec.trainer.bench.harness import run_spec

    result = run_spec("denoisrec.trainer.bench.throughput", {"data": "data/small", ...}, nproc=2,
                      what="bench throughput", threads=1, timeout=600)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence

TAIL_CHARS = 5000  # of the ranks' stderr (and captured stdout) kept in a RanksFailed


class RanksFailed(RuntimeError):
    """A bench job on local ranks failed: its command, exit status and the tail of its output.

    Args:
        what: the bench, as the message names it (``"bench throughput"``).
        cmd: the command that ran.
        returncode: its exit status (``None``: it ran past its time limit).
        tail: the last :data:`TAIL_CHARS` of its stderr (after any captured stdout).
        problem: what went wrong, when it is not the exit status (no result file).
    """

    def __init__(self, what: str, cmd: Sequence[str], returncode: Optional[int], tail: str, problem: str = "") -> None:
        self.what, self.cmd, self.returncode, self.tail = what, list(cmd), returncode, tail
        status = problem or ("ran past its time limit" if returncode is None else f"failed ({returncode})")
        super().__init__(f"{what}: {' '.join(self.cmd)} {status}:\n{tail}")

    @property
    def reason(self) -> str:
        """The one line that says why: the trainer's ``error:`` line, else the first exception line (the rank that
        failed first; the others' "connection closed" errors follow it), else the exit status.

        Returns:
            That line, without torchrun's ``[rankN]:`` prefix.
        """
        lines = self.tail.splitlines()
        ours = [x.split(" error: ", 1)[-1] for x in lines if re.search(r"^(\[rank\d+\]: )?denoisrec \w+: error: ", x)]
        errors = [x for x in lines if re.search(r"\w+(Error|Exception): ", x) and "elastic" not in x]
        line = (ours or errors or [f"exit {self.returncode}"])[0]
        return re.sub(r"^\[rank\d+\]: ", "", line).strip()


def torchrun_command(target: str, args: Sequence[str], nproc: int) -> List[str]:
    """The command that runs ``target`` on ``nproc`` local ranks.

    Args:
        target: a module (``denoisrec.trainer.bench.quality``) or the path of a ``.py`` script.
        args: its arguments.
        nproc: the number of ranks.

    Returns:
        ``python -m torch.distributed.run --standalone --nproc_per_node=N [-m] target args...``.
    """
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return run + ([target] if target.endswith(".py") else ["-m", target]) + list(args)


def run_ranks(
    target: str,
    args: Sequence[str],
    nproc: int,
    *,
    result: str,
    what: str,
    threads: Optional[int] = None,
    timeout: Optional[float] = None,
    echo: bool = False,
) -> Dict[str, Any]:
    """Run ``target args`` on ``nproc`` ranks under torchrun and read the JSON file it leaves at ``result``.

    Args:
        target: the module or script (:func:`torchrun_command`).
        args: its arguments.
        nproc: the number of ranks.
        result: the JSON file the job writes.
        what: the bench, for the error message.
        threads: ``OMP_NUM_THREADS`` for each rank (``None``: inherited).
        timeout: seconds before the job is stopped (``None``: no limit).
        echo: let the ranks' stdout through to this process's (progress lines); stderr is always captured.

    Returns:
        The result file's contents.

    Raises:
        RanksFailed: the job exited non-zero, ran past ``timeout`` or left no result.
    """
    cmd = torchrun_command(target, args, nproc)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    stdout = None if echo else subprocess.PIPE
    try:
        proc = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise RanksFailed(what, cmd, None, _tail(e.stdout, e.stderr)) from None
    if proc.returncode != 0:
        raise RanksFailed(what, cmd, proc.returncode, _tail(proc.stdout, proc.stderr))
    if not os.path.exists(result):
        raise RanksFailed(what, cmd, 0, _tail(proc.stdout, proc.stderr), problem=f"wrote no {result}")
    with open(result) as f:
        return json.load(f)


def run_spec(
    module: str,
    spec: Dict[str, Any],
    nproc: int,
    *,
    what: str,
    in_process: Optional[Callable[[str], None]] = None,
    threads: Optional[int] = None,
    timeout: Optional[float] = None,
    echo: bool = False,
) -> Dict[str, Any]:
    """Run a bench worker on ``spec``: ``python -m module --worker SPEC`` on ``nproc`` ranks, or ``in_process``.

    Args:
        module: the bench module whose ``__main__`` is :func:`worker_main` (or a ``.py`` script taking
            ``--worker SPEC``).
        spec: the job, JSON-serialisable; ``spec["result"]`` is set here.
        nproc: the number of ranks.
        what: the bench, for the error message.
        in_process: the worker, called with the spec's path in this process when ``nproc`` is 1 and this
            process is not a torchrun rank itself (``None``: always torchrun).
        threads: as :func:`run_ranks`.
        timeout: as :func:`run_ranks` (torchrun only).
        echo: as :func:`run_ranks`.

    Returns:
        What the worker wrote with :func:`write_result`.

    Raises:
        RanksFailed: as :func:`run_ranks`; in this process, the worker's own exception propagates.
    """
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(dict(spec, result=result), f)
        if in_process is not None and nproc == 1 and "WORLD_SIZE" not in os.environ:
            in_process(spec_path)
            with open(result) as f:
                return json.load(f)
        args = ["--worker", spec_path]
        return run_ranks(module, args, nproc, result=result, what=what, threads=threads, timeout=timeout, echo=echo)


def read_spec(path: str) -> Dict[str, Any]:
    """The spec :func:`run_spec` wrote (``spec["result"]`` names the result file).

    Args:
        path: the spec file.

    Returns:
        The spec.
    """
    with open(path) as f:
        return json.load(f)


def write_result(spec: Dict[str, Any], result: Dict[str, Any]) -> None:
    """Write the job's result where :func:`run_spec` reads it (call it on one rank).

    Args:
        spec: the job's spec.
        result: JSON-serialisable (other values are written with ``str``).
    """
    with open(spec["result"], "w") as f:
        json.dump(result, f, indent=2, default=str)


def worker_main(worker: Callable[[str], None], module: str, argv: Optional[List[str]] = None) -> None:
    """A bench module's ``__main__``: ``python -m module --worker SPEC`` runs ``worker(SPEC)``.

    Args:
        worker: the worker.
        module: the module's name, for the usage line.
        argv: the arguments (``None``: ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--worker":
        worker(argv[1])
        return
    bench = module.rsplit(".", 1)[-1]
    sys.exit(f"usage: python -m {module} --worker SPEC.json (use `denoisrec bench {bench}` instead)")


def _tail(stdout: Optional[Any], stderr: Optional[Any]) -> str:
    """The last :data:`TAIL_CHARS` of the job's output: captured stdout first, then stderr."""

    def text(x: Optional[Any]) -> str:  # TimeoutExpired carries bytes even with text=True (subprocess docs)
        return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")

    out, err = text(stdout), text(stderr)
    return ((out[-2000:] + "\n") if out.strip() else "") + err[-TAIL_CHARS:]

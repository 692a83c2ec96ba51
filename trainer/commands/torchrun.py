"""``denoisrec torchrun``: torchrun for the trainer, with one line per failure instead of the launcher's traceback.

    denoisrec torchrun --standalone --nproc_per_node 2 -- --data data/small --out runs/x
    denoisrec torchrun --standalone --nproc_per_node 2 -- bench throughput --quick

The options before ``--`` are torchrun's (all of them: ``--rdzv_*``, ``--nnodes``, ``--max_restarts``, ...);
after it, ``denoisrec train``'s, or ``bench`` and ``denoisrec bench``'s arguments. It runs
``torch.distributed.run`` in this process with ``-m denoisrec.trainer`` (``-m denoisrec.trainer.cli bench``)
and catches its ``ChildFailedError``: the ranks leave their one-line errors in torchelastic's error files, and
this launcher prints each distinct line once, then a line for each rank that the failure stopped
(:func:`failure_lines`), then one summary line (which ranks failed, with what status) instead of torchrun's
traceback; a launcher stopped by a signal (the scheduler ending every node) says one summary line too. Under an
outer agent (torchx) the failing rank's error file is copied to this process's own
(``TORCHELASTIC_ERROR_FILE``), as torchrun's ``@record`` does, so the scheduler's status carries the line too.
The torchx components start their workers with this command.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any, Dict, List, Optional, Tuple

HELP = "torchrun the trainer on N ranks: denoisrec torchrun --nproc_per_node 2 -- --data DIR (errors in one line)"
ENTRY = ("denoisrec.trainer",)
"""What each rank runs (``python -m`` and its first words) for trainer options after ``--``."""
BENCH_ENTRY = ("denoisrec.trainer.cli", "bench")
"""What each rank runs for ``-- bench ...``."""
RAW = True  # torchrun's options, then the trainer's: the denoisrec parser never reads them


def add_arguments(p: argparse.ArgumentParser) -> None:
    """None here: the command line goes to torchrun's own parser (see :data:`RAW`)."""


def run(a: argparse.Namespace) -> int:
    """``denoisrec torchrun ARGV``: ``a.argv`` is the whole command line, ``torchrun`` first."""
    return main(a.argv[1:])


def main(argv: Optional[List[str]] = None) -> int:
    """Run the trainer under torchrun; the exit status is the first failed rank's (0 when all succeed).

    Args:
        argv: torchrun's options, ``--``, the trainer's options (or ``bench`` and its arguments).

    Returns:
        The exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    head, tail = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    _quiet_cpp_warnings()
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, get_error_handler
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    from denoisrec.trainer.commands.suggest import LAUNCHER_SAYS

    parser = get_args_parser()
    parser.prog = "denoisrec torchrun"
    if head[:1] in (["-h"], ["--help"]):
        parser.print_help()
        print(
            "\nafter --: the trainer's options (denoisrec train --help), or bench BENCH ARGS (denoisrec bench --help)"
        )
        return 0
    args = parser.parse_args([*head, "-m", *worker_argv(tail)])
    outer_error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")  # set by an outer agent (torchx), if any
    # the agent's own per-rank ERROR lines repeat what the summary below says
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    # and its log tailer's traceback when the launcher is stopped (a scheduler's SIGTERM) says nothing more
    logging.getLogger("torch.distributed.elastic.multiprocessing.tail_log").setLevel(logging.CRITICAL)
    os.environ[LAUNCHER_SAYS] = "1"  # the workers inherit it: their one-line errors are said here, once
    try:
        torchrun(args)
    except ChildFailedError as e:
        _hold_signals()  # a scheduler's SIGTERM now (it stops every node once one failed) must not cut the lines
        failed = sorted(e.failures.items())
        command = "bench" if tail[:1] == ["bench"] else "train"
        roots, lines = failure_lines([(r, f.exitcode, f.error_file_data) for r, f in failed], command)
        for line in lines:
            print(line, file=sys.stderr)
        ranks = ", ".join(f"rank {r} ({_status(f.exitcode)}, pid {f.pid})" for r, f in failed)
        print(f"denoisrec torchrun: the job failed: {ranks}", file=sys.stderr)
        # the failure itself, not a rank it stopped, goes on to the outer agent (what torchrun's @record does)
        # and gives the exit status; a node whose ranks were only stopped passes nothing on: torchx reports the
        # oldest error file of all nodes, and the failing node's is the one that says why
        first = next((f for r, f in failed if r == roots[0]), None) if roots else None
        if outer_error_file and first and os.path.isfile(first.error_file):
            get_error_handler().dump_error_file(first.error_file, first.exitcode)
        return exit_status([(r, f.exitcode) for r, f in failed], roots)
    except SignalException as e:  # the agent stopped its workers with the signal; the scheduler stops the job
        _hold_signals()
        print(
            f"denoisrec torchrun: the job failed: this node was stopped ({_status(-e.sigval)}; a scheduler stops "
            "every node once one fails, and that node's lines say why)",
            file=sys.stderr,
        )
        return 128 + int(e.sigval)
    except RendezvousError as e:  # the agent has stopped its workers; typically another node's agent ended first
        _hold_signals()
        why = " ".join((f"{e}: {e.__cause__}" if e.__cause__ else str(e)).split())
        print(
            f"denoisrec torchrun: the job failed: rendezvous error ({type(e).__name__}: {why}); "
            "when another node failed first, its lines say why",
            file=sys.stderr,
        )
        return 1
    return 0


def worker_argv(tail: List[str]) -> List[str]:
    """What every rank runs after ``python -m``: the trainer with ``tail``, or ``denoisrec bench`` when ``tail``
    starts with ``bench`` (trainer options never start with a bare word).

    Args:
        tail: the command line after ``--``.

    Returns:
        The module and its arguments, e.g. ``["denoisrec.trainer", "--data", "d"]``.
    """
    if tail[:1] == ["bench"]:
        return [*BENCH_ENTRY, *tail[1:]]
    return [*ENTRY, *tail]


def failure_lines(failed: List[Tuple[int, int, Any]], command: str = "train") -> Tuple[List[int], List[str]]:
    """What the launcher prints for its failed ranks, one line per failure: each failing rank's own line (each
    distinct line once), then one line for every rank that a failure stopped, naming the failed rank.

    A rank stopped by a peer's failure either left that line itself (its collective lost the peer, see
    :mod:`denoisrec.trainer.distributed.peers`) or was stopped by the agent (``SIGTERM``) before it could; the
    failures are the other ranks. A rank the agent stopped gets no line when the failure is one every rank raises
    alike (a usage mistake: it would have said the same).

    Args:
        failed: ``(rank, exit code, error-file JSON)`` of each failed rank, in rank order.
        command: the workers' command (``train`` or ``bench``), for the lines the launcher writes itself.

    Returns:
        The failures' ranks, and the lines.
    """
    from denoisrec.trainer.distributed.peers import AGREED_ERROR, PEER_FAILED, peer_line

    stopped: Dict[int, Optional[int]] = {}  # rank -> the failed rank it named (None: not known)
    own: Dict[int, str] = {}
    for rank, code, data in failed:
        info = _info(data)
        if PEER_FAILED in info:
            peer = int(info[PEER_FAILED])
            stopped[rank] = None if peer < 0 else peer
        elif one_line_errors([data]):
            own[rank] = one_line_errors([data])[0]
        elif code == -signal.SIGTERM:  # stopped by the agent once another rank had failed
            stopped[rank] = None
    roots = [r for r, _, _ in failed if r not in stopped]  # none when the failure was on another node
    lines = list(dict.fromkeys(own[r] for r in roots if r in own))
    said = [r for r in roots if r in own]
    wrote = {r for r, _, d in failed if PEER_FAILED in _info(d)}
    codes = {r: c for r, c, _ in failed}
    agreed = any(AGREED_ERROR in _info(d) for r, _, d in failed if r in roots)  # the stopped ranks shared it
    for rank, named in stopped.items():
        if agreed and rank not in wrote:
            continue
        how: Optional[str] = None
        if named is None and roots:
            named = said[0] if said else roots[0]
            how = None if said else _status(codes[roots[0]])  # a killed failure left no line of its own
        if rank in wrote or named in own:  # (a rank the agent stopped after a silent failure: the summary says it)
            lines.append(f"denoisrec {command}: {peer_line(rank, named, how)}")
    return roots, lines


def exit_status(failed: List[Tuple[int, int]], roots: List[int]) -> int:
    """The job's exit status: the first failure's own (a rank it stopped exits 1 or by a signal), else the
    first failed rank's, else 1 (every rank ended by a signal).

    Args:
        failed: ``(rank, exit code)`` of each failed rank, in rank order (a signal's code is negative).
        roots: the failures' ranks (:func:`failure_lines`).

    Returns:
        The exit status, 1 to 255.
    """
    codes = [c for r, c in failed if r in roots and 0 < c < 256] + [c for _, c in failed if 0 < c < 256]
    return codes[0] if codes else 1


def _info(data: Any) -> Dict[str, Any]:
    """The ``extraInfo`` of an error file's JSON (``{}`` when there is none)."""
    message = data.get("message") if isinstance(data, dict) else None
    info = message.get("extraInfo") if isinstance(message, dict) else None
    return info if isinstance(info, dict) else {}


def one_line_errors(error_files: List[Any]) -> List[str]:
    """The one-line errors (:func:`denoisrec.trainer.cli.main` writes them) among the ranks' torchelastic error
    files, in rank order; a traceback's file (written by ``@record``, and printed by its rank) is left out.

    Args:
        error_files: each failed rank's error-file JSON (torchelastic's ``ProcessFailure.error_file_data``).

    Returns:
        The lines, possibly repeated (every rank may say the same).
    """
    lines = []
    for data in error_files:
        message = data.get("message") if isinstance(data, dict) else None
        if isinstance(message, dict) and message.get("message") == message.get("extraInfo", {}).get("py_callstack"):
            lines.append(str(message["message"]))
    return lines


def _quiet_cpp_warnings() -> None:
    """Load torch with its C++ warnings off in this process only: the agent's store client prints a C++ stack
    for every call to a store whose host (another node's agent) has gone, as the job ends. The workers, started
    later, inherit the environment as it was.
    """
    if "torch" in sys.modules or "TORCH_CPP_LOG_LEVEL" in os.environ:
        return
    os.environ["TORCH_CPP_LOG_LEVEL"] = "ERROR"  # read once, when libtorch loads
    try:
        import torch  # noqa: F401
    finally:
        del os.environ["TORCH_CPP_LOG_LEVEL"]


def _hold_signals() -> None:
    """Ignore SIGTERM/SIGINT while the launcher says how the job ended (the agent's handlers raise in any frame;
    a scheduler that means it sends SIGKILL after its grace period).
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def _status(code: int) -> str:
    """``exit 2``, or ``SIGTERM`` (the agent stops the other ranks once one has failed) / ``SIGKILL``."""
    if code >= 0:
        return f"exit {code}"
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"

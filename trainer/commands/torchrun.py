"""``denoisrec torchrun``: torchrun for the trainer, with one line per failure instead of the launcher's traceback.

    denoisrec torchrun --standalone --nproc_per_node 2 -- --data data/small --out runs/x
    denoisrec torchrun --standalone --nproc_per_node 2 -- bench throughput --quick

The options before ``--`` are torchrun's (all of them: ``--rdzv_*``, ``--nnodes``, ``--max_restarts``, ...);
after it, ``denoisrec train``'s, or ``bench`` and ``denoisrec bench``'s arguments. It runs
``torch.distributed.run`` in this process with ``-m denoisrec.trainer`` (``-m denoisrec.trainer.cli bench``)
and catches its ``ChildFailedError``: the ranks leave their one-line errors in torchelastic's error files, and
this launcher prints each distinct line once, then one summary line (which ranks failed, with what status)
instead of torchrun's traceback. Under an outer agent (torchx) the first failure's error file is copied to
this process's own (``TORCHELASTIC_ERROR_FILE``), as torchrun's ``@record`` does, so the scheduler's status
carries the line too. The torchx components start their workers with this command.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any, List, Optional

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
    os.environ[LAUNCHER_SAYS] = "1"  # the workers inherit it: their one-line errors are said here, once
    try:
        torchrun(args)
    except ChildFailedError as e:
        failed = sorted(e.failures.items())
        for line in dict.fromkeys(one_line_errors([f.error_file_data for _, f in failed])):
            print(line, file=sys.stderr)
        ranks = ", ".join(f"rank {r} ({_status(f.exitcode)}, pid {f.pid})" for r, f in failed)
        print(f"denoisrec torchrun: the job failed: {ranks}", file=sys.stderr)
        first = e.get_first_failure()[1]
        if outer_error_file and os.path.isfile(first.error_file):  # what torchrun's @record does, without its log
            get_error_handler().dump_error_file(first.error_file, first.exitcode)
        codes = [f.exitcode for _, f in failed if 0 < f.exitcode < 256]
        return codes[0] if codes else 1
    except RendezvousError as e:  # the agent has stopped its workers; typically another node's agent ended first
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


def _status(code: int) -> str:
    """``exit 2``, or ``SIGTERM`` (the agent stops the other ranks once one has failed) / ``SIGKILL``."""
    if code >= 0:
        return f"exit {code}"
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"

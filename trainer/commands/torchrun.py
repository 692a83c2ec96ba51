"""``denoisrec torchrun``: torchrun for the trainer, with one line per failure instead of the launcher's traceback.

    denoisrec torchrun --standalone --nproc_per_node 2 -- --data data/small --out runs/x

The options before ``--`` are torchrun's; after it, ``denoisrec train``'s. It runs
``torch.distributed.run`` in this process with ``-m denoisrec.trainer`` and catches its ``ChildFailedError``:
the ranks leave their one-line errors in torchelastic's error files, and this launcher prints each distinct
line once, then one summary line (which ranks failed, with what status) instead of torchrun's traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, List, Optional

HELP = "torchrun the trainer on N ranks: denoisrec torchrun --nproc_per_node 2 -- --data DIR (errors in one line)"
RAW = True  # torchrun's options, then the trainer's: the denoisrec parser never reads them


def add_arguments(p: argparse.ArgumentParser) -> None:
    """None here: the command line goes to torchrun's own parser (see :data:`RAW`)."""


def run(a: argparse.Namespace) -> int:
    """``denoisrec torchrun ARGV``: ``a.argv`` is the whole command line, ``torchrun`` first."""
    return main(a.argv[1:])


def main(argv: Optional[List[str]] = None) -> int:
    """Run the trainer under torchrun; the exit status is the first failed rank's (0 when all succeed).

    Args:
        argv: torchrun's options, ``--``, the trainer's options.

    Returns:
        The exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    head, tail = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    from denoisrec.trainer.commands.suggest import LAUNCHER_SAYS

    parser = get_args_parser()
    parser.prog = "denoisrec torchrun"
    if head[:1] in (["-h"], ["--help"]):
        parser.print_help()
        print("\nafter --: the trainer's options (denoisrec train --help)")
        return 0
    args = parser.parse_args([*head, "-m", "denoisrec.trainer", *tail])
    # the agent's own per-rank ERROR lines repeat what the summary below says
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    os.environ[LAUNCHER_SAYS] = "1"  # the workers inherit it: their one-line errors are said here, once
    try:
        torchrun(args)
    except ChildFailedError as e:
        failed = sorted(e.failures.items())
        for line in dict.fromkeys(one_line_errors([f.error_file_data for _, f in failed])):
            print(line, file=sys.stderr)
        ranks = ", ".join(f"rank {r} ({_status(f.exitcode)})" for r, f in failed)
        print(f"denoisrec torchrun: the job failed: {ranks}", file=sys.stderr)
        codes = [f.exitcode for _, f in failed if 0 < f.exitcode < 256]
        return codes[0] if codes else 1
    return 0


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
    """``exit 2``, or ``stopped by signal 15`` (the agent stops the other ranks once one has failed)."""
    return f"stopped by signal {-code}" if code < 0 else f"exit {code}"

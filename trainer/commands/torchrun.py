"""``denoisrec torchrun``: torchrun for the trainer, with one line per failure instead of the launcher's traceback.

    denoisrec torchrun --standalone --nproc_per_node 2 -- --data data/small --out runs/x

The options before ``--`` are torchrun's; after it, ``denoisrec train``'s. It runs
``torch.distributed.run`` in this process with ``-m denoisrec.trainer`` and catches its ``ChildFailedError``:
the error every rank raises alike is printed once by rank 0 (:func:`denoisrec.trainer.cli.main`), and
the launcher adds one summary line (which ranks failed, with what status) instead of its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

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

    parser = get_args_parser()
    parser.prog = "denoisrec torchrun"
    if head[:1] in (["-h"], ["--help"]):
        parser.print_help()
        print("\nafter --: the trainer's options (denoisrec train --help)")
        return 0
    args = parser.parse_args([*head, "-m", "denoisrec.trainer", *tail])
    # the agent's own per-rank ERROR lines repeat what the summary below says
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        torchrun(args)
    except ChildFailedError as e:
        failed = sorted(e.failures.items())
        ranks = ", ".join(f"rank {r} ({_status(f.exitcode)})" for r, f in failed)
        print(f"denoisrec torchrun: the job failed: {ranks}; the error is above", file=sys.stderr)
        code = failed[0][1].exitcode
        return code if isinstance(code, int) and 0 < code < 256 else 1
    return 0


def _status(code: int) -> str:
    """``exit 2``, or ``stopped by signal 15`` (the agent stops the other ranks once one has failed)."""
    return f"stopped by signal {-code}" if code < 0 else f"exit {code}"

"""The ``denoisrec`` command line: one parser over the sub-commands, one-line errors and exit statuses.

Example::

    denoisrec train [--config FILE] [--preset lcd|dart] [--data DIR] [--model NAME] [--denoiser NAME] [-p k=v ...]
                    [--baseline RUN_DIR] [--resume auto|never|DIR] [--set a.b=v ...]
    denoisrec predict --model-file RUN_DIR/model.pt --data FILE_OR_DIR --out scores.parquet [--keep-columns a,b]
    denoisrec export RUN_DIR [--format torchscript|exported-program] [--calibrate platt]   (docs/serving.md)
    denoisrec gen-data --preset small --out data/small [--seed 0] [--rows N]
    denoisrec launch [-s SCHEDULER] -j NxM [component options] -- [train options]   (torchx; docs/launch.md)
    denoisrec convert {movielens,deca} PATH --out DIR [--noisy-max-rating R] [--seed S]
    denoisrec bench {throughput,quality,peers,ingest} [options]   (see trainer/bench/)
    denoisrec validate PATH [--schema FILE] [--split NAME ...] [--json OUT]
    denoisrec report RUN [RUN ...] [--out FIG.png]   (runs side by side: table + curves)
    denoisrec --version

``python -m denoisrec.trainer`` is ``denoisrec train`` (the form torchrun and torchx start).

Every command is a module of :mod:`denoisrec.trainer.commands` with ``add_arguments(parser)`` and
``run(args) -> int``, listed in one table (:data:`~denoisrec.trainer.commands.COMMANDS`); this module builds
the parser from it and turns errors into one-line messages and exit statuses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, List, NoReturn, Optional, Sequence, Tuple

from denoisrec.trainer.bench import cli as bench_cli
from denoisrec.trainer.commands import COMMANDS as _COMMANDS
from denoisrec.trainer.commands.suggest import LAUNCHER_SAYS, HelpFormatter
from denoisrec.trainer.commands.train import config_from_args
from denoisrec.trainer.config.close_names import did_you_mean
from denoisrec.trainer.errors import (
    CheckpointError,
    DataError,
    NonFiniteError,
    OutDirError,
    RunLockError,
    StorageError,
    UsageError,
)

if TYPE_CHECKING:
    from denoisrec.trainer.distributed.peers import PeerFailed

# every sub-command, ``bench`` before ``report`` (the benches use the commands: they are registered here)
COMMANDS = {**{k: v for k, v in _COMMANDS.items() if k != "report"}, "bench": bench_cli, "report": _COMMANDS["report"]}

DESCRIPTION = """CTR training on TorchRec that learns from noisy implicit feedback.

  make train                                  the recommended set-up on synthetic data, with its curves
  denoisrec train --data DIR --denoiser NAME  train; train --help lists models, denoisers and their options
  denoisrec report RUN [RUN ...]              runs side by side: a table and one figure
  denoisrec COMMAND --help                    a command's options (docs/ has the details)"""


# errors that every rank raises alike (broadcast from rank 0 or agreed by a collective): rank 0 says them
AGREED = (UsageError, RunLockError, OutDirError, CheckpointError, NonFiniteError, StorageError)


class Parser(argparse.ArgumentParser):
    """argparse with the project's conventions, for every command and sub-command.

    - a one-line error (``denoisrec train: error: ... (see denoisrec train --help)``), exit status 2;
    - no abbreviations (``--epoch 1`` is refused, not taken as ``--epochs``);
    - "did you mean" for an unknown flag (``--modle`` → ``--model``) or choice, said by the sub-command
      whose options it missed;
    - defaults shown in the help (:class:`HelpFormatter`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        if kwargs.get("formatter_class") in (None, argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter):
            kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Optional[Sequence[str]] = None, namespace: Optional[argparse.Namespace] = None
    ) -> Tuple[argparse.Namespace, List[str]]:
        """argparse's, but a word this parser does not know is an error here, where its options are known
        (a sub-command would otherwise hand it up to ``denoisrec``, whose message cannot suggest the option).
        """
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(self._unrecognized(extras))
        return ns, extras

    def _unrecognized(self, extras: List[str]) -> str:
        message = f"unrecognized arguments: {' '.join(extras)}"
        flags = [a.split("=", 1)[0] for a in extras if a.startswith("-") and len(a) > 1]
        known = [s for s in self._option_string_actions if s.startswith("--") or len(s) == 2]
        for flag in flags:
            hint = did_you_mean(flag, known)
            if hint:
                return f"{message}{hint}"
        return message

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(repr, action.choices))
            hint = did_you_mean(str(value), [str(c) for c in action.choices], quote=True)
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {choices}){hint}")


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("denoisrec")
    except Exception:  # not installed as a distribution (a bare checkout on PYTHONPATH)
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``denoisrec`` parser: one sub-parser per entry of :data:`~denoisrec.trainer.commands.COMMANDS`."""
    parser = Parser(prog="denoisrec", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"denoisrec {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, mod in COMMANDS.items():
        kw = {"help": mod.HELP}
        if getattr(mod, "RAW", False):
            kw["add_help"] = False
        if hasattr(mod, "DESCRIPTION") or hasattr(mod, "epilog"):
            kw.update(
                description=getattr(mod, "DESCRIPTION", None),
                epilog=mod.epilog() if hasattr(mod, "epilog") else None,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        p = sub.add_parser(name, **kw)
        mod.add_arguments(p)
        p.set_defaults(fn=mod.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    raw = COMMANDS.get(argv[0]) if argv else None
    if raw is not None and getattr(raw, "RAW", False):  # e.g. launch: torchx's and the component's options follow
        return int(raw.run(argparse.Namespace(command=argv[0], argv=argv)))
    args = build_parser().parse_args(argv)
    args.argv = argv  # which options were typed (bench: explicit flags win over --quick)
    said_by_launcher = os.environ.get(LAUNCHER_SAYS) == "1" and bool(os.environ.get("TORCHELASTIC_ERROR_FILE"))
    try:
        return run_quietly(args)
    except (ValueError, OSError) as e:
        code = exit_status(e) if args.command in ("train", "tune", "report") else 2
        line = f"denoisrec {args.command}: error: {_one_line(e)}"  # a mistyped name's message says its suggestion
        # an error every rank agrees on (a usage mistake, the lock, the checkpoint rank 0 chose, ...) is said
        # once, by rank 0; anything else may be one rank's own
        if not said_by_launcher and (not isinstance(e, AGREED) or os.environ.get("RANK", "0") == "0"):
            print(line, file=sys.stderr)
        from denoisrec.trainer.distributed.peers import AGREED_ERROR  # (torch-free)

        _record_for_torchelastic(line, {AGREED_ERROR: 1} if isinstance(e, AGREED) else None)
        return code
    except RuntimeError as e:
        stopped = _peer_failure(e)
        if stopped is None:
            raise
        # the echo of another rank's failure (its collective lost the peer): one line, after that rank's own
        line = f"denoisrec {args.command}: {stopped}"
        if not said_by_launcher:
            print(line, file=sys.stderr)
        from denoisrec.trainer.distributed.peers import PEER_FAILED

        _record_for_torchelastic(line, {PEER_FAILED: -1 if stopped.failed is None else stopped.failed})
        return 1


QUIET = ("bench", "export", "predict")
"""The commands besides ``train`` (which routes its own) whose third-party warnings go to a file or nowhere."""


def run_quietly(args: argparse.Namespace) -> int:
    """Run the command under the trainer's warning routing
    (:class:`~denoisrec.trainer.outputs.warnings_file.WarningsToFile`):
    a bench files TorchRec/FBGEMM warnings in ``<--out>/<bench>.warnings.log`` and says so in one line; ``export`` and
    ``predict`` (whose ``--out`` is an artefact or a scores file) count and drop them. denoisrec's own warnings
    stay on the console, one line each, once.
    """
    if args.command not in QUIET:
        return int(args.fn(args))
    import torch  # noqa: F401 - first: its import installs the log handlers that the routing must replace

    from denoisrec.trainer.outputs.warnings_file import WarningsToFile

    out = getattr(args, "out", None) if args.command == "bench" else None
    stem = f"{getattr(args, 'bench', 'bench')}.warnings"  # benches share runs/bench: one file each
    with WarningsToFile(out, int(os.environ.get("RANK", "0")), stem) as quiet:
        quiet.open()  # a bench owns its report folder
        code = int(args.fn(args))
    if out is not None and quiet.count and os.environ.get("RANK", "0") == "0":
        print(quiet.summary())
    return code


def exit_status(e: BaseException) -> int:
    """1 for a problem with the data or files (missing, unreadable, malformed), 2 for a usage mistake.

    (``train`` and ``report``; the other commands still exit 2 on every error they report.)
    """
    if isinstance(e, UsageError):
        return 2
    if isinstance(e, (DataError, OSError)):
        return 1
    return 2


def _one_line(e: BaseException) -> str:
    text = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror or e}"
    return " ".join(text.split())


def _peer_failure(e: RuntimeError) -> Optional[PeerFailed]:
    """``e`` as a :class:`~denoisrec.trainer.distributed.peers.PeerFailed` when it is the process group's report
    of a peer gone (``train`` names the failed rank; elsewhere it is not known), else ``None``.
    """
    if "torch.distributed" not in sys.modules or os.environ.get("WORLD_SIZE", "1") == "1":
        return None  # no peer (and no torch import here)
    from denoisrec.trainer.distributed.peers import PeerFailed, is_peer_loss

    if isinstance(e, PeerFailed):
        return e
    return PeerFailed(int(os.environ.get("RANK", "0")), None) if is_peer_loss(e) else None


def _record_for_torchelastic(line: str, extra: Optional[dict] = None) -> None:
    """Under torchrun/torchx, write the one-line message to this worker's error file (torchelastic's format,
    the line as the traceback too): the agent's failure summary then shows that line for the rank, instead of
    the worker's traceback or only an exit code.
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w") as f:
            info = {"py_callstack": line, "timestamp": str(int(time.time())), **(extra or {})}
            json.dump({"message": {"message": line, "extraInfo": info}}, f)


__all__ = ["HelpFormatter", "Parser", "build_parser", "config_from_args", "exit_status", "main", "run_quietly"]

if __name__ == "__main__":
    sys.exit(main())

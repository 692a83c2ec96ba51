"""``denoisrec launch``: ``torchx run`` with denoisrec's components (launch/components.py), from any directory.

    denoisrec launch [-s SCHEDULER] [-cfg K=V,...] [--dryrun] [--component train|bench|gen_data]
                     [component options: -j 2x4 --gpu 8 --max_restarts 3 ...] [-- trainer options]

It runs ``python -m torchx.cli.main run -s SCHEDULER <installed launch/components.py>:COMPONENT ...`` and
adds two conveniences over plain ``torchx run``:

- On a local scheduler (``local_cwd``, the default) the workers use this interpreter (``--python
  sys.executable``), so the venv need not be activated and no ``.torchxconfig`` is needed.
- Repeated list options of the trainer (``--set a=1 --set b=2``, ``-p x=1 -p y=2``) are merged into one
  (``--set a=1 b=2``): torchx rejects an option named twice.
- On a local scheduler the job's logs go to ``<out>/logs`` (the trainer's ``--out``, default
  ``runs/default``), beside the run's outputs, unless ``-cfg log_dir=...`` says otherwise. A local job lives
  only as long as ``torchx run``: afterwards ``torchx status`` / ``torchx log`` cannot find it; read
  ``<out>/logs/torchx/<app id>/trainer/<node>/{stdout,stderr}.log`` instead (docs/launch.md).

Example::

    torchx_argv(["-j", "1x2", "--", "--data", "d", "--set", "a=1", "--set", "b=2"], python="/venv/bin/python")
    # [..., "run", "-s", "local_cwd", ".../launch/components.py:train", "-j", "1x2",
    #  "--python", "/venv/bin/python", "--", "--data", "d", "--set", "a=1", "b=2"]
"""

import argparse
import importlib.util
import os
import re
import shlex
import sys
from typing import Dict, List, NoReturn, Optional


def _components_file() -> str:
    """The installed ``launch/components.py``, located without importing :mod:`denoisrec.launch`.

    The trainer names the components file as ``torchx run FILE:COMPONENT`` does; it never imports the launch
    package (the layering: launch names the trainer's entry point, never the other way round).
    """
    spec = importlib.util.find_spec("denoisrec.launch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(2, "the denoisrec.launch package is not installed", "launch/components.py")
    return os.path.join(list(spec.submodule_search_locations)[0], "components.py")


COMPONENTS_FILE = _components_file()
HELP = (
    "torchx run a component (train, bench, gen_data) on a scheduler: denoisrec launch -j 1x2 -- --data DIR "
    "(see docs/launch.md)"
)
RAW = True  # the command line after ``launch`` is torchx's and the component's: the denoisrec parser never reads it
PRECHECKED_ENV = "DENOISREC_PRECHECKED"
"""The trainer options this command has checked (shell-quoted), for the train component, which then does not
check them again (launch/components.py's ``PRECHECKED_ENV``: the same name, which a test ties)."""
COMPONENTS = ("train", "bench", "gen_data")
_LIST_OPTIONS = {"--set": "--set", "-p": "-p", "--denoiser-param": "-p"}


def merge_list_options(args: List[str]) -> List[str]:
    """``--set a=1 --data d --set b=2`` → ``--data d --set a=1 b=2`` (values keep their order)."""
    rest: List[str] = []
    merged: Dict[str, List[str]] = {}
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, inline = a.partition("=") if a.startswith("--") else (a, "", "")
        if name in _LIST_OPTIONS:
            values = merged.setdefault(_LIST_OPTIONS[name], [])
            if eq:
                values.append(inline)
            i += 1
            while i < len(args) and not args[i].startswith("-"):
                values.append(args[i])
                i += 1
            continue
        rest.append(a)
        i += 1
    for opt, values in merged.items():
        if values:
            rest += [opt, *values]
    return rest


def option_value(args: List[str], name: str) -> Optional[str]:
    """The last value of ``name`` in ``args`` (``--out d`` or ``--out=d``), or ``None``."""
    found = None
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            found = args[i + 1]
        elif a.startswith(name + "="):
            found = a.split("=", 1)[1]
    return found


USAGE = """Run a denoisrec component (train, bench, gen_data) with torchx, on this machine or a cluster scheduler.

  denoisrec launch -j 1x2 -- --data data/small --out runs/x          2 ranks here (local_cwd)
  denoisrec launch -s slurm -cfg partition=gpu -j 2x8 --gpu 8 -- --data /shared/data --out /shared/runs/x
  denoisrec launch --dryrun -j 1x2 -- --data data/small              print what would run

Options before -- are this command's and the component's (-j NODESxRANKS, --gpu, --max_restarts, ...);
after -- come the trainer's (denoisrec train --help). On a local scheduler the workers use this Python,
and the job's logs go to <--out>/logs unless -cfg log_dir=... says otherwise. A repeated --set or -p is
merged into one list (torchx refuses an option named twice). docs/launch.md has Slurm and Kubernetes."""


def _parser() -> argparse.ArgumentParser:
    from denoisrec.trainer.commands.suggest import HelpFormatter

    p = argparse.ArgumentParser(
        prog="denoisrec launch",
        description=USAGE,
        allow_abbrev=False,
        formatter_class=HelpFormatter,
    )
    p.add_argument("-s", "--scheduler", default="local_cwd", help="torchx scheduler: local_cwd, slurm, kubernetes")
    p.add_argument(
        "-cfg", "--scheduler_args", help="scheduler options, e.g. partition=gpu,time=04:00:00 (default: none)"
    )
    p.add_argument("--dryrun", action="store_true", help="print the AppDef and the scheduler request; run nothing")
    p.add_argument("--component", default="train", choices=COMPONENTS, help="which component")
    p.add_argument(
        "--check-only",
        action="store_true",
        help="check the trainer options after -- (torch-free, as every rank would) and submit nothing: exit 0, "
        "or 2 with the one line (the train component runs this before it returns its AppDef)",
    )
    return p


def torchx_argv(argv: List[str], python: Optional[str] = None) -> List[str]:
    """The ``torchx`` command line for ``denoisrec launch ARGV`` (without the interpreter prefix)."""
    if "--" in argv:
        cut = argv.index("--")
        head, tail = argv[:cut], argv[cut + 1 :]
    else:
        head, tail = argv, []
    ours, component_opts = _parser().parse_known_args(head)
    if ours.check_only:
        raise ValueError("--check-only runs no torchx")
    cmd = ["run", "-s", ours.scheduler]
    cfg = ours.scheduler_args
    if ours.scheduler.startswith("local") and ours.component in ("train", "bench") and "log_dir=" not in (cfg or ""):
        logs = f"log_dir={os.path.join(option_value(tail, '--out') or 'runs/default', 'logs')}"
        cfg = f"{cfg},{logs}" if cfg else logs
    if cfg:
        cmd += ["-cfg", cfg]
    if ours.dryrun:
        cmd.append("--dryrun")
    cmd += [f"{COMPONENTS_FILE}:{ours.component}", *component_opts]
    if ours.scheduler.startswith("local") and "--python" not in component_opts and python:
        cmd += ["--python", python]
    if tail:
        cmd += ["--", *merge_list_options(tail)]
    return cmd


def check_trainer_args(argv: List[str]) -> None:
    """Check the train component's trainer options as ``denoisrec train`` does (torch-free), before any rank
    starts; the world size comes from ``-j NxM`` when it is fixed. Raises the check's one-line
    :class:`~denoisrec.trainer.errors.UsageError`.

    Args:
        argv: the command line after ``launch``.
    """
    head, tail = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    ours, component_opts = _parser().parse_known_args(head)
    if ours.component != "train":
        return
    from denoisrec.trainer.commands.train import add_arguments as train_arguments
    from denoisrec.trainer.commands.train import config_from_args
    from denoisrec.trainer.config.check import check_config
    from denoisrec.trainer.config.close_names import did_you_mean
    from denoisrec.trainer.errors import UsageError

    class _Refuse(argparse.ArgumentParser):
        def error(self, message: str) -> "NoReturn":  # type: ignore[override]
            if message.startswith("unrecognized arguments: "):
                flags = [w.split("=", 1)[0] for w in message.split(": ", 1)[1].split() if w.startswith("--")]
                known = [s for s in self._option_string_actions if s.startswith("--")]
                message += next((h for h in (did_you_mean(f, known) for f in flags) if h), "")
            raise UsageError(f"trainer options after --: {message}")

    p = _Refuse(prog="denoisrec launch -- ", add_help=False, allow_abbrev=False)
    train_arguments(p)
    j = option_value(component_opts, "-j") or option_value(component_opts, "--j") or "1x2"
    m = re.fullmatch(r"(?:(\d+)x)?(\d+)", j.strip())
    world = int(m.group(1) or 1) * int(m.group(2)) if m else None
    check_config(config_from_args(p.parse_args(tail)), world_size=world)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """None here: ``denoisrec launch`` hands its arguments to :func:`main` unparsed (see :data:`RAW`)."""


def run(a: argparse.Namespace) -> int:
    """``denoisrec launch ARGV``: ``a.argv`` is the whole command line, ``launch`` first."""
    return main(a.argv[1:])


def main(argv: Optional[List[str]] = None) -> int:
    """Replace this process with ``torchx run``; its exit status is the job's (local schedulers wait)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        _parser().print_help()
        print(f"\ncomponent options (-j, --gpu, ...): torchx run {COMPONENTS_FILE}:train --help")
        return 0
    from denoisrec.trainer.errors import UsageError

    check_only = "--check-only" in (argv[: argv.index("--")] if "--" in argv else argv)
    try:
        check_trainer_args(argv)
    except UsageError as e:
        print(f"denoisrec {'train' if check_only else 'launch'}: error: {e}", file=sys.stderr)
        return 2
    if check_only:
        return 0
    os.environ[PRECHECKED_ENV] = shlex.join(merge_list_options(argv[argv.index("--") + 1 :] if "--" in argv else []))
    cmd = [sys.executable, "-m", "torchx.cli.main", *torchx_argv(argv, python=sys.executable)]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)
    return 0  # not reached

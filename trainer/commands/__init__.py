"""The ``denoisrec`` sub-commands: one table, one pattern.

Every command is a module with

- ``HELP``: its line in ``denoisrec --help``;
- ``add_arguments(parser)``: its options (building them imports no torch);
- ``run(args) -> int``: run it; the return value is the exit status;

and optionally ``DESCRIPTION`` / ``epilog()`` (shown by ``denoisrec COMMAND --help``) and ``RAW = True``
(the command line after the command's name goes to ``run`` unparsed: ``launch`` hands it to torchx).
:func:`denoisrec.trainer.cli.build_parser` walks :data:`COMMANDS` in order; errors become one-line messages
and exit statuses in :func:`denoisrec.trainer.cli.main`.

| command | module | what it does |
|---|---|---|
| ``train`` | :mod:`.train` | train and evaluate a model |
| ``tune`` | :mod:`.tune` | train candidate denoisers, choose on the trusted signal, write the config |
| ``predict`` / ``export`` | :mod:`.predict` / :mod:`.export` | score data / write a serving artefact |
| ``launch`` | :mod:`.launch` | ``torchx run`` the components of :mod:`denoisrec.launch` |
| ``torchrun`` | :mod:`.torchrun` | torchrun the trainer, failures in one line |
| ``gen-data`` / ``convert`` | :mod:`.gen_data` / :mod:`.convert` | write datasets (:mod:`denoisrec.trainer.datasets`) |
| ``validate`` | :mod:`.validate` | check a dataset against its schema |
| ``bench`` | :mod:`denoisrec.trainer.bench.cli` | the benchmark suite (one sub-command per bench) |
| ``report`` | :mod:`denoisrec.trainer.commands.report` | runs side by side |

Example:
>>> from denoisrec.trainer.commands import COMMANDS
>>> list(COMMANDS)[:3]
['train', 'tune', 'predict']
"""

from __future__ import annotations

from types import ModuleType
from typing import Dict

from denoisrec.trainer.commands import (
    convert,
    export,
    gen_data,
    launch,
    predict,
    report,
    torchrun,
    train,
    tune,
    validate,
)

COMMANDS: Dict[str, ModuleType] = {
    "train": train,
    "tune": tune,
    "predict": predict,
    "export": export,
    "launch": launch,
    "torchrun": torchrun,
    "gen-data": gen_data,
    "validate": validate,
    "convert": convert,
    "report": report,
}
"""Command name → its module, in the order ``denoisrec --help`` lists them (``bench`` is added by the cli: the
benches use the commands, so this package does not import them)."""

__all__ = ["COMMANDS"]

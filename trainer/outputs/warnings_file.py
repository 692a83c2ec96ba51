"""Third-party warnings go to ``<out>/warnings.log``, not the terminal; the console gets one line counting them.

A 1-rank TorchRec run otherwise prints ~45 lines of planner, sharding and FBGEMM warnings (``logging`` and
:mod:`warnings`), which tear the progress bar. :class:`WarningsToFile` routes, while it is open:

- :mod:`warnings` raised from code outside denoisrec (torch, torchrec, fbgemm_gpu, ...) and every
  deprecation notice; denoisrec's own warnings (e.g. DeCA with a sparse Adam) still reach the terminal;
- ``logging`` records of the root logger (TorchRec logs through it) and the ``torch`` / ``torchrec`` /
  ``fbgemm_gpu`` loggers: their terminal handlers are replaced by the file for the duration.

Rank 0 writes ``warnings.log``, rank r > 0 ``warnings.rank<r>.log`` (each rewritten by a new run; no
ranks racing on one file).

Example::

    with WarningsToFile("runs/x", rank=0) as w:
        ...                  # build, shard, train
    print(w.summary(world_size=2))  # "third-party warnings: 52 lines (2 ranks) in runs/x/warnings*.log"
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, List, Optional, TextIO, Tuple

_OURS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the denoisrec package directory
LOGGERS = ("", "torch", "torchrec", "fbgemm_gpu")


class _FileHandler(logging.Handler):
    def __init__(self, owner: "WarningsToFile") -> None:
        super().__init__(logging.WARNING)
        self.owner = owner

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.owner.write(f"{record.levelname} {record.name}: {record.getMessage()}")
        except Exception:  # a log record must never stop training
            self.handleError(record)


class WarningsToFile:
    """Route third-party warnings to a file in ``out`` (see the module docstring); ``count`` counts this
    rank's lines.
    """

    def __init__(self, out: str, rank: int = 0) -> None:
        self.out, self.rank, self.count = out, rank, 0
        self.path = rank_file(out, rank)
        self._file: Optional[TextIO] = None
        self._saved: List[Tuple[logging.Logger, List[logging.Handler], bool]] = []
        self._showwarning: Any = None
        self._handler = _FileHandler(self)
        self._pending: List[str] = []

    def write(self, line: str) -> None:
        """Lines wait in memory until the run has made its output folder (this never creates it: whether an
        existing folder may be used is the run's decision).
        """
        self.count += 1
        self._pending.append(line.rstrip() + "\n")
        self._flush()

    def _flush(self) -> None:
        if self._file is None:
            if not os.path.isdir(self.out):
                return
            self._file = open(self.path, "w", buffering=1)
        self._file.writelines(self._pending)
        self._pending.clear()

    def _show(
        self, message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Optional[str] = None
    ) -> None:
        if _ours(filename, category):
            self._showwarning(message, category, filename, lineno, file, line)
        else:
            self.write(f"{category.__name__} {filename}:{lineno}: {message}")

    def __enter__(self) -> "WarningsToFile":
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._show
        for name in LOGGERS:
            lg = logging.getLogger(name)
            self._saved.append((lg, list(lg.handlers), lg.propagate))
            for h in list(lg.handlers):
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    lg.removeHandler(h)
            lg.addHandler(self._handler)
            lg.propagate = False if name else lg.propagate
            if lg.level == logging.NOTSET and not name:
                lg.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc: Any) -> None:
        warnings.showwarning = self._showwarning
        for lg, handlers, propagate in self._saved:
            lg.removeHandler(self._handler)
            for h in handlers:
                if h not in lg.handlers:
                    lg.addHandler(h)
            lg.propagate = propagate
        self._saved.clear()
        self._flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def summary(self, world_size: int = 1) -> str:
        """One console line: the lines every rank's file holds now."""
        n = 0
        for r in range(world_size):
            try:
                with open(rank_file(self.out, r)) as f:
                    n += sum(1 for _ in f)
            except OSError:
                pass
        where = os.path.join(self.out, "warnings.log") + ("" if world_size == 1 else " (+ warnings.rank<r>.log)")
        return f"third-party warnings: {n} line(s) in {where}" if n else "third-party warnings: none"


def _ours(filename: str, category: Any) -> bool:
    """Denoisrec's own warning: raised in its source (not a virtualenv inside the checkout) and not a library's
    deprecation notice surfacing through a denoisrec line.
    """
    path = os.path.abspath(filename)
    return (
        path.startswith(_OURS + os.sep)
        and "site-packages" not in path
        and not issubclass(category, (DeprecationWarning, FutureWarning))
    )


def rank_file(out: str, rank: int) -> str:
    return os.path.join(out, "warnings.log" if rank == 0 else f"warnings.rank{rank}.log")

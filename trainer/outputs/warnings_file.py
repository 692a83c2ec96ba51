"""Third-party warnings go to ``<out>/warnings.log``, not the terminal; the console gets one line counting them.

A 1-rank TorchRec run otherwise prints ~45 lines of planner, sharding and FBGEMM warnings (``logging`` and
:mod:`warnings`), which tear the progress bar. :class:`WarningsToFile` routes, while it is open:

- :mod:`warnings` raised from code outside denoisrec (torch, torchrec, fbgemm_gpu, ...) and every
  deprecation notice; denoisrec's own warnings (e.g. DeCA with a sparse Adam) still reach the terminal;
- ``logging`` records of the root logger (TorchRec logs through it) and the ``torch`` / ``torchrec`` /
  ``fbgemm_gpu`` loggers: their terminal handlers are replaced by the file for the duration.

Rank 0 writes ``warnings.log``, rank r > 0 ``warnings.rank<r>.log`` (each rewritten by a new run; no
ranks racing on one file). Nothing is written until :meth:`WarningsToFile.open` says the run may use ``out``
(the run lock is held and the out policy allowed it): a refused launch leaves the previous run's files as they
were, and drops the lines it collected. A command without an output folder of its own passes ``out=None``: its
third-party warnings are counted and dropped.

denoisrec's own warnings reach the terminal as one line each (``warning: <message>``, not Python's
``file:line`` form), each distinct message once per :class:`WarningsToFile`.

Example::

    with WarningsToFile("runs/x", rank=0) as w:
        ...                  # checks, run lock, out policy
        w.open()             # from here on, lines go to runs/x/warnings.log
        ...                  # build, shard, train
    print(w.summary(world_size=2))  # "third-party warnings: 52 lines (2 ranks) in runs/x/warnings*.log"
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, List, Optional, Set, TextIO, Tuple

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

    def __init__(self, out: Optional[str], rank: int = 0, stem: str = "warnings") -> None:
        self.out, self.rank, self.count, self.stem = out, rank, 0, stem
        self.path = rank_file(out, rank, stem) if out is not None else None
        self._file: Optional[TextIO] = None
        self._allowed = False
        self._seen: Set[str] = set()
        self._saved: List[Tuple[logging.Logger, List[logging.Handler], bool]] = []
        self._showwarning: Any = None
        self._handler = _FileHandler(self)
        self._pending: List[str] = []

    def write(self, line: str) -> None:
        """Lines wait in memory until :meth:`open` (this never creates ``out`` nor touches a file in it before:
        whether an existing folder may be used is the run's decision).
        """
        self.count += 1
        if self.path is None:
            return
        self._pending.append(line.rstrip() + "\n")
        self._flush()

    def open(self) -> None:
        """The run may write to ``out`` now: start this rank's file (rewriting a previous run's) with the lines
        collected so far. Call it once the run lock is held and the out policy allowed the run.
        """
        self._allowed = True
        self._flush()

    def _flush(self) -> None:
        if self._file is None:
            if not self._allowed or self.path is None or self.out is None or not os.path.isdir(self.out):
                return
            self._file = open(self.path, "w", buffering=1)
        self._file.writelines(self._pending)
        self._pending.clear()

    def _show(
        self, message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Optional[str] = None
    ) -> None:
        if _ours(filename, category):
            text = " ".join(str(message).split())
            if text not in self._seen and self.rank == 0:  # one clean line, once (every rank raises it)
                self._seen.add(text)
                print(f"warning: {text}", file=sys.stderr if file is None else file)
        else:
            self.write(f"{category.__name__} {filename}:{lineno}: {message}")

    def __enter__(self) -> "WarningsToFile":
        self._showwarning = warnings.showwarning
        outer = getattr(self._showwarning, "__self__", None)
        if isinstance(outer, WarningsToFile):  # nested (a bench running train()): one message, once, in all
            self._seen = outer._seen
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
        self._pending.clear()  # never opened (a refused launch): its lines go with it
        if self._file is not None:
            self._file.close()
            self._file = None

    def summary(self, world_size: int = 1) -> str:
        """One console line: the lines every rank's file holds now."""
        if self.out is None:
            return (
                f"third-party warnings: {self.count} line(s), not shown" if self.count else "third-party warnings: none"
            )
        n = 0
        for r in range(world_size):
            try:
                with open(rank_file(self.out, r, self.stem)) as f:
                    n += sum(1 for _ in f)
            except OSError:
                pass
        more = "" if world_size == 1 else f" (+ {self.stem}.rank<r>.log)"
        where = os.path.join(self.out, f"{self.stem}.log") + more
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


def rank_file(out: str, rank: int, stem: str = "warnings") -> str:
    """``out/warnings.log`` for rank 0, ``out/warnings.rank<r>.log`` for rank r (``stem``: another name than
    ``warnings``, e.g. ``throughput.warnings`` for a bench sharing its folder with others).
    """
    return os.path.join(out, f"{stem}.log" if rank == 0 else f"{stem}.rank{rank}.log")

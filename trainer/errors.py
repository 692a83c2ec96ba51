r"""The project's exception types, in one leaf module (it imports nothing from denoisrec).

Every module that raises one of these imports it from here, so no module has to import another's
implementation to name an error (this is what broke the old import circle data/checks → schema → fs → checks).
The ``denoisrec`` command line maps them to exit statuses: :class:`UsageError` exits 2, :class:`DataError`
(and ``OSError``) exit 1 (``denoisrec train`` / ``report``; see :func:`denoisrec.trainer.cli.exit_status`).

| error | raised when |
|---|---|
| :class:`UsageError` | a value the user typed is not accepted |
| :class:`DataError` | input data does not match its schema (names file, row group, column) |
| :class:`CheckpointError` | a checkpoint cannot be used (incomplete, damaged, another model's) |
| :class:`OutDirError` | ``--out`` holds a run this launch would overwrite |
| :class:`RunLockError` | another run holds ``<out>/.lock`` |
| :class:`NonFiniteError` | training produced a non-finite loss or gradient |
| :class:`HostSyncError` | a host synchronisation inside a guarded region |
| :class:`StorageError` | the run's outputs cannot be written (a full disk, a read-only ``--out``) |

Example:
>>> from denoisrec.trainer.errors import DataError, oneline
>>> oneline(DataError("train/part-0.parquet: row group 3,\n column label: null"))
'train/part-0.parquet: row group 3, column label: null'
>>> issubclass(DataError, ValueError)
True
"""

from __future__ import annotations


class UsageError(ValueError):
    """A value the user typed is not accepted (exit status 2)."""


class DataError(ValueError):
    """Input data that does not match the schema; the message names file, row group and column."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (incomplete, damaged, from another model, unloadable); the message says
    why and names the file.
    """


class OutDirError(ValueError):
    """``--out`` holds a run this launch would overwrite (the message says what and how to proceed)."""


class RunLockError(ValueError):
    """Another run holds ``<out>/.lock`` (the message names it)."""


class NonFiniteError(ValueError):
    """Training produced a non-finite loss or gradient (the message names the step)."""


class HostSyncError(RuntimeError):
    """A host synchronisation inside a guarded region (``mode="error"``)."""


class StorageError(OSError):
    """The run's outputs cannot be written: a full disk, a read-only ``--out`` (exit status 1). The message
    names the path and says what is intact; every rank raises the same one.
    """


def oneline(e: BaseException) -> str:
    """An exception's message on one line (pyarrow's span several)."""
    return " ".join(str(e).split())


__all__ = [
    "CheckpointError",
    "DataError",
    "HostSyncError",
    "NonFiniteError",
    "OutDirError",
    "RunLockError",
    "StorageError",
    "UsageError",
    "oneline",
]

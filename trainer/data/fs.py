"""Where a dataset lives: a local path, a URI, or a path on a given ``pyarrow.fs`` / ``fsspec`` filesystem.

:class:`DataPath` pairs a :class:`pyarrow.fs.FileSystem` with a path on it, so the reader, the schema loader
and ``denoisrec validate`` work the same on a local directory, on ``s3://``, ``gs://``, ``hdfs://`` (pyarrow's
own filesystems) and on anything ``fsspec`` knows (``memory://``, ``abfs://``, ``http://`` ...; fsspec
filesystems are wrapped in :class:`pyarrow.fs.PyFileSystem`). Local paths are what the tests use, plus
fsspec's in-process ``memory://`` filesystem.

Example::

    dp = DataPath.resolve("data/small")              # local
    dp = DataPath.resolve("memory://ds/train")       # fsspec
    dp = DataPath.resolve("bucket/ds", filesystem=pyarrow.fs.S3FileSystem(region="eu-west-1"))
    files = dp.join("train").parquet_files()
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Tuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from denoisrec.trainer.errors import DataError, oneline

# Schemes that pyarrow opens natively; everything else with "://" goes through fsspec.
_ARROW_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs")


def _wrap_fsspec(fs: Any) -> pafs.FileSystem:
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


@dataclass(frozen=True)
class DataPath:
    """A path on a filesystem. ``str(dp)`` is the form messages use (the local path, or ``scheme://path``)."""

    fs: pafs.FileSystem
    path: str
    scheme: str = ""

    @classmethod
    def resolve(cls, path: str, filesystem: Any = None) -> "DataPath":
        """``path`` on ``filesystem`` (a ``pyarrow.fs.FileSystem`` or an ``fsspec`` filesystem), or, without
        one, a local path or a URI.
        """
        if isinstance(path, DataPath):
            return path
        path = os.fspath(path)
        if filesystem is not None:
            if isinstance(filesystem, pafs.FileSystem):
                return cls(filesystem, path)
            return cls(_wrap_fsspec(filesystem), path)
        if "://" not in path:
            return cls(pafs.LocalFileSystem(), os.path.abspath(path))
        scheme = path.split("://", 1)[0].lower()
        if scheme in _ARROW_SCHEMES:
            try:
                fs, p = pafs.FileSystem.from_uri(path)
                return cls(fs, p, "" if scheme == "file" else scheme)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
                pass  # not built into this pyarrow: try fsspec
        import fsspec

        try:
            fs, p = fsspec.core.url_to_fs(path)
        except (ImportError, ValueError) as e:
            raise DataError(f"{path}: no filesystem for scheme {scheme!r} ({e})") from e
        return cls(_wrap_fsspec(fs), p, scheme)

    def __str__(self) -> str:
        return self.display(self.path)

    def join(self, name: str) -> "DataPath":
        return DataPath(self.fs, self.path.rstrip("/") + "/" + name, self.scheme)

    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def read_text(self) -> str:
        with self.fs.open_input_stream(self.path) as f:
            return f.read().decode("utf-8")

    def open(self) -> Any:
        """A random-access file (what ``pyarrow.parquet.ParquetFile`` reads)."""
        return self.fs.open_input_file(self.path)

    def split_listing(self) -> Any:
        """The :class:`~denoisrec.trainer.data.listing.SplitListing` of this folder (or file): data files,
        other files, ignored hidden paths and refused links (see :mod:`denoisrec.trainer.data.listing`).
        """
        from denoisrec.trainer.data.listing import list_split

        return list_split(self)

    def listing(self) -> Tuple[List[Tuple[str, int]], List[str]]:
        """``([(parquet file, size in bytes)], [other files])`` below this directory (or this one file),
        sorted by path. Hidden paths (``_``/``.`` prefixed, with everything below them) are left out;
        :class:`DataError` for a dangling link or a link out of the split (see ``split_listing``).
        """
        ls = self.split_listing()
        ls.raise_problems()
        return ls.files, ls.other

    def parquet_files(self) -> List[str]:
        """The split's ``.parquet`` files, sorted; :class:`DataError` when there are none."""
        files, _ = self.listing()
        if not files:
            raise DataError(f"{self}: empty split, no .parquet files found")
        return [f for f, _ in files]

    def display(self, path: str) -> str:
        """How a file below this path is named in messages."""
        return f"{self.scheme}://{path.lstrip('/')}" if self.scheme else path


def open_parquet(dp: "DataPath", path: str) -> pq.ParquetFile:
    """Open one file; :class:`DataError` when it is empty, truncated or not Parquet."""
    name = dp.display(path)
    try:
        size = dp.fs.get_file_info(path).size
    except OSError as e:
        raise DataError(f"{name}: cannot be opened ({e})") from e
    if size == 0:
        raise DataError(f"{name}: empty file (0 bytes), not a Parquet file")
    try:
        return pq.ParquetFile(path, filesystem=dp.fs)  # owns (and closes) its file handle
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError variants for corrupt or truncated files
        raise DataError(
            f"{name}: not a readable Parquet file, corrupt or truncated ({type(e).__name__}: {oneline(e)})"
        ) from e

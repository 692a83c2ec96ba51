"""Which files make up a split: the one listing that training, ``validate`` and ``predict`` share.

Rules (the same on every filesystem; symbolic links exist on local paths only):

- **Hidden paths are not data.** A file or folder whose name starts with ``_`` or ``.`` is skipped with
  everything below it, as Spark, Hive and pyarrow's datasets do: ``_SUCCESS``, ``_temporary/`` (a writer's
  unfinished attempt), ``.crc`` files, ``.ipynb_checkpoints/``. They are listed in ``ignored`` so that the
  run and ``validate`` can say so.
- **Data files** are the other files whose name ends in ``.parquet``; the rest are ``other`` files.
- **Symbolic links are not followed out of the split folder.** A link to a folder is refused (following it
  could leave the split, or loop: ``train/loop -> .``), and so is a link to a file outside the split folder.
  A link to a file inside it is read once, under the link's name, unless that file is listed anyway (then it
  would be read twice: refused). A link whose target does not exist (dangling) is refused as well, since
  data it named would go missing without a word. The split folder itself may be a link.

Refusals are collected in ``problems`` (one line each, naming the link); :meth:`SplitListing.raise_problems`
turns them into one :class:`DataError`.

Example::

    ls = list_split(DataPath.resolve("data/tiny/train"))
    [p for p, _ in ls.files], ls.ignored, ls.problems
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Tuple

import pyarrow.fs as pafs

from denoisrec.trainer.errors import DataError

HIDDEN = (".", "_")


@dataclass
class SplitListing:
    """``files``: ``[(path, bytes)]`` of the data files, sorted by path; ``other``: other files; ``ignored``:
    hidden files and folders (folders end in ``/``); ``problems``: refused links, one line each.
    """

    root: str
    files: List[Tuple[str, int]] = field(default_factory=list)
    other: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    def raise_problems(self) -> None:
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise DataError(self.problems[0] + more)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _list_local(root: str, out: SplitListing) -> None:
    real_root = os.path.realpath(root)
    links: List[Tuple[str, str]] = []  # (link path, real target) of followed file links
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.startswith(HIDDEN):
                out.ignored.append(e.path + ("/" if e.is_dir() else ""))
                continue
            if e.is_symlink():
                target = os.path.realpath(e.path)
                if not os.path.exists(target):
                    out.problems.append(
                        f"{e.path}: dangling symbolic link (to {os.readlink(e.path)}); its data is "
                        "missing: fix or remove the link"
                    )
                elif os.path.isdir(target):
                    kind = (
                        "a cycle: it points to a folder that contains it"
                        if _inside(real_root, target) or _inside(os.path.realpath(d), target)
                        else "inside the split, its files would be read twice"
                        if _inside(target, real_root)
                        else "outside the split folder"
                    )
                    out.problems.append(
                        f"{e.path}: symbolic link to the folder {target} ({kind}); links to folders "
                        "are not followed: move the files into the split folder"
                    )
                elif not _inside(target, real_root):
                    out.problems.append(
                        f"{e.path}: symbolic link to {target}, outside the split folder {root}; "
                        "links out of the split are not followed: copy or move the file in"
                    )
                else:
                    links.append((e.path, target))
                    if e.name.endswith(".parquet"):
                        out.files.append((e.path, os.path.getsize(target)))
                    else:
                        out.other.append(e.path)
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif e.is_file(follow_symlinks=False):
                (
                    out.files.append((e.path, e.stat(follow_symlinks=False).st_size))
                    if e.name.endswith(".parquet")
                    else out.other.append(e.path)
                )
    listed = {os.path.realpath(p) for p, _ in out.files if not os.path.islink(p)}
    for link, target in links:
        if target in listed:
            out.problems.append(
                f"{link}: symbolic link to {target}, which the split holds already (it would be "
                "read twice): remove the link"
            )
            out.files = [(p, s) for p, s in out.files if p != link]


def _list_fs(dp: Any, out: SplitListing) -> None:
    base = dp.path.rstrip("/")
    for e in dp.fs.get_file_info(pafs.FileSelector(dp.path, recursive=True)):
        rel = e.path[len(base) :].lstrip("/") if e.path.startswith(base) else e.base_name
        parts = rel.split("/")
        hidden = [i for i, p in enumerate(parts) if p.startswith(HIDDEN)]
        if hidden:
            if hidden[0] == len(parts) - 1:  # the topmost hidden entry itself
                out.ignored.append(e.path + ("/" if e.type == pafs.FileType.Directory else ""))
            continue
        if e.type != pafs.FileType.File:
            continue
        (out.files.append((e.path, int(e.size or 0))) if e.base_name.endswith(".parquet") else out.other.append(e.path))


def list_split(dp: Any) -> SplitListing:
    """The listing of ``dp`` (a :class:`~denoisrec.trainer.data.fs.DataPath`: a folder, or one file)."""
    info = dp.fs.get_file_info(dp.path)
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"{dp}: no such file or directory")
    out = SplitListing(str(dp))
    if info.type == pafs.FileType.File:
        out.files.append((dp.path, int(info.size or 0)))
        return out
    if isinstance(dp.fs, pafs.LocalFileSystem):
        _list_local(dp.path, out)
    else:
        _list_fs(dp, out)
    out.files.sort()
    out.other.sort()
    out.ignored.sort()
    return out

"""A checkpoint directory's files on disk: content checksums, fsync, verification, and the list of checkpoints.

A checkpoint is *complete and intact* when its ``meta.json`` parses, holds every key resume needs, and every
file it lists (``"files": {relative path: {"size": bytes, "sha256": hex}}``, written by rank 0 after every
rank has finished writing) exists with that size and that SHA-256. :func:`problem` returns ``None`` for
such a checkpoint, otherwise one line that names the damaged file and what is wrong with it (missing,
truncated, a changed byte, a broken ``meta.json``, a missing key). Checkpoints written before checksums
(``format_version`` 1, no ``"files"``) are accepted with a note.

Checkpoints are ordered by the step number in their name (``step_<NNNNNNNN>``), never by name or time.
Directories that a save is still writing (``.tmp-*``) or that a save replaced (``.old-*``) are not
checkpoints.

Example::

    meta = dict(meta, files=checksums(path))        # before writing meta.json
    problem(path)                                   # None, or "…/__0_0.distcp: 1,204 bytes, meta.json says 2,048 …"
    [s for s, _ in list_steps(root)]                # [10, 20, 30]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

META = "meta.json"
STEP_DIR = re.compile(r"^step_(\d+)$")
REQUIRED_KEYS = (
    "step",
    "epoch",
    "batches_in_epoch",
    "steps_per_epoch",
    "world_size",
    "global_batch",
    "spec",
    "denoiser",
)
CHUNK = 1 << 20


def sha256_file(path: str) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def data_files(path: str) -> List[str]:
    """Every file below ``path`` except ``meta.json``, as sorted relative paths."""
    out = []
    for d, _, names in os.walk(path):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), path)
            if rel != META:
                out.append(rel)
    return sorted(out)


def checksums(path: str) -> Dict[str, Dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file of the checkpoint (``meta.json`` aside)."""
    return {
        rel: {"size": os.path.getsize(os.path.join(path, rel)), "sha256": sha256_file(os.path.join(path, rel))}
        for rel in data_files(path)
    }


def fsync_path(path: str) -> None:
    """Flush a file or a directory (its entries) to disk; a no-op where the platform cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: str) -> None:
    """``fsync`` every file and folder under ``path`` (each folder after its files)."""
    for d, _, names in os.walk(path):
        for n in names:
            fsync_path(os.path.join(d, n))
        fsync_path(d)


def read_meta(path: str) -> Dict[str, Any]:
    """``<path>/meta.json``; :class:`ValueError` naming the file when it is missing, broken or incomplete."""
    file = os.path.join(path, META)
    try:
        with open(file) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{file}: missing (an interrupted save, or not a checkpoint)") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{file}: not valid JSON, damaged ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{file}: not a JSON object, damaged")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing and meta.get("with_optimizer", True):
        raise ValueError(f"{file}: missing key(s) {missing}, damaged or not a denoisrec checkpoint")
    return meta


def problem(path: str) -> Optional[str]:
    """``None`` when ``path`` is a complete, intact checkpoint; else one line naming the file at fault."""
    try:
        meta = read_meta(path)
    except ValueError as e:
        return str(e)
    for rel, want in (meta.get("files") or {}).items():
        file = os.path.join(path, rel)
        if not os.path.isfile(file):
            return f"{file}: missing (meta.json lists it)"
        size = os.path.getsize(file)
        if size != want["size"]:
            return f"{file}: {size:,} bytes, meta.json says {want['size']:,} (truncated or overwritten)"
        if sha256_file(file) != want["sha256"]:
            return f"{file}: content differs from its checksum in meta.json (damaged: a flipped bit or a partial write)"
    return None


def list_steps(root: str) -> List[Tuple[int, str]]:
    """``[(step, directory)]`` of the ``step_*`` directories under ``root``, by step number."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = STEP_DIR.match(name)
        if m and os.path.isdir(os.path.join(root, name)):
            found.append((int(m.group(1)), os.path.join(root, name)))
    return sorted(found)

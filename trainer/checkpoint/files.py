"""A checkpoint directory's files on disk: content checksums, fsync, verification, and the list of checkpoints.

A checkpoint is *complete and intact* when its ``meta.json`` parses, holds every key resume needs, and every
file it lists (``"files": {relative path: {"size": bytes, "sha256": hex}}``, written by rank 0 after every
rank has finished writing) exists with that size and that SHA-256. :func:`problem` returns ``None`` for
such a checkpoint, otherwise one line that names the damaged file and what is wrong with it (missing,
truncated, a changed byte, a broken ``meta.json``, a missing key). ``meta.json`` also carries the SHA-256 of
its own content (``"meta_sha256"``, format 3), so a changed digit in it (``"step": 50`` → ``52``) is found
too. Older checkpoints are accepted with the one-line note of :func:`note`: format 2 (every other file's
checksum, ``meta.json`` itself unchecked) and format 1 (no checksums at all: loaded unverified). A format 2
or 3 ``meta.json`` without its ``"files"`` (or a format 3 one without ``"meta_sha256"``) is damaged.

Checkpoints are ordered by the step number in their name (``step_<NNNNNNNN>``), never by name or time.
Directories that a save is still writing (``.tmp-*``) or that a save replaced (``.old-*``) are not
checkpoints.

Example::

    meta = dict(meta, files=checksums(path))        # before writing meta.json
    meta = seal_meta(meta)                          # adds "meta_sha256", the checksum of the rest
    problem(path)                                   # None, or "…/__0_0.distcp: 1,204 bytes, meta.json says 2,048 …"
    note(path)                                      # None, or "…: format 1, no checksums: loaded unverified"
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
META_SHA = "meta_sha256"
SEALED_FROM = 3  # the first format_version whose meta.json carries META_SHA


def meta_digest(meta: Dict[str, Any]) -> str:
    """The SHA-256 of ``meta`` without its own checksum, as canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in meta.items() if k != META_SHA}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal_meta(meta: Dict[str, Any]) -> Dict[str, Any]:
    """``meta`` as JSON will hold it (values JSON cannot hold as strings), with ``"meta_sha256"`` added."""
    body = json.loads(json.dumps(meta, default=str))
    body.pop(META_SHA, None)
    return {**body, META_SHA: meta_digest(body)}


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
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{file}: format_version={version!r} is not an integer, damaged")
    if version >= SEALED_FROM and META_SHA not in meta:
        raise ValueError(
            f"{file}: missing its own checksum ({META_SHA!r}; format_version {version}), damaged or edited"
        )
    if META_SHA in meta and meta[META_SHA] != meta_digest(meta):
        raise ValueError(
            f"{file}: content differs from its own checksum ({META_SHA}; damaged: a changed digit, a partial write "
            "or a hand edit)"
        )
    if version >= 2 and not isinstance(meta.get("files"), dict):
        raise ValueError(
            f"{file}: format_version {version} lists every file's checksum, but has no 'files' key, damaged or edited"
        )
    return meta


def note(path: str) -> Optional[str]:
    """One line for a checkpoint older than the current format (verified less), else ``None``."""
    try:
        meta = read_meta(path)
    except ValueError:
        return None
    if not meta.get("files"):
        return (
            f"note: {path}: written without checksums (format_version {meta.get('format_version', 1)}): "
            "loaded unverified"
        )
    if META_SHA not in meta:
        return (
            f"note: {path}: written before meta.json carried its own checksum (format_version "
            f"{meta.get('format_version')}): its files are verified, meta.json itself is not"
        )
    return None


def problem(path: str) -> Optional[str]:
    """``None`` when ``path`` is a complete, intact checkpoint; else one line naming the file at fault."""
    try:
        meta = read_meta(path)
    except ValueError as e:
        return str(e)
    for rel, want in (meta.get("files") or {}).items():
        file = os.path.join(path, rel)
        if not isinstance(want, dict) or not isinstance(want.get("size"), int) or "sha256" not in want:
            return f"{os.path.join(path, META)}: files[{rel!r}] is not {{size, sha256}}, damaged"
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

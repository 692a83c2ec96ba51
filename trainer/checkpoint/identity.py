"""What a checkpoint continues, beside the model: the training data and the denoiser's options.

A checkpoint's ``meta.json`` records a fingerprint of the train split (``"data"``: every file's name relative
to the split, its size in bytes and its row count, and the SHA-256 of that list) and the denoiser's name and
options. A resume checks both against this launch (:func:`check_same_run`): another dataset of the same
schema, or changed denoiser options (``-p eps_max=0.2`` → ``0.1``), would otherwise continue silently from
the old data position or with other math. The dataset's path is kept for the message only, so a dataset that
was moved (same files) still resumes. Checkpoints written before the fingerprint have no ``"data"`` key and
are not checked for it.

Example::

    fp = data_fingerprint(reader)          # {"path": ".../train", "files": [["part-00000.parquet", 80512, 2000], ...],
                                           #  "rows": 6000, "sha256": "..."}
    check_same_run(path, meta, fp, cfg.denoiser.name, cfg.denoiser.params)   # CheckpointError naming the change
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Optional

from denoisrec.trainer.errors import CheckpointError

FRESH = "start fresh with --set run.resume=never run.overwrite=true, or use another --out"


def data_fingerprint(reader: Any) -> Dict[str, Any]:
    """The train split's identity: ``{"path", "files": [[name, bytes, rows]], "rows", "sha256"}``.

    Args:
        reader: the split's :class:`~denoisrec.trainer.data.reader.ParquetBatchReader` (its listing and row
            groups; nothing is read).

    Returns:
        The fingerprint (JSON-able); ``sha256`` covers ``files`` only.
    """
    rows: Dict[str, int] = {}
    for g in reader.row_groups:
        rows[g.path] = rows.get(g.path, 0) + g.num_rows
    root = reader.dp.path.rstrip("/") + "/"
    sizes = getattr(reader, "file_bytes", {})
    entries: List[List[Any]] = [
        [f[len(root) :] if f.startswith(root) else f.rsplit("/", 1)[-1], sizes.get(f), rows.get(f, 0)]
        for f in reader.files
    ]
    digest = hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()
    return {"path": reader.path, "files": entries, "rows": int(reader.total_rows), "sha256": digest}


def _describe(fp: Dict[str, Any]) -> str:
    return f"{fp.get('path')} ({len(fp.get('files') or [])} file(s), {fp.get('rows', 0):,} rows)"


def check_same_run(
    path: str,
    meta: Dict[str, Any],
    data: Dict[str, Any],
    denoiser: str,
    params: Dict[str, Any],
    sparse_optimizer: Optional[str] = None,
) -> None:
    """Raise :class:`CheckpointError` when the checkpoint at ``path`` was trained on other data or with other
    denoiser options than this launch's.

    Args:
        path: the checkpoint (named in the message).
        meta: its ``meta.json``.
        data: this launch's :func:`data_fingerprint` of the train split.
        denoiser: this launch's denoiser name.
        params: this launch's denoiser options.
        sparse_optimizer: this launch's ``optim.sparse`` (its state is in the checkpoint: another one cannot
            load it).
    """
    saved = meta.get("data")
    if isinstance(saved, dict) and saved.get("sha256") != data["sha256"]:
        raise CheckpointError(
            f"{path}: trained on {_describe(saved)}, this run reads {_describe(data)}: another dataset (its files, "
            f"sizes or row counts differ); resume with the checkpoint's --data, or {FRESH}"
        )
    was_opt = meta.get("sparse_optimizer")
    if sparse_optimizer is not None and was_opt is not None and was_opt != sparse_optimizer:
        raise CheckpointError(
            f"{path}: written with optim.sparse={was_opt}, this run uses optim.sparse={sparse_optimizer} (their "
            f"optimizer states differ); resume with --set optim.sparse={was_opt}, or {FRESH}"
        )
    den = meta.get("denoiser") or {}
    if den.get("name") != denoiser:
        raise CheckpointError(
            f"{path}: written with denoiser {den.get('name')!r}, this run uses {denoiser!r}; resume with "
            f"--denoiser {den.get('name')}, or {FRESH}"
        )
    if "params" not in den:
        return
    was, now = den.get("params") or {}, json.loads(json.dumps(params or {}, default=str))
    if was != now:
        diff = ", ".join(
            f"{k}={was.get(k, '(unset)')!r} in the checkpoint, {now.get(k, '(unset)')!r} now"
            for k in sorted(set(was) | set(now))
            if was.get(k) != now.get(k)
        )
        raise CheckpointError(
            f"{path}: the denoiser's options differ from the checkpoint's ({diff}); resume with the same "
            f"-p options, or {FRESH}"
        )


__all__ = ["FRESH", "check_same_run", "data_fingerprint"]

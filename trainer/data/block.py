"""Decoded rows: a :class:`Block` of numpy arrays, made from a checked Arrow record batch by :func:`decode`.

The layout is chosen for cheap batch assembly (:mod:`.assemble`) and shuffling (:mod:`.shuffle`):

- ``ids``: the single-valued sparse features stacked feature-major, ``[n_single, n]`` (``int32`` when every
  column fits, else ``int64``): the KJT values of a run of consecutive single-valued keys are one copy.
- ``multi``: per multi-hot feature, Arrow's own ``offsets`` ``[n + 1]`` and list values (zero-copy views of
  the Arrow buffers; offsets are rebased to 0 only when the record batch is a slice).
- ``dense``: ``[n, n_dense]`` float32, row-major: a batch of consecutive rows is a zero-copy view, and the
  shuffle buffer gathers whole rows (one cache line for 16 features).
- ``one_d``: ``label``, ``sample_id``, ``group_id``, ``clean_label``, ``is_noisy``, 1-D, zero-copy views of
  the Arrow buffers when the column has no nulls and a numpy-compatible type; ``trusted_label`` as float32
  with NaN where the row has no trusted label (null).

:func:`decode` runs the value checks of :mod:`.checks` on every block (never trusting Parquet statistics) and
applies the OOV and NaN policies, counting repairs in :class:`Counters`.

Example::

    layout = Layout(schema, with_ground_truth=True)
    block = decode(record_batch, layout, Where("part-0.parquet", 0), Counters())
    block.ids.shape  # (n_single, record_batch.num_rows)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import torch

from denoisrec.trainer.data.checks import (
    Finding,
    hash_out_of_table,
    must_be_whole,
    not_binary,
    not_binary_or_null,
    not_finite,
    out_of_table,
)
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.errors import DataError

_INT32_SAFE = {np.dtype(t) for t in (np.int8, np.int16, np.int32, np.uint8, np.uint16)}
_INT32_MAX = 2**31 - 1


class Layout:
    """How a schema's columns map onto a :class:`Batch`; computed once per reader.

    ``segments`` lists the KJT keys in schema order as runs: ``("single", s0, s1)`` is rows ``s0:s1`` of a
    block's ``ids``; ``("multi", m, m + 1)`` is multi-hot feature ``m``.
    """

    def __init__(self, schema: DataSchema, with_ground_truth: bool) -> None:
        self.schema = schema
        self.with_ground_truth = with_ground_truth and schema.ground_truth
        self.with_trusted = with_ground_truth and schema.trusted_label is not None  # evaluation reads it too
        self.keys = schema.sparse_names
        self.single = [f for f in schema.sparse if not f.multi_hot]
        self.multi = [f for f in schema.sparse if f.multi_hot]
        self.segments: List[Tuple[str, int, int]] = []
        s = m = 0
        for f in schema.sparse:
            if f.multi_hot:
                self.segments.append(("multi", m, m + 1))
                m += 1
            elif self.segments and self.segments[-1][0] == "single":
                self.segments[-1] = ("single", self.segments[-1][1], s + 1)
                s += 1
            else:
                self.segments.append(("single", s, s + 1))
                s += 1
        self.single_sizes = np.array([f.num_embeddings for f in self.single], dtype=np.int64)
        self.columns = schema.columns(with_ground_truth=self.with_ground_truth, with_trusted=self.with_trusted)
        self.whole = must_be_whole(schema, self.with_ground_truth)
        gt = self.with_ground_truth
        self.one_d: Dict[str, Tuple[Optional[str], torch.dtype]] = {
            "label": (schema.label, torch.float32),
            "sample_id": (schema.sample_id, torch.int64),
            "group_id": (schema.group_id, torch.int64),
            "clean_label": (schema.clean_label if gt else None, torch.float32),
            "is_noisy": (schema.is_noisy if gt else None, torch.float32),
            "trusted_label": (schema.trusted_label if self.with_trusted else None, torch.float32),
        }


@dataclass(frozen=True)
class Where:
    """Where a record batch came from: file, row group, and the row-group row of its first row."""

    path: str
    row_group: int
    first_row: int = 0
    file_row: int = 0  # row of the file at which the row group starts

    def at(self, i: int) -> str:
        r = self.first_row + i
        return f"row {r:,} of the row group (row {self.file_row + r:,} of the file)"

    def __str__(self) -> str:
        return f"{self.path}: row group {self.row_group}"


class Counters:
    """Thread-safe per-column counts of repaired values: ``oov_hashed`` and ``nan_imputed``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.oov_hashed: Dict[str, int] = {}
        self.nan_imputed: Dict[str, int] = {}

    def add(self, kind: str, column: str, n: int) -> None:
        with self._lock:
            d = getattr(self, kind)
            d[column] = d.get(column, 0) + n

    def snapshot(self) -> Dict[str, Dict[str, int]]:
        with self._lock:
            return {"oov_hashed": dict(self.oov_hashed), "nan_imputed": dict(self.nan_imputed)}


@dataclass
class Block:
    """Decoded, checked rows (see the module docstring for the layout)."""

    n: int
    ids: np.ndarray
    multi: List[Tuple[np.ndarray, np.ndarray]]
    dense: np.ndarray
    one_d: Dict[str, Optional[np.ndarray]] = field(default_factory=dict)

    def copy_rows(self, a: int, b: int) -> "Block":
        """An independent copy of rows ``[a, b)`` (so a big block can be freed)."""
        multi = []
        for off, vals in self.multi:
            s, e = int(off[a]), int(off[b])
            multi.append(((off[a : b + 1] - s).astype(np.int64), vals[s:e].copy()))
        return Block(
            n=b - a,
            ids=self.ids[:, a:b].copy(),
            multi=multi,
            dense=self.dense[a:b].copy(),
            one_d={k: None if v is None else v[a:b].copy() for k, v in self.one_d.items()},
        )

    @property
    def nbytes(self) -> int:
        arrays = [self.ids, self.dense] + [a for pair in self.multi for a in pair]
        arrays += [v for v in self.one_d.values() if v is not None]
        return int(sum(a.nbytes for a in arrays))


# --------------------------------------------------------------------------------------------- decode


def _null_error(where: Where, col: str, arr: pa.Array) -> DataError:
    first = int(np.flatnonzero(~np.asarray(arr.is_valid()))[0])
    return DataError(
        f"{where}: column {col!r} has {arr.null_count:,} null value(s) (first at {where.at(first)}); "
        "id and label columns must not contain nulls"
    )


def _ids_error(where: Where, col: str, f: Finding, size: int, rows: str) -> DataError:
    return DataError(
        f"{where}: column {col!r} has {f.count:,} id(s) outside the table [0, {size:,}) "
        f"(first: {f.value} at {rows}); set oov_policy to 'hash' to hash such ids into the table"
    )


def decode(rb: pa.RecordBatch, layout: Layout, where: Where, counters: Counters) -> Block:
    """Check one record batch against the schema and convert it to a :class:`Block`.

    Raises :class:`DataError` (naming file, row group, column and the first bad row) on nulls in id or
    label columns, labels outside {0, 1}, out-of-table ids under ``oov_policy='error'`` and non-finite dense
    values under ``nan_policy='error'``; otherwise hashes / imputes and counts in ``counters``.
    """
    schema = layout.schema
    n = rb.num_rows
    for c in layout.whole:
        arr = rb.column(c)
        if arr.null_count:
            raise _null_error(where, c, arr)

    # Single-valued ids, stacked feature-major.
    cols = [rb.column(f.name).to_numpy(zero_copy_only=False) for f in layout.single]
    narrow = all(c.dtype in _INT32_SAFE for c in cols) and int(layout.single_sizes.max(initial=0)) <= _INT32_MAX
    ids = np.empty((len(cols), n), dtype=np.int32 if narrow else np.int64)
    for i, c in enumerate(cols):
        ids[i] = c
    if n and len(cols):
        # One pass: viewed as unsigned, a negative id is huge, so max < size means every id is in the table.
        hi = ids.view(np.uint32 if ids.dtype == np.int32 else np.uint64).max(axis=1)
        for k in np.flatnonzero(hi >= layout.single_sizes.astype(hi.dtype)):
            feat = layout.single[k]
            size = feat.num_embeddings
            finding = out_of_table(ids[k], size)
            assert finding is not None
            if schema.oov_policy_of(feat) == "error":
                raise _ids_error(where, feat.name, finding, size, where.at(finding.first))
            ids[k] = hash_out_of_table(ids[k], size, finding)
            counters.add("oov_hashed", feat.name, finding.count)

    # Multi-hot: Arrow offsets and values, straight.
    multi = []
    for feat in layout.multi:
        arr = rb.column(feat.name)
        off = arr.offsets.to_numpy(zero_copy_only=False)
        base, end = int(off[0]), int(off[-1])
        child = arr.values.slice(base, end - base)
        if child.null_count:
            bad = int(np.flatnonzero(~np.asarray(child.is_valid()))[0])
            row = int(np.searchsorted(off, base + bad, side="right")) - 1
            raise DataError(
                f"{where}: column {feat.name!r} has {child.null_count:,} null id(s) inside its lists "
                f"(first at {where.at(row)})"
            )
        vals = child.to_numpy(zero_copy_only=False)
        if base:
            off = off - base
        finding = out_of_table(vals, feat.num_embeddings)
        if finding is not None:
            row = int(np.searchsorted(off, finding.first, side="right")) - 1
            if schema.oov_policy_of(feat) == "error":
                raise _ids_error(where, feat.name, finding, feat.num_embeddings, where.at(row))
            vals = hash_out_of_table(vals, feat.num_embeddings, finding)
            counters.add("oov_hashed", feat.name, finding.count)
        multi.append((off, vals))

    # Dense, row-major float32; NaN / inf / null handled by the schema's nan_policy.
    dense = np.empty((n, len(schema.dense)), dtype=np.float32)
    if schema.dense:
        np.stack(
            [rb.column(c).to_numpy(zero_copy_only=False) for c in schema.dense], axis=1, out=dense, casting="same_kind"
        )
    if dense.size and not np.isfinite(dense).all():
        for j, c in enumerate(schema.dense):
            col = dense[:, j]
            finding = not_finite(col)
            if finding is None:
                continue
            if schema.nan_policy == "error":
                raise DataError(
                    f"{where}: column {c!r} has {finding.count:,} NaN, infinite or null value(s) "
                    f"(first: {finding.value} at {where.at(finding.first)}); set nan_policy to "
                    "'impute' to replace them"
                )
            col[~np.isfinite(col)] = schema.impute_value
            counters.add("nan_imputed", c, finding.count)

    one_d: Dict[str, Optional[np.ndarray]] = {}
    for role, (name, _) in layout.one_d.items():
        if name is None:
            one_d[role] = None
            continue
        if role == "trusted_label":  # null where the row has no trusted label: NaN in float32
            v = rb.column(name).cast(pa.float32()).to_numpy(zero_copy_only=False)
            finding = not_binary_or_null(v)
            if finding is not None:
                raise DataError(
                    f"{where}: column {name!r} (the trusted label) has {finding.count:,} value(s) outside "
                    f"{{0, 1, null}} (first: {finding.value!r} at {where.at(finding.first)}); trusted labels "
                    "must be 0 or 1, null where the row has none"
                )
            one_d[role] = v
            continue
        v = rb.column(name).to_numpy(zero_copy_only=False)
        if role in ("label", "clean_label", "is_noisy"):
            finding = not_binary(v)
            if finding is not None:
                raise DataError(
                    f"{where}: column {name!r} has {finding.count:,} value(s) outside {{0, 1}} "
                    f"(first: {finding.value!r} at {where.at(finding.first)}); labels must be 0 or 1"
                )
        one_d[role] = v
    return Block(n=n, ids=ids, multi=multi, dense=dense, one_d=one_d)

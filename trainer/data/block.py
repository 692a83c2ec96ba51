"""Decoded rows (:class:`Block`) and the assembly of a :class:`Batch` from slices of blocks.

A reader decodes Parquet into Arrow record batches, checks them (:mod:`.checks`) and turns each into a
:class:`Block` of numpy arrays laid out for cheap batch assembly:

- ``ids``: the single-valued sparse features stacked feature-major, ``[n_single, n]`` (``int32`` when every
  column fits, else ``int64``): the KJT values of a run of consecutive single-valued keys are one copy.
- ``multi``: per multi-hot feature, Arrow's own ``offsets`` ``[n + 1]`` and list values (zero-copy views of
  the Arrow buffers; offsets are rebased to 0 only when the record batch is a slice).
- ``dense``: ``[n, n_dense]`` float32, row-major: a batch of consecutive rows is a zero-copy view, and the
  shuffle buffer gathers whole rows (one cache line for 16 features).
- ``label``, ``sample_id``, ``group_id``, ``clean_label``, ``is_noisy``: 1-D, zero-copy views of the Arrow
  buffers when the column has no nulls and a numpy-compatible type.

:func:`assemble` builds a :class:`Batch` from ``(block, slice)`` parts. The dense matrix and the 1-D columns
of a batch that lies inside one block are views, no copy (1-D columns when the file's type already is the
batch's: ``int64`` ids, ``float32`` labels); KJT values and lengths are one fresh buffer each, written once. With ``pin=True`` every
output buffer is allocated in pinned memory and written in place (no second copy to pin).
:func:`permute` is the shuffle buffer's gather: a window of blocks into one block in a given row order.

Example::

    layout = Layout(schema, with_ground_truth=True)
    block = decode(record_batch, layout, Where("part-0.parquet", 0), Counters())
    batch = assemble([(block, slice(0, 128)), (other_block, slice(0, 2))], layout)
    batch.sparse_features.stride()  # 130
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.trainer.data.batch import Batch
from denoisrec.trainer.data.checks import (
    DataError,
    Finding,
    hash_out_of_table,
    must_be_whole,
    not_binary,
    not_finite,
    out_of_table,
)
from denoisrec.trainer.data.schema import DataSchema

# Arrow buffers are read-only; torch.from_numpy warns about it. Batches are inputs and are not written in place.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

Part = Tuple["Block", slice]

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
        self.columns = schema.columns(with_ground_truth=self.with_ground_truth)
        self.whole = must_be_whole(schema, self.with_ground_truth)
        gt = self.with_ground_truth
        self.one_d: Dict[str, Tuple[Optional[str], torch.dtype]] = {
            "label": (schema.label, torch.float32),
            "sample_id": (schema.sample_id, torch.int64),
            "group_id": (schema.group_id, torch.int64),
            "clean_label": (schema.clean_label if gt else None, torch.float32),
            "is_noisy": (schema.is_noisy if gt else None, torch.float32),
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
            multi.append(((off[a:b + 1] - s).astype(np.int64), vals[s:e].copy()))
        return Block(n=b - a, ids=self.ids[:, a:b].copy(), multi=multi, dense=self.dense[a:b].copy(),
                     one_d={k: None if v is None else v[a:b].copy() for k, v in self.one_d.items()})

    @property
    def nbytes(self) -> int:
        arrays = [self.ids, self.dense] + [a for pair in self.multi for a in pair]
        arrays += [v for v in self.one_d.values() if v is not None]
        return int(sum(a.nbytes for a in arrays))


def _list_index(starts: np.ndarray, lens: np.ndarray, total: int) -> np.ndarray:
    """Indices of the values of the lists ``[starts[i], starts[i] + lens[i])``, concatenated."""
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = starts.astype(np.int64) - (np.cumsum(lens, dtype=np.int64) - lens)
    return np.repeat(shift, lens) + np.arange(total, dtype=np.int64)


def _cat(arrays: List[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def permute(blocks: Sequence[Block], perm: np.ndarray, chunk_rows: int) -> List[Block]:
    """The rows of ``blocks`` (concatenated) in the order ``perm``, as new blocks of ``chunk_rows`` rows.

    Column by column for the feature-major arrays (one column of the window is a few MB at most, so each
    gather works in cache), whole rows for the dense matrix; no allocation is big enough to bypass the
    allocator's reuse. Single-threaded numpy: the cores are pyarrow's.
    """
    n = len(perm)
    index = [np.ascontiguousarray(perm[a:a + chunk_rows], dtype=np.int64) for a in range(0, n, chunk_rows)]
    sizes = [len(i) for i in index]

    def gather_rows(srcs: List[np.ndarray]) -> List[np.ndarray]:
        """Row-wise gather of 2-D ``[R, n_b]`` arrays (one per block) into ``[R, chunk]`` arrays."""
        outs = [np.empty((srcs[0].shape[0], k), dtype=srcs[0].dtype) for k in sizes]
        for r in range(srcs[0].shape[0]):
            src = _cat([x[r] for x in srcs])
            for o, idx in zip(outs, index):
                np.take(src, idx, out=o[r])
        return outs

    ids = gather_rows([b.ids for b in blocks])
    dense_src = _cat([b.dense for b in blocks])
    dense = [np.take(dense_src, idx, axis=0) for idx in index]  # whole rows: one cache line each
    one_d: Dict[str, List[Optional[np.ndarray]]] = {}
    for key, v in blocks[0].one_d.items():
        if v is None:
            one_d[key] = [None] * len(sizes)
        else:
            src = _cat([b.one_d[key] for b in blocks])  # type: ignore[misc]
            one_d[key] = [np.take(src, idx) for idx in index]
    multi: List[List[Tuple[np.ndarray, np.ndarray]]] = [[] for _ in sizes]
    for m in range(len(blocks[0].multi)):
        offs, base = [np.zeros(1, dtype=np.int64)], 0
        for b in blocks:
            off = b.multi[m][0]
            offs.append(off[1:].astype(np.int64) + base)
            base += int(off[-1])
        off = np.concatenate(offs)
        vals = _cat([b.multi[m][1] for b in blocks])
        for c, idx in enumerate(index):
            starts = off[idx]
            lens = off[idx + 1] - starts
            new_off = np.zeros(len(idx) + 1, dtype=np.int64)
            np.cumsum(lens, out=new_off[1:])
            multi[c].append((new_off, np.take(vals, _list_index(starts, lens, int(new_off[-1])))))
    return [Block(n=k, ids=ids[c], multi=multi[c], dense=dense[c], one_d={key: v[c] for key, v in one_d.items()})
            for c, k in enumerate(sizes)]


# --------------------------------------------------------------------------------------------- decode


def _null_error(where: Where, col: str, arr: pa.Array) -> DataError:
    first = int(np.flatnonzero(~np.asarray(arr.is_valid()))[0])
    return DataError(f"{where}: column {col!r} has {arr.null_count:,} null value(s) (first at {where.at(first)}); "
                     "id and label columns must not contain nulls")


def _ids_error(where: Where, col: str, f: Finding, size: int, rows: str) -> DataError:
    return DataError(f"{where}: column {col!r} has {f.count:,} id(s) outside the table [0, {size:,}) "
                     f"(first: {f.value} at {rows}); set oov_policy to 'hash' to hash such ids into the table")


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
    for k, c in enumerate(cols):
        ids[k] = c
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
            raise DataError(f"{where}: column {feat.name!r} has {child.null_count:,} null id(s) inside its lists "
                            f"(first at {where.at(row)})")
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
        np.stack([rb.column(c).to_numpy(zero_copy_only=False) for c in schema.dense], axis=1, out=dense,
                 casting="same_kind")
    if dense.size and not np.isfinite(dense).all():
        for j, c in enumerate(schema.dense):
            col = dense[:, j]
            finding = not_finite(col)
            if finding is None:
                continue
            if schema.nan_policy == "error":
                raise DataError(f"{where}: column {c!r} has {finding.count:,} NaN, infinite or null value(s) "
                                f"(first: {finding.value} at {where.at(finding.first)}); set nan_policy to "
                                "'impute' to replace them")
            col[~np.isfinite(col)] = schema.impute_value
            counters.add("nan_imputed", c, finding.count)

    one_d: Dict[str, Optional[np.ndarray]] = {}
    for role, (col, _) in layout.one_d.items():
        if col is None:
            one_d[role] = None
            continue
        v = rb.column(col).to_numpy(zero_copy_only=False)
        if role in ("label", "clean_label", "is_noisy"):
            finding = not_binary(v)
            if finding is not None:
                raise DataError(f"{where}: column {col!r} has {finding.count:,} value(s) outside {{0, 1}} "
                                f"(first: {finding.value!r} at {where.at(finding.first)}); labels must be 0 or 1")
        one_d[role] = v
    return Block(n=n, ids=ids, multi=multi, dense=dense, one_d=one_d)


# ------------------------------------------------------------------------------------------- assemble


_NP = {torch.float32: np.dtype(np.float32), torch.int64: np.dtype(np.int64), torch.int32: np.dtype(np.int32)}


def _alloc(shape: Sequence[int], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    if pin:
        return torch.empty(tuple(shape), dtype=dtype, pin_memory=True)
    return torch.from_numpy(np.empty(tuple(shape), dtype=_NP[dtype]))  # cheaper than torch.empty


def _one_d(parts: Sequence[Part], role: str, dtype: torch.dtype, n: int, pin: bool) -> Optional[torch.Tensor]:
    if len(parts) == 1 and not pin:
        v = parts[0][0].one_d[role][parts[0][1]]  # type: ignore[index]
        if v.dtype == _NP[dtype]:
            return torch.from_numpy(v)  # zero-copy view of the Arrow buffer
    out = _alloc((n,), dtype, pin)
    o, p = out.numpy(), 0
    for block, rows in parts:
        k = rows.stop - rows.start
        o[p:p + k] = block.one_d[role][rows]  # type: ignore[index]
        p += k
    return out


def assemble(parts: Sequence[Part], layout: Layout, pin: bool = False) -> Batch:
    """A :class:`Batch` of the rows ``parts`` name, in order (see the module docstring)."""
    n = sum(r.stop - r.start for _, r in parts)
    nkeys = len(layout.keys)
    lengths_t = _alloc((nkeys * n,), torch.int32, pin)
    lengths = lengths_t.numpy()
    multi_total, key = 0, 0
    for kind, a, b in layout.segments:  # lengths: 1 for single-valued keys, offset differences for lists
        if kind == "single":
            lengths[key * n:(key + b - a) * n] = 1
            key += b - a
            continue
        seg, p = lengths[key * n:(key + 1) * n], 0
        for block, rows in parts:
            off, k = block.multi[a][0], rows.stop - rows.start
            np.subtract(off[rows.start + 1:rows.stop + 1], off[rows.start:rows.stop], out=seg[p:p + k],
                        casting="unsafe")
            multi_total += int(off[rows.stop]) - int(off[rows.start])
            p += k
        key += 1
    total = n * len(layout.single) + multi_total
    values_t = _alloc((total,), torch.int64, pin)
    values, pos = values_t.numpy(), 0
    for kind, a, b in layout.segments:
        if kind == "single":
            out, p = values[pos:pos + (b - a) * n].reshape(b - a, n), 0
            for block, rows in parts:
                k = rows.stop - rows.start
                out[:, p:p + k] = block.ids[a:b, rows]
                p += k
            pos += (b - a) * n
            continue
        for block, rows in parts:
            off, vals = block.multi[a]
            s, e = int(off[rows.start]), int(off[rows.stop])
            values[pos:pos + e - s] = vals[s:e]
            pos += e - s
    assert pos == total, "reader bug: KJT values not filled"
    kjt = KeyedJaggedTensor(keys=layout.keys, values=values_t, lengths=lengths_t, stride=n)

    if len(parts) == 1 and not pin:
        dense = torch.from_numpy(parts[0][0].dense[parts[0][1]])  # a view
    else:
        dense = _alloc((n, len(layout.schema.dense)), torch.float32, pin)
        dn, p = dense.numpy(), 0
        for block, rows in parts:
            k = rows.stop - rows.start
            dn[p:p + k] = block.dense[rows]
            p += k
    one: Dict[str, Optional[torch.Tensor]] = {}
    for role, (col, dt) in layout.one_d.items():
        if col is None:
            one[role] = None
        elif not parts:  # an empty batch (the equal-steps padding): the same fields, zero rows
            one[role] = _alloc((0,), dt, pin)
        else:
            one[role] = _one_d(parts, role, dt, n, pin)
    return Batch(
        dense_features=dense,
        sparse_features=kjt,
        labels=one["label"],  # type: ignore[arg-type]
        sample_ids=one["sample_id"],
        group_ids=one["group_id"],
        clean_labels=one["clean_label"],
        is_noisy=one["is_noisy"],
    )

"""Streaming Parquet → :class:`Batch` reader, sharded over ranks.

**Sharding.** The split's row groups (over all files, sorted by path, optionally permuted per epoch by a
seed) form one global sequence of ``N`` rows. Rank ``r`` of ``W`` reads the contiguous range
``[r·N//W, (r+1)·N//W)`` of that sequence, so every row is read exactly once per epoch, shares differ by at
most one row, and only the row groups overlapping a rank's range are decoded (at most two of them partly).

**Equal steps.** Collectives (embedding all-to-all, global loss statistics) need every rank to take the same
number of steps. Every rank yields ``steps = ceil(ceil(N/W) / batch_size)`` batches per epoch; a rank whose
share is smaller ends with a short or an empty batch. Nothing is dropped or duplicated;
:meth:`ParquetBatchReader.epoch_plan` reports each rank's rows and last-batch size.

**Memory.** One row group at a time is decoded (plus the leftover of the previous one), never a whole split.

**Bad input** raises :class:`DataError` naming the file, row group and column.

Example::

    reader = ParquetBatchReader("data/small/train", DataSchema.load("data/small"), batch_size=1024,
                                rank=0, world_size=2)
    for batch in reader:
        ...  # Batch(dense_features [B, n_dense], sparse_features KJT, labels [B], ...)
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.trainer.data.batch import Batch
from denoisrec.trainer.data.schema import DataSchema


# Arrow buffers are read-only; torch.from_numpy warns once about it. Batches are never written in place.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


class DataError(ValueError):
    """Input data that does not match the schema; the message names file, row group and column."""


@dataclass(frozen=True)
class RowGroupRef:
    path: str
    index: int
    num_rows: int


@dataclass(frozen=True)
class Slice:
    """Rows ``[start, stop)`` of one row group."""

    group: RowGroupRef
    start: int
    stop: int


@dataclass
class EpochPlan:
    """What one rank reads in one epoch."""

    rank: int
    world_size: int
    total_rows: int
    rank_rows: int
    steps: int
    batch_size: int
    slices: List[Slice]

    @property
    def last_batch_rows(self) -> int:
        return self.rank_rows - (self.steps - 1) * self.batch_size if self.steps else 0


def list_parquet_files(path: str) -> List[str]:
    """The ``.parquet`` files of a split: a file, or every ``*.parquet`` under a directory, sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(f"{path}: no such file or directory")
    files = sorted(
        os.path.join(root, f) for root, _, names in os.walk(path) for f in names if f.endswith(".parquet")
    )
    if not files:
        raise DataError(f"{path}: empty split, no .parquet files found")
    return files


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _is_int_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _is_label(t: pa.DataType) -> bool:
    return _is_number(t) or pa.types.is_boolean(t)


def expected_types(schema: DataSchema, with_ground_truth: bool) -> Dict[str, Tuple[str, object]]:
    """Column → (description of the expected type, predicate on a pyarrow type)."""
    out: Dict[str, Tuple[str, object]] = {}
    for f in schema.sparse:
        out[f.name] = ("list<integer> (multi-hot sparse)", _is_int_list) if f.multi_hot else (
            "integer (sparse id)", _is_int)
    for c in schema.dense:
        out[c] = ("float or integer (dense)", _is_number)
    out[schema.label] = ("0/1 integer, bool or float (label)", _is_label)
    for c in (schema.group_id, schema.sample_id):
        if c is not None:
            out.setdefault(c, ("integer (id)", _is_int))
    if with_ground_truth and schema.ground_truth:
        out[schema.clean_label] = ("0/1 integer, bool or float (clean label)", _is_label)  # type: ignore[index]
        out[schema.is_noisy] = ("0/1 integer, bool or float (noise flag)", _is_label)  # type: ignore[index]
    return out


def check_file_schema(path: str, schema: DataSchema, with_ground_truth: bool) -> pq.FileMetaData:
    """Open a file's footer and check its columns; raise :class:`DataError` on a mismatch."""
    try:
        meta = pq.read_metadata(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError variants for corrupt files
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from e
    arrow_schema = meta.schema.to_arrow_schema()
    for col, (what, ok) in expected_types(schema, with_ground_truth).items():
        idx = arrow_schema.get_field_index(col)
        if idx < 0:
            raise DataError(f"{path}: missing column {col!r} (expected {what})")
        typ = arrow_schema.field(idx).type
        if not ok(typ):  # type: ignore[operator]
            raise DataError(f"{path}: column {col!r} has type {typ}, expected {what}")
    return meta


class ParquetBatchReader:
    """Iterate one split of a dataset as :class:`Batch` es for one rank (see module docstring).

    Args:
        path: a split directory (every ``*.parquet`` below it) or a single file.
        schema: column roles and table sizes.
        batch_size: rows per batch on this rank.
        rank, world_size: this rank's place in the data-parallel group.
        shuffle: permute the row-group order every epoch (by ``seed`` and the epoch number).
        seed: shuffling seed.
        with_ground_truth: read ``clean_label`` / ``is_noisy`` when the schema names them.
    """

    def __init__(
        self,
        path: str,
        schema: DataSchema,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        with_ground_truth: bool = True,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size}: must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} outside world_size={world_size}")
        self.path, self.schema, self.batch_size = path, schema, batch_size
        self.rank, self.world_size, self.shuffle, self.seed = rank, world_size, shuffle, seed
        self.with_ground_truth = with_ground_truth and schema.ground_truth
        self.columns = schema.columns(with_ground_truth=self.with_ground_truth)
        self.files = list_parquet_files(path)
        self.row_groups: List[RowGroupRef] = []
        for f in self.files:
            meta = check_file_schema(f, schema, self.with_ground_truth)
            for i in range(meta.num_row_groups):
                n = meta.row_group(i).num_rows
                if n:
                    self.row_groups.append(RowGroupRef(f, i, n))
        self.total_rows = sum(g.num_rows for g in self.row_groups)
        if self.total_rows == 0:
            raise DataError(f"{path}: empty split, {len(self.files)} file(s) hold no rows")
        self.epoch = 0
        self.oov_hashed = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return steps_per_epoch(self.total_rows, self.world_size, self.batch_size)

    def epoch_plan(self, epoch: Optional[int] = None) -> EpochPlan:
        epoch = self.epoch if epoch is None else epoch
        groups = list(self.row_groups)
        if self.shuffle:
            order = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(len(groups))
            groups = [groups[i] for i in order]
        lo = self.rank * self.total_rows // self.world_size
        hi = (self.rank + 1) * self.total_rows // self.world_size
        slices, pos = [], 0
        for g in groups:
            start, stop = max(lo - pos, 0), min(hi - pos, g.num_rows)
            if start < stop:
                slices.append(Slice(g, start, stop))
            pos += g.num_rows
            if pos >= hi:
                break
        return EpochPlan(self.rank, self.world_size, self.total_rows, hi - lo, len(self), self.batch_size, slices)

    def _read_slice(self, s: Slice, files: Dict[str, pq.ParquetFile]) -> pa.Table:
        g = s.group
        try:
            pf = files.get(g.path)
            if pf is None:
                pf = files[g.path] = pq.ParquetFile(g.path)
            table = pf.read_row_group(g.index, columns=self.columns)
        except Exception as e:
            raise DataError(f"{g.path}: row group {g.index} could not be read ({type(e).__name__}: {e})") from e
        table = table.slice(s.start, s.stop - s.start)
        self._check(table, g)
        return table

    def _check(self, table: pa.Table, g: RowGroupRef) -> None:
        where = f"{g.path}: row group {g.index}"
        must_be_whole = [f.name for f in self.schema.sparse] + [self.schema.label] + [
            c for c in (self.schema.group_id, self.schema.sample_id) if c is not None]
        for c in must_be_whole:
            if table.column(c).null_count:
                raise DataError(f"{where}: column {c!r} has {table.column(c).null_count} null value(s)")
        for c in self._label_columns():
            v = table.column(c).to_numpy(zero_copy_only=False)
            bad = (v != 0) & (v != 1)
            if bad.any():
                raise DataError(f"{where}: column {c!r} has value {v[bad][0].item()!r}; labels must be 0 or 1")
        for c in self.schema.dense:
            col = table.column(c)
            v = col.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            if col.null_count or not np.isfinite(v).all():
                raise DataError(f"{where}: column {c!r} has null, NaN or infinite value(s)")

    def _label_columns(self) -> List[str]:
        cols = [self.schema.label]
        if self.with_ground_truth:
            cols += [self.schema.clean_label, self.schema.is_noisy]  # type: ignore[list-item]
        return cols

    def __iter__(self) -> Iterator[Batch]:
        plan = self.epoch_plan()
        files: Dict[str, pq.ParquetFile] = {}
        pending: List[Tuple[pa.Table, RowGroupRef]] = []
        pending_rows = 0
        emitted = 0
        for s in plan.slices:
            pending.append((self._read_slice(s, files), s.group))
            pending_rows += s.stop - s.start
            while pending_rows >= self.batch_size:
                pending, pending_rows, out = self._take(pending, pending_rows, self.batch_size)
                emitted += 1
                yield out
        while emitted < plan.steps:  # the short (or empty) end of this rank's share
            pending, pending_rows, out = self._take(pending, pending_rows, min(pending_rows, self.batch_size))
            emitted += 1
            yield out
        assert pending_rows == 0, "reader bug: rows left after the last step"

    def _take(
        self, pending: List[Tuple[pa.Table, RowGroupRef]], pending_rows: int, n: int
    ) -> Tuple[List[Tuple[pa.Table, RowGroupRef]], int, Batch]:
        parts, need, rest = [], n, []
        for t, g in pending:
            if need >= t.num_rows:
                parts.append((t, g))
                need -= t.num_rows
            elif need > 0:
                parts.append((t.slice(0, need), g))
                rest.append((t.slice(need), g))
                need = 0
            else:
                rest.append((t, g))
        return rest, pending_rows - n, self._to_batch([p for p in parts], n)

    def _to_batch(self, parts: List[Tuple[pa.Table, RowGroupRef]], n: int) -> Batch:
        if parts:
            table = parts[0][0] if len(parts) == 1 else pa.concat_tables([t for t, _ in parts])
        else:
            table = self._empty_table()
        return table_to_batch(table, self.schema, self.with_ground_truth, self._hash_or_check, parts)

    def _empty_table(self) -> pa.Table:
        f = pq.ParquetFile(self.files[0])
        return f.schema_arrow.empty_table().select(self.columns)

    def _hash_or_check(self, name: str, values: np.ndarray, num_embeddings: int, where: str) -> np.ndarray:
        if values.size == 0:
            return values
        lo, hi = int(values.min()), int(values.max())
        if lo >= 0 and hi < num_embeddings:
            return values
        if self.schema.oov_policy == "hash":
            self.oov_hashed += int(((values < 0) | (values >= num_embeddings)).sum())
            return np.mod(values, num_embeddings)
        bad = lo if lo < 0 else hi
        raise DataError(
            f"{where}: column {name!r} has id {bad} outside the table [0, {num_embeddings}) "
            "(set the schema's oov_policy to 'hash' to hash such ids into the table)"
        )


def steps_per_epoch(total_rows: int, world_size: int, batch_size: int) -> int:
    """Steps every rank takes per epoch: the largest rank share, in batches, rounded up."""
    return math.ceil(math.ceil(total_rows / world_size) / batch_size)


def _np(col: pa.ChunkedArray, dtype: np.dtype) -> np.ndarray:
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return arr.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def table_to_batch(
    table: pa.Table,
    schema: DataSchema,
    with_ground_truth: bool,
    check_ids,  # type: ignore[no-untyped-def]
    parts: Sequence[Tuple[pa.Table, RowGroupRef]] = (),
) -> Batch:
    """Convert an Arrow table (already validated) to a :class:`Batch`."""
    n = table.num_rows
    where = ", ".join(sorted({f"{g.path}: row group {g.index}" for _, g in parts})) or "batch"
    values: List[np.ndarray] = []
    lengths: List[np.ndarray] = []
    for f in schema.sparse:
        col = table.column(f.name)
        if f.multi_hot:
            arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
            lens = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int32)
            vals = arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        else:
            vals = _np(col, np.int64)
            lens = np.ones(n, dtype=np.int32)
        values.append(check_ids(f.name, vals, f.num_embeddings, where))
        lengths.append(lens)
    kjt = KeyedJaggedTensor(
        keys=schema.sparse_names,
        values=torch.from_numpy(np.concatenate(values) if values else np.zeros(0, np.int64)),
        lengths=torch.from_numpy(np.concatenate(lengths) if lengths else np.zeros(0, np.int32)),
        stride=n,
    )
    if schema.dense:
        dense = np.stack([_np(table.column(c), np.float32) for c in schema.dense], axis=1)
    else:
        dense = np.zeros((n, 0), dtype=np.float32)
    opt = lambda c, dt: None if c is None else torch.from_numpy(_np(table.column(c), dt))  # noqa: E731
    return Batch(
        dense_features=torch.from_numpy(np.ascontiguousarray(dense)),
        sparse_features=kjt,
        labels=torch.from_numpy(_np(table.column(schema.label), np.float32)),
        sample_ids=opt(schema.sample_id, np.int64),
        group_ids=opt(schema.group_id, np.int64),
        clean_labels=opt(schema.clean_label, np.float32) if with_ground_truth else None,
        is_noisy=opt(schema.is_noisy, np.float32) if with_ground_truth else None,
    )

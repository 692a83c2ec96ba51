"""Streaming Parquet → :class:`Batch` reader, sharded over ranks, with exact row accounting.

**Sharding.** The split's row groups (over all files, sorted by path, permuted per epoch by ``seed`` and the
epoch number when ``shuffle``) form one global sequence of ``N`` rows. Rank ``r`` of ``W`` reads the
contiguous range ``[r·N//W, (r+1)·N//W)`` of that sequence: every row is read exactly once per epoch, shares
differ by at most one row, a few large files still spread over many ranks, and only the row groups
overlapping a rank's range are decoded (at most two of them partly).

**Equal steps.** Collectives (embedding all-to-all, the denoisers' global statistics) need every rank to take
the same number of steps. Every rank yields ``steps = ceil(ceil(N/W) / batch_size)`` batches per epoch: full
batches, then, on a rank whose share is not a multiple of the batch size, one short batch, then empty batches
up to ``steps``. Nothing is dropped or duplicated; :meth:`ParquetBatchReader.epoch_plan` says in advance
what each rank reads and :meth:`ParquetBatchReader.epoch_report` what it did read.

**Shuffling.** Row-group order per epoch (above), plus a bounded in-memory shuffle buffer of
``shuffle_buffer`` rows (:mod:`.shuffle`); both deterministic for ``(seed, epoch, rank, world_size)``.

**Prefetch.** With ``prefetch > 0`` a decode thread and a batch thread (:mod:`.prefetch`) keep up to
``prefetch`` batches ready; pyarrow decodes columns in parallel on its own thread pool. Batches are
zero-copy views of Arrow buffers where types allow (:mod:`.block`) and are written straight into pinned
memory when ``pin_memory`` (CUDA training).

**Memory** is bounded by ``block_rows`` (the decode unit, at most one row group), the shuffle buffer and the
prefetch depths, never by the split's size.

**Bad input** raises :class:`DataError` naming the file, row group, column and first bad row (see
:mod:`.checks` and :mod:`.block`). Files with zero rows are allowed and listed in the report.

Example::

    schema = DataSchema.load("data/small")
    reader = ParquetBatchReader("data/small/train", schema, batch_size=1024, rank=0, world_size=2,
                                shuffle=True, shuffle_buffer=65536, seed=0)
    for epoch in range(2):
        reader.set_epoch(epoch)
        for batch in reader:
            ...  # Batch(dense_features [B, n_dense], sparse_features KJT, labels [B], ...)
        print(reader.epoch_report())  # rows read, steps, short/empty batches, hashed ids, imputed values
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import torch

from denoisrec.trainer.data.assemble import Part, assemble
from denoisrec.trainer.data.batch import Batch
from denoisrec.trainer.data.block import Block, Counters, Layout, Where, decode
from denoisrec.trainer.data.checks import diagnose_row_group, oneline, schema_problems
from denoisrec.trainer.data.fs import DataPath, open_parquet
from denoisrec.trainer.data.prefetch import Background
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.data.shuffle import Batcher
from denoisrec.trainer.data.window import BufferPool, Gather, WindowBatcher, assemble_gather
from denoisrec.trainer.data.workers import ordered_map
from denoisrec.trainer.errors import DataError

Recipe = Union[List[Part], Gather]

# Rows per Arrow record batch read from a row group: large enough that pyarrow decodes at full speed.
ARROW_BATCH_ROWS = 1 << 17
# Row groups pyarrow reads and decodes ahead of the one being consumed.
READAHEAD_ROW_GROUPS = 1

__all__ = [
    "DataError",
    "EpochPlan",
    "EpochReport",
    "ParquetBatchReader",
    "RowGroupRef",
    "Slice",
    "counted",
    "steps_per_epoch",
]


@dataclass(frozen=True)
class RowGroupRef:
    """One Parquet row group: its file, index in that file, row count and first row within the file."""

    path: str
    index: int
    num_rows: int
    file_row: int = 0  # row of the file at which this row group starts


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
    def full_batches(self) -> int:
        return self.rank_rows // self.batch_size

    @property
    def short_batches(self) -> int:
        return 1 if self.rank_rows % self.batch_size else 0

    @property
    def empty_batches(self) -> int:
        return self.steps - self.full_batches - self.short_batches


@dataclass
class EpochReport:
    """What one rank read in one epoch (filled as batches are handed to the consumer).

    ``complete`` is True when the rank read its whole planned share (``rows_read == planned_rows``).
    ``oov_hashed`` / ``nan_imputed`` count repaired values per column in the rows decoded this epoch.
    ``rows_skipped`` / ``batches_skipped``: rows decoded but not trained on because a resumed run skipped
    what an earlier launch had already trained (the trainer moves them out of ``rows_read``); they count
    towards ``complete``.
    """

    split: str
    epoch: int
    rank: int
    world_size: int
    total_rows: int
    planned_rows: int
    steps: int
    full_batches: int
    short_batches: int
    empty_batches: int
    rows_read: int = 0
    batches_read: int = 0
    oov_hashed: Dict[str, int] = field(default_factory=dict)
    nan_imputed: Dict[str, int] = field(default_factory=dict)
    empty_files: List[str] = field(default_factory=list)
    rows_skipped: int = 0
    batches_skipped: int = 0

    @property
    def complete(self) -> bool:
        return (
            self.rows_read + self.rows_skipped == self.planned_rows
            and self.batches_read + self.batches_skipped == self.steps
        )

    def mark_skipped(self, batches: int, rows: int) -> None:
        """Move ``batches`` / ``rows`` consumed only to reach a resume position out of ``rows_read``."""
        self.rows_read -= rows
        self.batches_read -= batches
        self.rows_skipped += rows
        self.batches_skipped += batches

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["complete"] = self.complete
        return d


def steps_per_epoch(total_rows: int, world_size: int, batch_size: int) -> int:
    """Steps every rank takes per epoch: the largest rank share, in batches, rounded up."""
    return math.ceil(math.ceil(total_rows / world_size) / batch_size)


class ParquetBatchReader:
    """Iterate one split of a dataset as :class:`Batch` es for one rank (see the module docstring).

    Args:
        path: a split directory (every ``*.parquet`` below it), a single file, or a URI (``s3://``,
            ``memory://``, ...).
        schema: column roles, table sizes and the OOV / NaN policies.
        batch_size: rows per batch on this rank.
        rank, world_size: this rank's place in the data-parallel group.
        shuffle: permute the row-group order every epoch (by ``seed`` and the epoch number).
        seed: shuffling seed (row-group order and shuffle buffer).
        with_ground_truth: read ``clean_label`` / ``is_noisy`` when the schema names them.
        shuffle_buffer: rows in the shuffle buffer (0: none). Only used with ``shuffle``.
        prefetch: batches kept ready by background threads (0: decode in the consumer's thread).
        workers: threads that assemble batches (and build the shuffle window) in parallel, per rank; the
            batches do not depend on it. Used with ``prefetch > 0``.
        pin_memory: write batches into pinned memory (for CUDA; needs CUDA).
        block_rows: rows per decoded block (bounds memory even for huge row groups; blocks stay small
            enough that the allocator recycles their memory).
        filesystem: a ``pyarrow.fs`` or ``fsspec`` filesystem ``path`` lives on.
        split: the split's name, for reports.
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
        shuffle_buffer: int = 0,
        prefetch: int = 2,
        workers: int = 1,
        pin_memory: bool = False,
        block_rows: int = 1 << 16,
        filesystem: Any = None,
        split: Optional[str] = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size}: must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} outside world_size={world_size}")
        if shuffle_buffer < 0 or prefetch < 0 or block_rows <= 0:
            raise ValueError(
                f"shuffle_buffer={shuffle_buffer}, prefetch={prefetch} must be >= 0 and block_rows={block_rows} > 0"
            )
        if workers < 1:
            raise ValueError(f"workers={workers}: must be >= 1")
        if pin_memory and not torch.cuda.is_available():
            raise ValueError("pin_memory=True needs CUDA (pinned host memory is for host-to-GPU copies)")
        self.dp = DataPath.resolve(path, filesystem)
        self.path = str(self.dp)
        self.split = split or self.dp.path.rstrip("/").rsplit("/", 1)[-1]
        self.schema, self.batch_size = schema, batch_size
        self.rank, self.world_size, self.shuffle, self.seed = rank, world_size, shuffle, seed
        self.shuffle_buffer = shuffle_buffer if shuffle else 0
        self.prefetch, self.pin_memory, self.block_rows = prefetch, pin_memory, block_rows
        self.workers = workers if prefetch else 1
        # every checked id is below its table's size: int32 holds them all when every table fits
        self._window_pool = BufferPool()  # shuffle-window arrays, reused across windows and epochs
        self._narrow_ids = max(f.num_embeddings for f in schema.sparse) <= 2**31 - 1 if schema.sparse else True
        self.layout = Layout(schema, with_ground_truth)
        self.with_ground_truth = self.layout.with_ground_truth
        self.columns = self.layout.columns
        listing = self.dp.split_listing()  # the listing `validate` uses (trainer/data/listing.py)
        listing.raise_problems()
        if not listing.files:
            raise DataError(f"{self.dp}: empty split, no .parquet files found")
        self.files = [f for f, _ in listing.files]
        self.file_bytes = dict(listing.files)  # the split's fingerprint in checkpoints (trainer/checkpoint/identity.py)
        self.ignored = [self.dp.display(p) for p in listing.ignored]  # hidden _/. paths, skipped
        self.row_groups: List[RowGroupRef] = []
        self.empty_files: List[str] = []
        self._schemas: List[pa.Schema] = []  # the distinct physical schemas (usually one)
        self._schema_of: Dict[str, int] = {}
        for f in self.files:
            pf = open_parquet(self.dp, f)
            name = self.dp.display(f)
            meta, arrow_schema, row = pf.metadata, pf.schema_arrow, 0
            pf.close()
            problems = schema_problems(arrow_schema, schema, self.with_ground_truth)
            if problems:
                raise DataError(f"{name}: " + "; ".join(problems))
            same = [k for k, known in enumerate(self._schemas) if known.equals(arrow_schema)]
            if not same:
                self._schemas.append(arrow_schema)
            self._schema_of[f] = same[0] if same else len(self._schemas) - 1
            if meta.num_rows == 0:
                self.empty_files.append(name)
            for i in range(meta.num_row_groups):
                n = meta.row_group(i).num_rows
                if n:
                    self.row_groups.append(RowGroupRef(f, i, n, row))
                row += n
        self.total_rows = sum(g.num_rows for g in self.row_groups)
        if self.total_rows == 0:
            raise DataError(f"{self.path}: empty split, {len(self.files)} file(s) hold no rows")
        self.epoch = 0
        self.counters = Counters()
        self._report: Optional[EpochReport] = None

    # ------------------------------------------------------------------------------------ planning
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

    # ------------------------------------------------------------------------------------ accounting
    @property
    def rows_read(self) -> int:
        """Rows handed to the consumer so far in the current (or last) epoch."""
        return self._report.rows_read if self._report is not None else 0

    @property
    def oov_hashed(self) -> int:
        """Ids hashed into their table since the reader was created (all columns)."""
        return sum(self.counters.snapshot()["oov_hashed"].values())

    def epoch_report(self) -> EpochReport:
        """This rank's report of the current (or last) epoch; see :class:`EpochReport`."""
        if self._report is None:
            plan = self.epoch_plan()
            return self._new_report(plan)
        return self._report

    def _new_report(self, plan: EpochPlan, epoch: Optional[int] = None) -> EpochReport:
        epoch = self.epoch if epoch is None else epoch
        return EpochReport(
            self.split,
            epoch,
            self.rank,
            self.world_size,
            self.total_rows,
            plan.rank_rows,
            plan.steps,
            plan.full_batches,
            plan.short_batches,
            plan.empty_batches,
            empty_files=list(self.empty_files),
        )

    # ------------------------------------------------------------------------------------ reading
    def _blocks(self, plan: EpochPlan, counters: Counters) -> Iterator[Block]:
        """Decode this rank's slices, in plan order, as checked blocks of at most ``block_rows`` rows.

        One ordered pyarrow dataset scan per run of slices whose files share a physical schema: pyarrow
        reads ahead ``READAHEAD_ROW_GROUPS`` row groups and decodes columns on its CPU pool.
        """
        slices, i = plan.slices, 0
        while i < len(slices):
            j = i + 1
            first = self._schema_of[slices[i].group.path]
            while j < len(slices) and self._schema_of[slices[j].group.path] == first:
                j += 1
            yield from self._scan(slices[i:j], self._schemas[first], counters)
            i = j

    def _scan(self, slices: List[Slice], physical: pa.Schema, counters: Counters) -> Iterator[Block]:
        fmt = ds.ParquetFileFormat()
        frags = [fmt.make_fragment(s.group.path, self.dp.fs, row_groups=[s.group.index]) for s in slices]
        scanner = ds.FileSystemDataset(frags, physical, fmt, self.dp.fs).scanner(
            columns=self.columns,
            batch_size=max(self.block_rows, ARROW_BATCH_ROWS),
            use_threads=True,
            fragment_readahead=READAHEAD_ROW_GROUPS,
            batch_readahead=READAHEAD_ROW_GROUPS * 2,
        )
        it = scanner.scan_batches()
        k, pos = 0, 0  # the slice being read, and the row of its row group that the next batch starts at
        while k < len(slices):
            g = slices[k].group
            if pos == g.num_rows:
                k, pos = k + 1, 0
                continue
            try:
                rb = next(it).record_batch
            except StopIteration:
                raise DataError(
                    f"{self.dp.display(g.path)}: row group {g.index} ended after {pos:,} of "
                    f"{g.num_rows:,} rows (the file changed since the reader opened the split?)"
                ) from None
            except Exception as e:  # noqa: BLE001 - corrupt pages, bad compression, a vanished file, ...
                # The readahead scan fails as soon as any row group ahead fails: re-read from here one row
                # group at a time, so every row before the bad one is delivered and the error names it.
                yield from self._careful(slices[k:], pos, counters)
                raise DataError(
                    f"{self.dp.display(g.path)}: reading failed ({type(e).__name__}: {oneline(e)}), "
                    "but every row group read fine on its own; a transient filesystem error?"
                ) from e
            yield from self._cut(slices[k], rb, pos, counters)
            pos += rb.num_rows

    def _cut(self, s: Slice, rb: pa.RecordBatch, pos: int, counters: Counters) -> Iterator[Block]:
        """Blocks of at most ``block_rows`` rows of the part of ``rb`` (rows ``pos..`` of the row group) that
        lies in ``s``.
        """
        g, name = s.group, self.dp.display(s.group.path)
        if pos + rb.num_rows > g.num_rows:
            raise DataError(f"{name}: row group {g.index} has more rows than its footer says ({g.num_rows:,})")
        a, b = max(s.start - pos, 0), min(s.stop - pos, rb.num_rows)
        for c in range(a, b, self.block_rows):
            d = min(c + self.block_rows, b)
            part = rb if (c == 0 and d == rb.num_rows) else rb.slice(c, d - c)
            yield decode(part, self.layout, Where(name, g.index, pos + c, g.file_row), counters)

    def _careful(self, slices: List[Slice], pos: int, counters: Counters) -> Iterator[Block]:
        """Read ``slices`` one row group at a time (the first from row ``pos``); raise :class:`DataError`
        naming the first row group that cannot be decoded and its failing columns.
        """
        for s in slices:
            g, name = s.group, self.dp.display(s.group.path)
            pf = open_parquet(self.dp, g.path)
            try:
                at = 0
                try:
                    for rb in pf.iter_batches(batch_size=self.block_rows, row_groups=[g.index], columns=self.columns):
                        if at + rb.num_rows > pos:
                            skip = max(pos - at, 0)
                            yield from self._cut(s, rb.slice(skip), at + skip, counters)
                        at += rb.num_rows
                except DataError:
                    raise
                except Exception as e:  # noqa: BLE001 - this is the row group that fails
                    raise DataError(
                        f"{name}: row group {g.index} could not be read ({type(e).__name__}: "
                        f"{oneline(e)}){diagnose_row_group(pf, g.index, self.columns)}"
                    ) from e
            finally:
                pf.close()
            pos = 0

    def _recipes(self, plan: EpochPlan, epoch: int, counters: Counters) -> Iterator[Recipe]:
        """The batches of this rank's epoch as recipes (lists of ``(block, rows)`` parts, or a :class:`Gather`
        of shuffle-window rows), padded with empty lists to ``plan.steps`` (decode and the shuffle buffer:
        the decode thread's work).
        """
        rng = np.random.Generator(np.random.PCG64([self.seed, plan.rank, plan.world_size, epoch, 1]))
        batcher: Any = (
            WindowBatcher(
                self.batch_size,
                self.shuffle_buffer,
                rng,
                self._narrow_ids,
                self._window_pool,
                {role: torch.empty(0, dtype=dt).numpy().dtype for role, (_, dt) in self.layout.one_d.items()},
            )
            if self.shuffle_buffer
            else Batcher(self.batch_size, 0, rng)
        )
        emitted = 0
        for block in self._blocks(plan, counters):
            for recipe in batcher.feed(block):
                emitted += 1
                yield recipe
        for recipe in batcher.finish():
            emitted += 1
            yield recipe
        if emitted > plan.steps:
            raise AssertionError(f"reader bug: {emitted} batches for {plan.steps} steps")
        for _ in range(plan.steps - emitted):  # equal steps: empty batches after this rank's share
            yield []

    def _assemble(self, recipe: Recipe) -> Batch:
        if isinstance(recipe, Gather):
            return assemble_gather(recipe, self.layout, self.pin_memory)
        return assemble(recipe, self.layout, self.pin_memory)

    def _batches(self, plan: EpochPlan, epoch: int, counters: Counters) -> Iterator[Batch]:
        """Assemble the recipes into batches (the batch thread's work, on ``workers`` threads in order)."""
        recipes: Iterator[Recipe] = self._recipes(plan, epoch, counters)
        if self.prefetch:
            recipes = Background(recipes, depth=2 * self.workers, name="decode")
        try:
            if self.workers > 1:
                yield from ordered_map(self._assemble, recipes, self.workers, name="assemble")
            else:
                for recipe in recipes:
                    yield self._assemble(recipe)
        finally:
            close = getattr(recipes, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[Batch]:
        """The current epoch's batches (:meth:`set_epoch`); :meth:`epoch_report` counts what was handed out."""
        batches, report = self.open_epoch(self.epoch)
        self._report = report
        return counted(batches, report)

    def open_epoch(self, epoch: int) -> Tuple[Iterator[Batch], EpochReport]:
        """Epoch ``epoch``'s batches, independent of :meth:`set_epoch` and of any other epoch being read, and
        its report. The caller counts what it consumes into the report (:func:`counted`); the repaired-value
        counts are filled when the iterator ends or is closed. Nothing is read before the first ``next``.
        """
        plan = self.epoch_plan(epoch)
        report = self._new_report(plan, epoch)
        return self._run(plan, epoch, report), report

    def _run(self, plan: EpochPlan, epoch: int, report: EpochReport) -> Iterator[Batch]:
        counters = Counters()
        source: Iterator[Batch] = self._batches(plan, epoch, counters)
        if self.prefetch:
            source = Background(source, depth=self.prefetch, name="batches")
        try:
            yield from source
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
            snap = counters.snapshot()
            report.oov_hashed, report.nan_imputed = snap["oov_hashed"], snap["nan_imputed"]
            for kind, d in snap.items():
                for col, n in d.items():
                    self.counters.add(kind, col, n)


def counted(batches: Iterator[Batch], report: EpochReport) -> Iterator[Batch]:
    """``batches``, counting each one handed out into ``report`` (rows and batches); closing it closes them."""
    try:
        for batch in batches:
            report.rows_read += batch.size
            report.batches_read += 1
            yield batch
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()

"""The shuffle buffer's window laid out for row gathers, and the batches gathered from it.

A :class:`Window` is the rows of a run of decoded :class:`Block` s, concatenated and re-laid so that one
batch is a gather of whole rows:

- the single-valued ids **row-major** ``[n, n_single]`` (one cache miss per row instead of one per value;
  the batch's feature-major KJT values are an in-cache transpose of the gathered rows);
- each multi-hot feature **padded to a fixed width** ``[n, width]`` with its lengths (a row gather, then a
  mask), when the padding is small (:data:`PAD_MAX_WIDTH`, :data:`PAD_MAX_CELLS_PER_VALUE`); a feature with
  long lists keeps its offsets and values;
- the dense matrix (already row-major) and the 1-D columns, concatenated.

:class:`WindowBatcher` is :class:`~.shuffle.Batcher` with a shuffle buffer, yielding :class:`Gather` recipes
(a window and the rows of one batch, in order) instead of permuted copies of the window: the same rows in
the same order for the same generator, so :func:`assemble_gather` builds the batches
:func:`~.shuffle.permute` + :func:`~.assemble.assemble` build, bit for bit, with one gather of every row
instead of a gather of every value and a second copy.

Example::

    batcher = WindowBatcher(batch_size=4, buffer_rows=8, rng=np.random.default_rng(0))
    for block in blocks:
        for recipe in batcher.feed(block):
            batch = assemble_gather(recipe, layout)
    for recipe in batcher.finish():
        ...
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.trainer.data.assemble import alloc_out, make_batch
from denoisrec.trainer.data.batch import Batch
from denoisrec.trainer.data.block import Block, Layout
from denoisrec.trainer.data.shuffle import _list_index

# A multi-hot feature is padded when its longest list in the window is at most this long ...
PAD_MAX_WIDTH = 64
# ... and the padded matrix holds at most this many cells per value (plus one per row).
PAD_MAX_CELLS_PER_VALUE = 4


def _widest(dtypes: Sequence[np.dtype]) -> np.dtype:
    return np.dtype(np.int64) if any(d != np.int32 for d in dtypes) else np.dtype(np.int32)


class Buffers:
    """The arrays of one window, by name, reused by a later window once every batch of this one is built.

    A fresh window-sized array costs a page fault per 4 KiB on its first write (the allocator maps big
    arrays anew each time); reusing the last windows' arrays avoids that. :meth:`get` returns a view of
    ``rows`` rows of a kept array when one is large enough and of the same dtype and row shape.
    """

    def __init__(self, kept: Optional[Dict[str, np.ndarray]] = None) -> None:
        self.kept = kept or {}
        self.used: Dict[str, np.ndarray] = {}

    def get(self, name: str, rows: int, tail: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        a = self.kept.get(name)
        if a is None or a.dtype != dtype or a.shape[1:] != tail or a.shape[0] < rows:
            a = np.empty((max(rows, int(rows * 1.25)),) + tail, dtype=dtype)  # head-room for the next window
        self.used[name] = a
        return a[:rows]


class MultiHot:
    """One multi-hot feature of a window: ``lengths`` ``[n]`` int32 and either ``padded`` ``[n, width]``
    (row ``i`` holds its list in its first ``lengths[i]`` cells) or ``offsets`` ``[n + 1]`` int64 and ``values``.
    """

    def __init__(
        self,
        parts: Sequence[Tuple[np.ndarray, np.ndarray]],
        n: int,
        narrow: bool = False,
        buffers: Optional[Buffers] = None,
        name: str = "multi",
    ) -> None:
        buffers = buffers or Buffers()
        lengths = buffers.get(f"{name}.lengths", n, (), np.dtype(np.int32))
        p = 0
        for off, _ in parts:
            k = len(off) - 1
            np.subtract(off[1:], off[:-1], out=lengths[p : p + k], casting="unsafe")
            p += k
        self.lengths = lengths
        values = [v for _, v in parts]
        dtype = np.dtype(np.int32) if narrow else _widest([v.dtype for v in values])
        total = sum(len(v) for v in values)
        width = int(lengths.max(initial=0))
        self.padded: Optional[np.ndarray] = None
        self.offsets: Optional[np.ndarray] = None
        self.values: Optional[np.ndarray] = None
        if width <= PAD_MAX_WIDTH and n * width <= PAD_MAX_CELLS_PER_VALUE * total + n:
            padded = buffers.get(f"{name}.padded", n, (width,), dtype)  # cells past a list are never read
            if total:
                padded[np.arange(width, dtype=np.int32) < lengths[:, None]] = np.concatenate(values)
            self.padded = padded
        else:
            self.offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(lengths, out=self.offsets[1:])
            self.values = values[0].astype(dtype, copy=False) if len(values) == 1 else np.concatenate(values)

    def take(self, index: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(lengths, values)`` of the rows ``index``, in order (values in their stored dtype)."""
        lens = self.lengths[index]
        if self.padded is not None:
            rows = np.take(self.padded, index, axis=0)
            return lens, rows[np.arange(rows.shape[1], dtype=np.int32) < lens[:, None]]
        assert self.offsets is not None and self.values is not None
        starts = self.offsets[index]
        total = int(lens.sum(dtype=np.int64))
        return lens, np.take(self.values, _list_index(starts, lens.astype(np.int64), total))


def _concat(buffers: Buffers, name: str, arrays: List[np.ndarray]) -> np.ndarray:
    n = sum(len(a) for a in arrays)
    out = buffers.get(name, n, arrays[0].shape[1:], _widest_like(arrays))
    p = 0
    for a in arrays:
        out[p : p + len(a)] = a
        p += len(a)
    return out


def _widest_like(arrays: List[np.ndarray]) -> np.dtype:
    return np.result_type(*[a.dtype for a in arrays])


class Window:
    """The rows of ``blocks`` (concatenated, in order), laid out for row gathers (see the module docstring)."""

    def __init__(self, blocks: Sequence[Block], narrow: bool = False, buffers: Optional[Buffers] = None) -> None:
        """Args:
        blocks: the window's decoded blocks, in order (checked: every id inside its table).
        narrow: store ids as int32 (every table has at most 2**31 - 1 rows, so every checked id fits).
        buffers: arrays of an earlier window to reuse (:class:`Buffers`).
        """
        self.buffers = buffers = buffers or Buffers()
        self.n = n = sum(b.n for b in blocks)
        n_single = blocks[0].ids.shape[0]
        dtype = np.dtype(np.int32) if narrow else _widest([b.ids.dtype for b in blocks])
        self.ids = buffers.get("ids", n, (n_single,), dtype)  # row-major
        p = 0
        for b in blocks:
            np.copyto(self.ids[p : p + b.n], b.ids.T, casting="unsafe")  # the one transposing copy
            p += b.n
        self.dense = _concat(buffers, "dense", [b.dense for b in blocks])
        self.one_d: Dict[str, Optional[np.ndarray]] = {}
        for key, v in blocks[0].one_d.items():
            cols = [b.one_d[key] for b in blocks]
            self.one_d[key] = None if v is None else _concat(buffers, key, cols)  # type: ignore[arg-type]
        self.multi = [
            MultiHot([b.multi[m] for b in blocks], n, narrow, buffers, f"multi{m}") for m in range(len(blocks[0].multi))
        ]
        self._lock = threading.Lock()
        self._left = 0
        self._on_done: Optional[Callable[[Buffers], None]] = None

    def expect(self, batches: int, on_done: Callable[[Buffers], None]) -> None:
        """``batches`` gathers will be built from this window; ``on_done(buffers)`` after the last one."""
        self._left, self._on_done = batches, on_done
        if not batches:
            on_done(self.buffers)

    def built_one(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last and self._on_done is not None:
            self._on_done(self.buffers)

    def block(self, index: np.ndarray) -> Block:
        """The rows ``index`` as an independent, feature-major :class:`Block` (rows carried to the next window)."""
        multi = []
        for mh in self.multi:
            lens, vals = mh.take(index)
            off = np.zeros(len(index) + 1, dtype=np.int64)
            np.cumsum(lens, out=off[1:])
            multi.append((off, vals))
        return Block(
            n=len(index),
            ids=np.ascontiguousarray(np.take(self.ids, index, axis=0).T),
            multi=multi,
            dense=np.take(self.dense, index, axis=0),
            one_d={k: None if v is None else np.take(v, index) for k, v in self.one_d.items()},
        )


@dataclass
class Gather:
    """A batch recipe: the rows ``index`` (int64, in batch order) of ``window``."""

    window: Window
    index: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.index)


class WindowBatcher:
    """:class:`~.shuffle.Batcher` with a shuffle buffer, yielding :class:`Gather` recipes (module docstring).

    Args:
        batch_size: rows per batch.
        buffer_rows: shuffle-buffer size in rows (> 0).
        rng: the generator that permutes each window.
    """

    def __init__(self, batch_size: int, buffer_rows: int, rng: np.random.Generator, narrow: bool = False) -> None:
        if buffer_rows <= 0:
            raise ValueError(f"shuffle_buffer={buffer_rows}: a window needs > 0 rows")
        self.batch_size, self.buffer_rows, self.rng, self.narrow = batch_size, buffer_rows, rng, narrow
        self.blocks: List[Block] = []
        self.window_rows = 0
        self._free: "queue.SimpleQueue[Buffers]" = queue.SimpleQueue()  # windows whose batches are built

    def _buffers(self) -> Buffers:
        try:
            return Buffers(self._free.get_nowait().used)
        except queue.Empty:
            return Buffers()

    def _drain(self, final: bool) -> Iterator[Gather]:
        blocks, self.blocks, self.window_rows = self.blocks, [], 0
        n = sum(b.n for b in blocks)
        if not n:
            return
        perm = self.rng.permutation(n)  # the same draw as Batcher's, so the same batches
        window = Window(blocks, self.narrow, self._buffers())
        del blocks
        full = n // self.batch_size * self.batch_size
        if full < n and not final:  # fewer than a batch left: copied out, they open the next window
            carried = window.block(perm[full:])
            self.blocks, self.window_rows = [carried], carried.n
        cuts = list(range(0, full, self.batch_size)) + ([full] if final and full < n else [])
        window.expect(len(cuts), self._free.put)
        for a in cuts:
            yield Gather(window, perm[a : a + self.batch_size])

    def feed(self, block: Block) -> Iterator[Gather]:
        """Add a block; yield the batches that are complete."""
        if block.n == 0:
            return
        self.blocks.append(block)
        self.window_rows += block.n
        if self.window_rows >= self.buffer_rows:
            yield from self._drain(final=False)

    def finish(self) -> Iterator[Gather]:
        """Yield the remaining rows: full batches, then one shorter batch if rows remain."""
        yield from self._drain(final=True)


def assemble_gather(recipe: Gather, layout: Layout, pin: bool = False) -> Batch:
    """The :class:`Batch` of ``recipe``'s rows: the batch :func:`~.assemble.assemble` makes of the same rows.

    Every output is a fresh buffer (pinned with ``pin``), written once: the single-valued ids gathered as
    whole rows and transposed into the int64 KJT values in cache, multi-hot lists gathered as padded rows.
    """
    w, index = recipe.window, recipe.index
    n, nkeys = len(index), len(layout.keys)
    lengths_t = alloc_out((nkeys * n,), torch.int32, pin)
    lengths = lengths_t.numpy()
    multi = [mh.take(index) for mh in w.multi]
    total = n * len(layout.single) + sum(len(v) for _, v in multi)
    values_t = alloc_out((total,), torch.int64, pin)
    values = values_t.numpy()
    rows = np.take(w.ids, index, axis=0) if layout.single else None  # [n, n_single]
    pos, key = 0, 0
    for kind, a, b in layout.segments:
        if kind == "single":
            assert rows is not None
            values[pos : pos + (b - a) * n].reshape(b - a, n)[:] = rows[:, a:b].T
            lengths[key * n : (key + b - a) * n] = 1
            pos, key = pos + (b - a) * n, key + b - a
            continue
        lens, vals = multi[a]
        values[pos : pos + len(vals)] = vals
        lengths[key * n : (key + 1) * n] = lens
        pos, key = pos + len(vals), key + 1
    assert pos == total, "reader bug: KJT values not filled"
    kjt = KeyedJaggedTensor(keys=layout.keys, values=values_t, lengths=lengths_t, stride=n)
    dense = alloc_out((n, len(layout.schema.dense)), torch.float32, pin)
    np.take(w.dense, index, axis=0, out=dense.numpy(), mode="clip")
    one: Dict[str, Optional[torch.Tensor]] = {}
    for role, (col, dt) in layout.one_d.items():
        src = w.one_d.get(role)
        if col is None or src is None:
            one[role] = None
            continue
        out = alloc_out((n,), dt, pin)
        o = out.numpy()
        if src.dtype == o.dtype:
            np.take(src, index, out=o, mode="clip")
        else:
            o[:] = src[index]
        one[role] = out
    w.built_one()  # nothing of the window is referenced by the batch: its arrays may be reused
    return make_batch(dense, kjt, one)

"""Cutting a stream of decoded blocks into batches: in order, or through a bounded shuffle buffer.

:class:`Batcher` turns blocks into lists of ``(block, slice)`` parts of exactly ``batch_size`` rows (the
last one shorter). Every row that goes in comes out exactly once.

- ``buffer_rows == 0``: rows leave in the order they came (the reader already permutes the row-group order
  per epoch).
- ``buffer_rows > 0``: a **shuffle buffer**. Blocks fill a window until it holds at least ``buffer_rows``
  rows; the window is permuted uniformly (by the batcher's seeded generator) into new blocks, column by
  column (each column's gather stays in cache), and cut into batches. The fewer than ``batch_size`` rows
  left at the end are copied out and join the next window, so no batch is cut short before the end of the
  epoch and the old window is freed. Memory: about twice ``buffer_rows + one block`` rows while a window is
  permuted. Deterministic for a seed. :func:`permute` is the window's gather.

Example::

    batcher = Batcher(batch_size=4, buffer_rows=8, rng=np.random.default_rng(0))
    for block in blocks:
        for parts in batcher.feed(block):
            batch = assemble(parts, layout)
    for parts in batcher.finish():
        ...
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from denoisrec.trainer.data.assemble import Part
from denoisrec.trainer.data.block import Block


class Batcher:
    """Blocks in, batches (as parts) out; see the module docstring.

    Args:
        batch_size: rows per batch.
        buffer_rows: shuffle-buffer size in rows; 0 keeps the incoming order.
        rng: the generator that permutes each window (required when ``buffer_rows > 0``).
    """

    def __init__(self, batch_size: int, buffer_rows: int = 0, rng: Optional[np.random.Generator] = None) -> None:
        if buffer_rows < 0:
            raise ValueError(f"shuffle_buffer={buffer_rows}: must be >= 0 rows")
        if buffer_rows and rng is None:
            raise ValueError("a shuffle buffer needs a seeded generator")
        self.batch_size, self.buffer_rows, self.rng = batch_size, buffer_rows, rng
        self.pending: List[Part] = []
        self.pending_rows = 0
        self.window: List[Block] = []
        self.window_rows = 0

    def _cut(self) -> Iterator[List[Part]]:
        while self.pending_rows >= self.batch_size:
            need, out, rest = self.batch_size, [], []
            for block, rows in self.pending:
                k = rows.stop - rows.start
                if need == 0:
                    rest.append((block, rows))
                elif k <= need:
                    out.append((block, rows))
                    need -= k
                else:
                    out.append((block, slice(rows.start, rows.start + need)))
                    rest.append((block, slice(rows.start + need, rows.stop)))
                    need = 0
            self.pending, self.pending_rows = rest, self.pending_rows - self.batch_size
            yield out

    def _drain_window(self, final: bool) -> Iterator[List[Part]]:
        blocks, self.window, self.window_rows = self.window, [], 0
        n = sum(b.n for b in blocks)
        if not n:
            return
        chunk = max(b.n for b in blocks)
        mixed = permute(blocks, self.rng.permutation(n), chunk)  # type: ignore[union-attr]
        del blocks
        self.pending = [(b, slice(0, b.n)) for b in mixed]
        self.pending_rows = n
        yield from self._cut()
        if not self.pending_rows:
            return
        if final:
            out, self.pending, self.pending_rows = self.pending, [], 0
            yield out
        else:  # fewer than a batch left: copy them out and let them join the next window
            self.window = [b.copy_rows(r.start, r.stop) for b, r in self.pending]
            self.window_rows = self.pending_rows
            self.pending, self.pending_rows = [], 0

    def feed(self, block: Block) -> Iterator[List[Part]]:
        """Add a block; yield the batches that are complete."""
        if block.n == 0:
            return
        if not self.buffer_rows:
            self.pending.append((block, slice(0, block.n)))
            self.pending_rows += block.n
            yield from self._cut()
            return
        self.window.append(block)
        self.window_rows += block.n
        if self.window_rows >= self.buffer_rows:
            yield from self._drain_window(final=False)

    def finish(self) -> Iterator[List[Part]]:
        """Yield the remaining rows: full batches, then one shorter batch if rows remain."""
        if self.buffer_rows:
            yield from self._drain_window(final=True)
            return
        yield from self._cut()
        if self.pending_rows:
            out, self.pending, self.pending_rows = self.pending, [], 0
            yield out


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
    index = [np.ascontiguousarray(perm[a : a + chunk_rows], dtype=np.int64) for a in range(0, n, chunk_rows)]
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
    return [
        Block(n=k, ids=ids[c], multi=multi[c], dense=dense[c], one_d={key: v[c] for key, v in one_d.items()})
        for c, k in enumerate(sizes)
    ]

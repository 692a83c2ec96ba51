"""Cutting a stream of decoded blocks into batches: in order, or through a bounded shuffle buffer.

:class:`Batcher` turns blocks into lists of ``(block, rows)`` parts of exactly ``batch_size`` rows (the
last one shorter); ``rows`` is a ``slice`` or an ``int64`` index array. Every row that goes in comes out
exactly once.

- ``buffer_rows == 0``: rows leave in the order they came (the reader already permutes the row-group order
  per epoch), as slices of the blocks: no copy here.
- ``buffer_rows > 0``: a **shuffle buffer** that shuffles indices, not values. Blocks fill a window until it
  holds at least ``buffer_rows`` rows; a uniform permutation of the window's rows is drawn from the
  batcher's seeded generator, and each batch is ``batch_size`` consecutive entries of it, sorted and split
  into one index part per block (:func:`split`). :func:`.assemble.assemble` then gathers each column once,
  straight into the batch's buffers; sorted indices walk each block's column forwards, and a block
  (``block_rows``, 65,536 rows by default) is small enough to stay in cache. A batch is a set of rows: which
  rows share a batch is exactly what permuting the window's values and cutting them in order would give.
  The fewer than ``batch_size`` rows left at the end are gathered out and join the next window, so no
  batch is cut short before the end of the epoch and the old window is freed once its batches are
  assembled. Memory: ``buffer_rows`` plus one block, plus the windows that batches not yet assembled still
  name (the prefetch depth). Deterministic for a seed.

Example::

    batcher = Batcher(batch_size=4, buffer_rows=8, rng=np.random.default_rng(0))
    for block in blocks:
        for parts in batcher.feed(block):
            batch = assemble(parts, layout)
    for parts in batcher.finish():
        ...
"""

from __future__ import annotations

from typing import Iterator, List, Optional

import numpy as np

from denoisrec.trainer.data.assemble import Part
from denoisrec.trainer.data.block import Block, concat


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
        bounds = np.cumsum([0] + [b.n for b in blocks])
        perm = self.rng.permutation(n)  # type: ignore[union-attr]
        size = self.batch_size
        full = n - n % size
        for a in range(0, full, size):
            yield split(blocks, bounds, np.sort(perm[a:a + size]))
        if full == n:
            return
        rest = split(blocks, bounds, np.sort(perm[full:]))
        if final:
            yield rest
        else:  # fewer than a batch left: gather them out and let them join the next window
            self.window = [concat([b.take(rows) for b, rows in rest])]  # type: ignore[arg-type]
            self.window_rows = n - full

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


def split(blocks: List[Block], bounds: np.ndarray, index: np.ndarray) -> List[Part]:
    """Sorted indices into the concatenation of ``blocks`` (which start at ``bounds[:-1]``) as one index
    part per block they fall in."""
    cuts = np.searchsorted(index, bounds[1:-1]).tolist() + [len(index)]
    parts: List[Part] = []
    lo = 0
    for j, hi in enumerate(cuts):
        if hi > lo:
            parts.append((blocks[j], index[lo:hi] - bounds[j]))
        lo = hi
    return parts

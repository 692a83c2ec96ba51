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
  permuted. Deterministic for a seed.

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

from denoisrec.trainer.data.block import Block, Part, permute


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

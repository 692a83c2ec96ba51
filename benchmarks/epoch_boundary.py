"""How long training waits for the first batch of the next epoch, with and without the feed's look-ahead.

Reads 2 epochs of ``--data``'s train split through :func:`denoisrec.trainer.data.epochs.epoch_batches` (batch
8,192, the default 262,144-row shuffle buffer, prefetch 4) while a stand-in for the training step holds the
GIL-free part of a step (``time.sleep(--step-ms)``), and records the wait in ``next()`` for every step.
Rounds alternate look-ahead off (0) and on (the default: 8 steps + the buffer in batches), so load from
other jobs hits both alike.
Prints, per setting, the median wait inside epochs and the wait for epoch 1's first batch.

Example::

    python benchmarks/epoch_boundary.py --data data/small --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--step-ms", type=float, default=50.0)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()

    from denoisrec.trainer.data.epochs import default_lookahead, epoch_batches
    from denoisrec.trainer.data.reader import ParquetBatchReader
    from denoisrec.trainer.data.schema import DataSchema

    schema = DataSchema.load(a.data)
    reader = ParquetBatchReader(
        os.path.join(a.data, "train"), schema, a.batch_size, shuffle=True, shuffle_buffer=262_144, seed=0, prefetch=4
    )
    spe = len(reader)
    res: dict = {0: [], default_lookahead(reader): []}
    for _ in range(a.rounds):
        for look in res:
            waits = []
            feed = epoch_batches(reader, 0, 2 * spe, None, lookahead=look)
            while True:
                t = time.perf_counter()
                batch = next(feed, None)
                if batch is None:
                    break
                waits.append(time.perf_counter() - t)
                time.sleep(a.step_ms / 1e3)
            res[look].append((statistics.median(waits[1:spe] + waits[spe + 1 :]), waits[spe]))
    print(f"{a.data}: {spe} steps/epoch of {a.batch_size}, stand-in step {a.step_ms:.0f} ms, {a.rounds} rounds")
    for look, rows in res.items():
        inside = statistics.median(r[0] for r in rows) * 1e3
        boundary = [round(r[1] * 1e3, 1) for r in rows]
        print(
            f"  look-ahead {look} steps: wait inside epochs (median) {inside:.2f} ms; "
            f"wait for epoch 1's first batch {boundary} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

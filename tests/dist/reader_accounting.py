"""Run under torchrun: every rank streams its share of a split for two epochs (row-group shuffle, shuffle
buffer, prefetch threads) with a collective every step, as training does; rank 0 checks that the rows seen,
by id, are exactly the split's rows, once each, that the ranks took the same number of steps, and that the
gathered epoch reports (what the run summary prints) say the same. Prints ``ACCOUNTING OK`` on success.

    torchrun --nproc_per_node 3 tests/dist/reader_accounting.py --data DIR --batch-size 700
"""

import argparse

import numpy as np
import pyarrow.dataset as ds
import torch
import torch.distributed as dist

from denoisrec.trainer.data.accounting import format_rows_read, gather_reports
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    schema = DataSchema.load(a.data)
    reader = ParquetBatchReader(a.data + "/train", schema, a.batch_size, rank, world, shuffle=True,
                                shuffle_buffer=1800, prefetch=2, seed=7, block_rows=400)
    reports, seen = [], []
    for epoch in range(a.epochs):
        reader.set_epoch(epoch)
        ids, steps = [], 0
        for batch in reader:
            ids.append(batch.sample_ids.numpy().copy())
            rows = torch.tensor([batch.size], dtype=torch.int64)
            dist.all_reduce(rows)  # a collective per step: a rank that ran out early would hang here
            steps += 1
        reports.append(reader.epoch_report())
        seen.append((np.concatenate(ids), steps))
    rows_read = gather_reports(reports)
    everyone = [None] * world
    dist.all_gather_object(everyone, seen)
    if rank == 0:
        split_ids = np.sort(ds.dataset(a.data + "/train").to_table(columns=["row_id"]).column("row_id").to_numpy())
        for e in range(a.epochs):
            ids = np.concatenate([everyone[r][e][0] for r in range(world)])
            assert len(ids) == len(split_ids) == reader.total_rows, (e, len(ids), len(split_ids))
            assert np.array_equal(np.sort(ids), split_ids), f"epoch {e}: duplicated or missing rows"
            assert len({everyone[r][e][1] for r in range(world)}) == 1, "ranks took different step counts"
            summary = rows_read[e]
            assert summary["total"] == len(split_ids) and summary["complete"], summary
            assert summary["per_rank"] == [len(everyone[r][e][0]) for r in range(world)], summary
        orders = [np.concatenate([everyone[r][e][0] for r in range(world)]) for e in range(a.epochs)]
        assert a.epochs < 2 or not np.array_equal(orders[0], orders[1]), "the epochs were read in the same order"
        print(format_rows_read(rows_read))
        print(f"ACCOUNTING OK world={world} rows={len(split_ids)}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

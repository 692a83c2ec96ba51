"""On local gloo ranks (``conftest.launch``): every rank streams its share of a split for some epochs
(row-group shuffle, shuffle buffer, prefetch threads) with a collective every step, as training does, and
returns, per epoch, the sample ids it read and its step count, with the gathered epoch reports (what the run
summary prints); the test checks them against the split.

    launch(launched, 3, "DIR", 700, 2)
"""

from typing import Any, Dict, List

import numpy as np
import torch
import torch.distributed as dist

from denoisrec.trainer.data.accounting import format_rows_read, gather_reports
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema


def launched(data: str, batch_size: int, epochs: int) -> Dict[str, Any]:
    """This rank's ids and steps per epoch, the gathered per-epoch report and its printed line."""
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    schema = DataSchema.load(data)
    reader = ParquetBatchReader(
        data + "/train",
        schema,
        batch_size,
        rank,
        world,
        shuffle=True,
        shuffle_buffer=1800,
        prefetch=2,
        seed=7,
        block_rows=400,
    )
    reports, ids, steps = [], [], []
    for epoch in range(epochs):
        reader.set_epoch(epoch)
        got: List[np.ndarray] = []
        n = 0
        for batch in reader:
            got.append(batch.sample_ids.numpy().copy())
            rows = torch.tensor([batch.size], dtype=torch.int64)
            dist.all_reduce(rows)  # a collective per step: a rank that ran out early would hang here
            n += 1
        reports.append(reader.epoch_report())
        ids.append(np.concatenate(got) if got else np.zeros(0, np.int64))
        steps.append(n)
    rows_read = gather_reports(reports)
    dist.destroy_process_group()
    return {
        "ids": ids,
        "steps": steps,
        "rows_read": rows_read,
        "printed": format_rows_read(rows_read),
        "total_rows": reader.total_rows,
    }

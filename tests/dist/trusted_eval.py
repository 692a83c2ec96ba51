"""On local gloo ranks (``conftest.launch``): the selection metrics of a fixed scorer on the real readers of a
dataset with trusted labels, each rank scoring its own uneven share (batches of 97 rows): AUC against the
trusted labels of the valid rows that have one (with observed AUC from the same pass) and observed AUC on
``valid_random``, with DeLong's interval. The test compares them with one process computing them in the test.

    launch(launched, 3, "DIR")
"""

from typing import Any, Dict

import torch
import torch.distributed as dist
from torch import nn

from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.evaluation.scoring import evaluate_targets


def fixed_logits(sample_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A scorer exact in float32 on every rank and in numpy: 97 levels of a hash of the id, plus the label
    (ties within and across ranks; an AUC well above 0.5).
    """
    return ((sample_ids * 2654435761) % 97).to(torch.float32) / 10.0 + 3.0 * labels


class FixedScorer(nn.Module):
    def forward(self, batch: Any) -> Any:
        return torch.zeros(()), (None, fixed_logits(batch.sample_ids, batch.labels), None)


def launched(data: str) -> Dict[str, Any]:
    """This rank's view of the gathered metrics (the same dict on every rank)."""
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    schema = DataSchema.load(data)
    out: Dict[str, Any] = {}
    valid = ParquetBatchReader(data + "/valid", schema, 97, rank, world)
    out["valid"] = evaluate_targets(
        FixedScorer(), valid, torch.device("cpu"), ["observed", "trusted"], interval=["trusted"]
    )
    rnd = ParquetBatchReader(data + "/valid_random", schema, 97, rank, world)
    out["valid_random"] = evaluate_targets(FixedScorer(), rnd, torch.device("cpu"), ["observed"], interval=["observed"])
    dist.destroy_process_group()
    return out

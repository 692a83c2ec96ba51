"""Whether training is input-bound: the step's wait for the next batch (``Stepper.input_wait_seconds``), the
``input_wait`` entry of summary.json and its console line.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Tuple

import torch
from torch import nn

from denoisrec.trainer.loop.steps import Stepper
from denoisrec.trainer.outputs.run_summary import INPUT_BOUND_SHARE, format_input_wait, input_wait


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, batch: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        loss = (self.w * batch).sum()
        return loss, (loss.detach(), batch, None)


class _Batch:
    def __init__(self) -> None:
        self.t = torch.ones(2)

    def to(self, device: torch.device, non_blocking: bool = False) -> torch.Tensor:
        return self.t.to(device, non_blocking=non_blocking)


def _slow(n: int, pause: float) -> Iterator[_Batch]:
    for _ in range(n):
        time.sleep(pause)
        yield _Batch()


def test_the_step_counts_the_time_it_waits_for_batches() -> None:
    model = _Toy()
    stepper = Stepper(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"), pipelined=False)
    assert len(list(stepper.run(_slow(4, 0.05)))) == 4
    assert 0.2 <= stepper.input_wait_seconds < 2.0  # four 50 ms waits, and not the steps themselves
    fast = Stepper(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"), pipelined=False)
    list(fast.run(_slow(4, 0.0)))
    assert fast.input_wait_seconds < 0.2


def test_input_wait_reports_the_slowest_rank_and_says_when_training_is_input_bound() -> None:
    w = input_wait([0.5, 3.0, 1.0], train_seconds=10.0)
    assert w == {"seconds_per_rank": [0.5, 3.0, 1.0], "max_seconds": 3.0, "share_of_train": 0.3, "input_bound": True}
    assert "30.0% of training time" in format_input_wait(w) and "input-bound" in format_input_wait(w)
    calm = input_wait([0.01], train_seconds=10.0)
    assert calm["share_of_train"] < INPUT_BOUND_SHARE and not calm["input_bound"]
    assert "not input-bound" in format_input_wait(calm)
    assert input_wait([], 0.0)["max_seconds"] == 0.0

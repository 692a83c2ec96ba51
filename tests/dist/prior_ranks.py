"""Driver for tests/trainer/denoising/test_prior_valid_auc.py: DeCA(p)'s prior validation AUC (``prior_valid_auc``) on
gloo ranks with uneven shares (rank 1 of 3 scores nothing), against the all-gather-to-every-rank AUC it
replaces, on every rank.

The rows are :mod:`metric_state_ranks`' seeded global rows (logits on a coarse grid: many ties) with a few
logits so large that their float64 sigmoid rounds to 1.0 (ties between positives and
negatives that the AUC must keep).
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

import numpy as np
import torch
import torch.distributed as dist
from metric_state_ranks import FakeBatch, global_rows, share
from torch import nn

from denoisrec.trainer.denoising.prior import prior_valid_auc
from denoisrec.trainer.evaluation.metrics import auc
from denoisrec.trainer.evaluation.scoring import all_gather_varlen


def rows(seed: int) -> Dict[str, np.ndarray]:
    """The global rows, with logits 38, 40 and 45 (sigmoid 1.0 in float64) spread over the ranks' shares."""
    r = global_rows(seed)
    at = [5, 700, 1500, 2600, 4100, 4900]
    r["logits"][at] = [38.0, 40.0, 45.0, 38.0, 45.0, 40.0]
    r["observed"][at] = [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]  # ranked apart by logit, tied by sigmoid
    return r


class Reader:
    """This rank's rows ``[lo, hi)`` in batches of 97 and 256 rows."""

    def __init__(self, r: Dict[str, np.ndarray], lo: int, hi: int) -> None:
        self.r, self.lo, self.hi = r, lo, hi

    def __iter__(self) -> Iterator[FakeBatch]:
        at, i = self.lo, 0
        while at < self.hi:
            b = min(self.hi, at + (97 if i % 2 == 0 else 256))
            t = {k: torch.from_numpy(v[at:b]) for k, v in self.r.items()}
            yield FakeBatch(t["logits"], t["observed"], None, None)
            at, i = b, i + 1


class Prior:
    """The denoiser's side ``prior_valid_auc`` reads: ``prior`` (a module, put in eval mode while scoring)
    and ``prior_logits(batch)``, here the batch's stored logits; records the mode it scored in.
    """

    def __init__(self) -> None:
        self.prior = nn.Linear(1, 1)
        self.modes: List[bool] = []

    def prior_logits(self, batch: FakeBatch) -> torch.Tensor:
        self.modes.append(self.prior.training)
        return batch.logits


def old_prior_valid_auc(d: Prior, reader: Reader) -> float:
    """The AUC this replaces: (logit, label) as float64 all-gathered to every rank, the AUC on every rank."""
    parts = [torch.stack([d.prior_logits(b).double(), b.labels.double()], 1) for b in reader]
    local = torch.cat(parts) if parts else torch.zeros((0, 2), dtype=torch.float64)
    both = all_gather_varlen(local).numpy()
    return float(auc(both[:, 1], 1.0 / (1.0 + np.exp(-both[:, 0]))))


def aucs(seed: int) -> Tuple[float, float, bool, bool]:
    """On one launched rank: (new AUC, old AUC, whether every batch was scored in eval mode, whether the
    prior is back in training mode).
    """
    dist.init_process_group("gloo")
    try:
        lo, hi = share(dist.get_rank(), dist.get_world_size())
        reader, d = Reader(rows(seed), lo, hi), Prior()
        new = prior_valid_auc(d, reader, torch.device("cpu"))
        eval_mode = not any(d.modes)
        old = old_prior_valid_auc(d, reader)
        return new, old, eval_mode, d.prior.training
    finally:
        dist.destroy_process_group()

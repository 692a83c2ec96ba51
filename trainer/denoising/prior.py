"""DeCA(p)'s phase 1: pre-train the prior ``f'`` with BCE to early stopping on the run's selection signal.

The paper (DeCA §3.3, Alg. 2 lines 2-9) trains ``f'`` "until convergence"; one epoch, the old default, left it
under-trained on most data. Here phase 1 runs epoch by epoch (its own shuffle of the training split) and after
each epoch scores ``f'`` alone on the rows the main phase selects on (the resolved ``eval.select_on``,
:func:`selection_source`: the trusted labels of valid, the observed labels of ``valid_random``, or the observed
labels of valid; never the clean ones). It stops after ``patience`` epochs without a better validation AUC, or
at ``max_epochs``, and restores the best epoch's weights (each rank copies its own shards: no collective).
``pretrain_steps=N`` instead runs exactly ``N`` steps without validation (the old behaviour, for tests and
benchmarks).

Each rank keeps the steps it took in the denoiser's ``pretrained_steps`` buffer (checkpointed), so a resumed
run knows where phase 2's DP/DN count starts without running phase 1 again.

Example (inside ``prepare_denoiser``)::

    pretrain_prior(model, d, train_reader, valid_reader, dense_opt, device, log, max_epochs=5, patience=1)
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from denoisrec.trainer.evaluation.metric_state import MetricState, Rows
from denoisrec.trainer.evaluation.metrics import auc
from denoisrec.trainer.loop.steps import Stepper


def local_tensors(module: nn.Module) -> List[torch.Tensor]:
    """This rank's storage of every tensor in ``module``'s state: local shards of sharded tables (views of
    the live weights), local parts of DTensors, plain tensors as they are.
    """
    from torch.distributed._shard.sharded_tensor import ShardedTensor
    from torch.distributed.tensor import DTensor

    out: List[torch.Tensor] = []
    for v in module.state_dict(keep_vars=True).values():
        if isinstance(v, ShardedTensor):
            out.extend(s.tensor for s in v.local_shards())
        elif isinstance(v, DTensor):
            out.append(v.to_local())
        else:
            out.append(v)
    return out


#: the Batch field each selection target reads
_FIELD = {"observed": "labels", "trusted": "trusted_labels"}


def selection_source(readers: Dict[str, Any], mode: str) -> Tuple[Any, str, str]:
    """``(reader, target, words)`` phase 1 early-stops on for the resolved selection ``mode``
    (:class:`~denoisrec.trainer.evaluation.selection.Selection`'s): ``trusted`` -> valid's trusted labels,
    ``random`` -> ``valid_random``'s observed labels, ``observed`` -> valid's observed labels.

    Example: ``selection_source(readers, "trusted")`` is ``(readers["valid"], "trusted", "valid AUC (trusted)")``.
    """
    if mode == "trusted":
        return readers["valid"], "trusted", "valid AUC (trusted)"
    if mode == "random":
        return readers["valid_random"], "observed", "valid_random AUC"
    return readers["valid"], "observed", "valid AUC (observed)"


def _prior_auc(target: str) -> Any:
    """The reduction on rank 0: AUC of the gathered rows' sigmoid scores against ``target``'s labels, on the
    rows that have one (trusted labels are NaN elsewhere).
    """

    def reduce(rows: Rows) -> float:
        y = rows.labels[target]
        has = ~np.isnan(y)
        return float(auc(y[has], 1.0 / (1.0 + np.exp(-rows.logits[has].astype(np.float64)))))

    return reduce


@torch.no_grad()
def prior_valid_auc(d: Any, reader: Any, device: torch.device, target: str = "observed") -> float:
    """AUC of ``f'`` alone on ``reader`` against ``target``'s labels (``observed`` or ``trusted``), over all ranks
    (same on every rank).

    Each rank scores its share into a :class:`~denoisrec.trainer.evaluation.metric_state.MetricState`, which gathers the
    rows to rank 0 only; rank 0 computes the AUC and broadcasts the scalar (as
    :func:`~denoisrec.trainer.evaluation.scoring.evaluate` does).
    """
    was = d.prior.training
    d.prior.eval()
    state = MetricState((target,), device=device)
    try:
        for batch in reader:
            batch = batch.to(device, non_blocking=True)
            state.update(d.prior_logits(batch), {target: getattr(batch, _FIELD[target])})
    finally:
        d.prior.train(was)
    return float(state.compute(_prior_auc(target)))


@torch.no_grad()
def cache_prior_scores(d: Any, batches: Iterable[Any], device: torch.device) -> int:
    """Score every batch with the frozen ``f'`` (eval mode), gather (sample id, logit) from all ranks and
    hand them to ``d.set_prior_scores``: phase 2 then looks ``f'`` up instead of running it. Returns rows.

    An all-gather, not :class:`~denoisrec.trainer.evaluation.metric_state.MetricState`'s gather to rank 0: every rank
    looks up the scores of its own phase-2 batches, which may come from any rank's share, so every rank needs
    every score.
    """
    from denoisrec.trainer.evaluation.scoring import all_gather_varlen

    was = d.prior.training
    d.prior.eval()
    ids, zs = [], []
    try:
        for batch in batches:
            batch = batch.to(device, non_blocking=True)
            if batch.sample_ids is None:
                raise ValueError(
                    "deca_p option prior_cache=true: the data has no sample id column (schema "
                    "sample_id); set -p prior_cache=false"
                )
            ids.append(batch.sample_ids.to(torch.int64))
            zs.append(d.prior_logits(batch).double())
    finally:
        d.prior.train(was)
    local = (
        torch.stack([torch.cat(ids).double(), torch.cat(zs)], 1)
        if ids
        else torch.zeros((0, 2), dtype=torch.float64, device=device)
    )
    # ids travel as float64 in the gather: exact below 2^53
    both = all_gather_varlen(local.to(device))
    d.set_prior_scores(both[:, 0].to(torch.int64), both[:, 1].float())
    return int(both.shape[0])


def pretrain_prior(
    model: nn.Module,
    d: Any,
    reader: Any,
    valid: Optional[Any],
    dense_opt: Any,
    device: torch.device,
    log: Any,
    max_epochs: float,
    patience: int,
    log_every: int = 50,
    fixed_steps: Optional[int] = None,
    target: str = "observed",
    words: str = "valid AUC (observed)",
) -> int:
    """Run phase 1 on the DMP ``model`` (whose denoiser ``d`` is in phase 1 while ``d.pretrain_steps`` exceeds
    its step); returns the steps taken. ``fixed_steps``: exactly that many, no validation. ``valid``/``target``:
    the rows and labels it early-stops on (:func:`selection_source`), ``words`` naming them in the log.
    """
    spe = len(reader)
    bound = fixed_steps if fixed_steps is not None else max(1, math.ceil(max_epochs * spe))
    d.pretrain_steps = bound  # in phase 1 until we say otherwise
    model.train()
    t0, done, epoch, best, bad = time.time(), 0, 0, -math.inf, 0
    snapshot: Optional[List[torch.Tensor]] = None
    stepper = Stepper(model, dense_opt, device, pipelined=False)  # the training step, plain loop
    while done < bound:
        reader.set_epoch(10_000 + epoch)  # a shuffle of its own (the main loop starts again at epoch 0)
        for value, _, _ in stepper.run(itertools.islice(iter(reader), bound - done)):
            done += 1
            if done % log_every == 0 or done == bound:
                log.print(f"prior  {done:>6}/{bound} loss {float(value.item()):.4f} ({time.time() - t0:.1f}s)")
        epoch += 1
        if fixed_steps is not None or valid is None:
            continue
        v = prior_valid_auc(d, valid, device, target)
        if v > best:
            best, bad = v, 0
            snapshot = [t.detach().clone() for t in local_tensors(d.prior)]
            log.print(f"prior  epoch {epoch}: {words} {v:.4f}, the best so far")
        else:
            bad += 1
            log.print(f"prior  epoch {epoch}: {words} {v:.4f}, no better than {best:.4f} ({bad}/{patience})")
            if bad >= patience:
                break
    if snapshot is not None and bad > 0:
        with torch.no_grad():
            for dst, src in zip(local_tensors(d.prior), snapshot):
                dst.copy_(src)
        log.print(f"prior  restored the best epoch ({words} {best:.4f})")
    d.pretrain_steps = d.host_step  # phase 2 (and its DP/DN count) starts at the next step
    d.pretrained_steps.fill_(d.pretrain_steps)
    return done

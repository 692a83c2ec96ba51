"""What a denoiser reads from a batch: a structural type, so ``denoisers/`` need not import the trainer.

Shapes (``B`` = this rank's batch size):

- ``labels``: float ``[B]``, the observed (noisy) 0/1 label;
- ``dense_features``: float ``[B, n_dense]`` (DeCA(p)'s prior ``f'`` reads them);
- ``sparse_features``: ``KeyedJaggedTensor`` with ``stride() == B`` (DeCA's MFs read the user / item ids,
  the observation model's tower the context features);
- ``sample_ids``: int64 ``[B]`` stable per-row keys, or ``None`` (tie-breaking, DeCA(p)'s score cache);
- ``is_noisy``: float ``[B]`` ground truth, or ``None``; read only to *report* (``Denoiser.report``), never
  to decide.

The trainer's :class:`denoisrec.trainer.data.batch.Batch` satisfies it (as does any object with these
attributes: the tests pass ``SimpleNamespace`` batches).

Example::

    def count_noisy(batch: DenoiserBatch) -> int:
        return 0 if batch.is_noisy is None else int(batch.is_noisy.sum())
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class DenoiserBatch(Protocol):
    """The batch fields denoisers read (read-only; see the module docstring for shapes)."""

    @property
    def labels(self) -> torch.Tensor:
        """``[B]`` observed 0/1 labels (float)."""

    @property
    def dense_features(self) -> torch.Tensor:
        """``[B, n_dense]`` dense features (float)."""

    @property
    def sparse_features(self) -> KeyedJaggedTensor:
        """The sparse features: a KJT of stride ``B`` keyed by feature name."""

    @property
    def sample_ids(self) -> Optional[torch.Tensor]:
        """``[B]`` int64 stable sample keys, or ``None`` when the data has no sample id column."""

    @property
    def is_noisy(self) -> Optional[torch.Tensor]:
        """``[B]`` 0/1 ground-truth noise flags (synthetic and labelled data only), or ``None``."""

"""The training batch: TorchRec's ``Batch`` plus the metadata denoising needs.

Shapes (B = this rank's batch size, which may differ between ranks and may be 0 on the last step):

- ``dense_features``: float32 ``[B, n_dense]``
- ``sparse_features``: ``KeyedJaggedTensor``, one key per sparse feature, ``stride() == B``
- ``labels``: float32 ``[B]``, the observed (noisy) label
- ``sample_ids``: int64 ``[B]``, a stable per-row key (tie-breaking, row accounting)
- ``group_ids``: int64 ``[B]``, the GAUC group (user id)
- ``clean_labels``, ``is_noisy``: float32 ``[B]`` ground truth, or ``None`` when the data has none
- ``trusted_labels``: float32 ``[B]``, the trusted label (0/1) and NaN on rows without one, or ``None`` when
  the schema names no trusted column

It subclasses :class:`torchrec.datasets.utils.Batch`, so TorchRec utilities and ``TrainPipelineSparseDist``
accept it (``to``, ``record_stream`` and ``pin_memory`` carry the extra fields).

Example::

    batch = next(iter(reader))              # a ParquetBatchReader
    batch.labels.shape, batch.sample_ids.dtype  # (torch.Size([B]), torch.int64)
    batch = batch.to(torch.device("cuda"), non_blocking=True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torchrec.datasets.utils import Batch as TorchRecBatch


def _map(t: Optional[torch.Tensor], fn):  # type: ignore[no-untyped-def]
    return None if t is None else fn(t)


@dataclass
class Batch(TorchRecBatch):
    """TorchRec's ``Batch`` (dense, sparse KJT, labels) plus the ids and ground truth that evaluation reads."""

    sample_ids: Optional[torch.Tensor] = None
    group_ids: Optional[torch.Tensor] = None
    clean_labels: Optional[torch.Tensor] = None
    is_noisy: Optional[torch.Tensor] = None
    trusted_labels: Optional[torch.Tensor] = None

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        move = lambda t: t.to(device=device, non_blocking=non_blocking)  # noqa: E731
        return Batch(
            dense_features=move(self.dense_features),
            sparse_features=self.sparse_features.to(device=device, non_blocking=non_blocking),
            labels=move(self.labels),
            sample_ids=_map(self.sample_ids, move),
            group_ids=_map(self.group_ids, move),
            clean_labels=_map(self.clean_labels, move),
            is_noisy=_map(self.is_noisy, move),
            trusted_labels=_map(self.trusted_labels, move),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        super().record_stream(stream)
        for t in (self.sample_ids, self.group_ids, self.clean_labels, self.is_noisy, self.trusted_labels):
            if t is not None:
                t.record_stream(stream)  # type: ignore[arg-type]

    def pin_memory(self) -> "Batch":
        pin = lambda t: t.pin_memory()  # noqa: E731
        return Batch(
            dense_features=pin(self.dense_features),
            sparse_features=self.sparse_features.pin_memory(),
            labels=pin(self.labels),
            sample_ids=_map(self.sample_ids, pin),
            group_ids=_map(self.group_ids, pin),
            clean_labels=_map(self.clean_labels, pin),
            is_noisy=_map(self.is_noisy, pin),
            trusted_labels=_map(self.trusted_labels, pin),
        )

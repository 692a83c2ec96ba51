"""The readers a training run uses, built from the config's ``data`` section.

``data.schema`` (``None``: ``<data.path>/schema.json``; a file path; or an inline mapping) gives the column
roles and table sizes; ``data.oov_policy`` / ``data.nan_policy`` override the schema's policies. The train
split is shuffled (row-group order per epoch plus ``data.shuffle_buffer`` rows), prefetched
(``data.prefetch`` batches) and pinned when the device is CUDA; valid and test are read in order. When
``<data.path>/valid_random`` (the randomised-exposure split: same schema as valid, rows placed at random
instead of by the logging ranker) exists, it is read in order like valid, under the key ``"valid_random"``.

Example::

    schema = schema_from_config(cfg.data)
    readers = split_readers(cfg.data, schema, rank=0, world_size=1, seed=0, device=torch.device("cpu"))
    len(readers["train"])  # steps per epoch
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from denoisrec.trainer.data.fs import DataPath
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import RANDOM_SPLIT, DataSchema
from denoisrec.trainer.errors import DataError


def split_path(root: str, split: str) -> str:
    """``<root>/<split>`` for a local path or a URI."""
    return root.rstrip("/") + "/" + split


def has_random_split(root: str) -> bool:
    """Whether ``<root>/valid_random`` (the randomised-exposure split) exists."""
    return DataPath.resolve(split_path(root, RANDOM_SPLIT)).is_dir()


def schema_from_config(data: Any) -> DataSchema:
    """The schema ``data`` (a ``DataConfig``) names, with its policy overrides applied."""
    schema = DataSchema.from_config(data.schema, data.path)
    return schema.with_policies(oov_policy=data.oov_policy, nan_policy=data.nan_policy)


def split_readers(
    data: Any,
    schema: DataSchema,
    rank: int,
    world_size: int,
    seed: int,
    device: torch.device,
    batch_size: Optional[int] = None,
) -> Dict[str, ParquetBatchReader]:
    """``{"train", "valid", "test"}`` readers for this rank (and ``"valid_random"`` when the dataset has that
    split); ``batch_size`` (rows per rank) overrides
    ``data.batch_size`` for the train split (the trainer passes the one ``data.global_batch_size`` implies).
    """
    pin = device.type == "cuda"

    def make(split: str, batch_size: int, train: bool) -> ParquetBatchReader:
        return ParquetBatchReader(
            split_path(data.path, split),
            schema,
            batch_size,
            rank,
            world_size,
            shuffle=train and data.shuffle,
            seed=seed,
            shuffle_buffer=data.shuffle_buffer if train else 0,
            prefetch=data.prefetch,
            workers=data.workers,
            pin_memory=pin,
            split=split,
        )

    readers = {
        "train": make("train", data.batch_size if batch_size is None else batch_size, True),
        "valid": make("valid", data.eval_batch_size, False),
        "test": make("test", data.eval_batch_size, False),
    }
    if has_random_split(data.path):
        try:
            readers[RANDOM_SPLIT] = make(RANDOM_SPLIT, data.eval_batch_size, False)
        except DataError as e:
            raise DataError(
                f"split {RANDOM_SPLIT!r} (the randomised-exposure split) must have the schema of 'valid': {e}"
            ) from e
    return readers

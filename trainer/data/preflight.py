"""Check the evaluation splits before training starts, so that bad values there cost seconds, not a run.

Training reads ``valid`` and ``test`` (and ``valid_random`` when the dataset has it) only when it evaluates, often at the end. Before the first step the
trainer therefore (rank 0, the result broadcast to every rank):

- checks every file of both splits at the schema level (footer, columns, types: the readers do this when
  they are built), and
- decodes a sample of their row groups with the checks of ``denoisrec validate`` (:mod:`.validate`):
  every ``k``-th row group so that about ``data.preflight_row_groups`` are read per split (all of them in a
  small split; ``0`` turns the scan off). Nulls, labels outside {0, 1}, out-of-table ids and non-finite
  dense values under the ``error`` policies are found there.

A sample can miss a bad row group; ``denoisrec validate`` reads every row. The error names the file, row
group and column, and says how many more problems the sample found.

Example::

    check_eval_splits("data/tiny", schema, max_row_groups=32)     # DataError on the first problem
    check_eval_splits_on_main("data/tiny", schema, 32, env.is_main, broadcast_from_main)   # in the trainer
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pyarrow.parquet as pq

from denoisrec.trainer.data.fs import DataPath
from denoisrec.trainer.data.schema import RANDOM_SPLIT, DataSchema
from denoisrec.trainer.data.validate import validate_split
from denoisrec.trainer.errors import DataError

EVAL_SPLITS = ("valid", "test")


def check_eval_splits(
    root: str, schema: DataSchema, max_row_groups: int = 32, splits: Sequence[str] = EVAL_SPLITS, filesystem: Any = None
) -> None:
    """Raise :class:`DataError` on the first error found in a sampled scan of ``splits`` of ``root``."""
    if max_row_groups <= 0:
        return
    splits = list(splits)
    if RANDOM_SPLIT not in splits and DataPath.resolve(root.rstrip("/") + "/" + RANDOM_SPLIT, filesystem).is_dir():
        splits.append(RANDOM_SPLIT)  # the randomised-exposure split is an evaluation split too
    for split in splits:
        dp = DataPath.resolve(root.rstrip("/") + "/" + split, filesystem)
        files, _ = dp.listing()
        groups = 0
        for path, _ in files:
            try:
                groups += pq.read_metadata(path, filesystem=dp.fs).num_row_groups
            except Exception:  # noqa: BLE001 - unreadable footers are reported by the scan itself
                groups += 1
        every = max(1, math.ceil(groups / max_row_groups))
        report = validate_split(dp, split, schema, None, sample_every=every)
        errors = [i for i in report.issues if i.level == "error"]
        if errors:
            more = (
                f" ({len(errors) - 1} more problem(s); `denoisrec validate {root}` lists all)"
                if len(errors) > 1
                else ""
            )
            raise DataError(f"{split} split, checked before training: {errors[0].line()[8:]}{more}")


def check_eval_splits_on_main(
    root: str, schema: DataSchema, max_row_groups: int, is_main: bool, broadcast: Any
) -> None:
    """:func:`check_eval_splits` on rank 0 only; every rank raises its error (``broadcast``: rank 0's object to
    every rank, a collective).
    """
    error = None
    if is_main:
        try:
            check_eval_splits(root, schema, max_row_groups)
        except DataError as e:
            error = str(e)
    error = broadcast(error)
    if error:
        raise DataError(error)

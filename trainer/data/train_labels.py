"""Which label training sees: the observed one (normal training) or the ground truth (the "Clean" oracle).

``data.train_label: label`` (default) trains on the observed, noisy label. ``data.train_label: clean_label``
trains on the schema's ground-truth column instead: the oracle "Clean" row of the DART thesis' Table 2,
which tells how much a perfect denoiser could gain. (The thesis *filters out* false positives for that row;
training on ``clean_label`` *relabels* them 0, the same reading our clean test uses.) Validation is then
scored against clean labels too. Denoisers still never see ground truth: with ``clean_label`` they simply
receive clean labels as their "observed" ones.

Example::

    check_train_label("clean_label", schema)   # raises unless the schema has ground truth
    batch = select_train_labels(batch, "clean_label")
"""

from __future__ import annotations

import dataclasses

from denoisrec.trainer.data.batch import Batch
from denoisrec.trainer.data.schema import DataSchema

TRAIN_LABELS = ("label", "clean_label")


def check_train_label(which: str, schema: DataSchema, path: str = "") -> None:
    """Raise ``ValueError`` naming the option unless ``which`` is usable with ``schema``."""
    if which not in TRAIN_LABELS:
        raise ValueError(f"data.train_label={which!r}: expected one of {TRAIN_LABELS}")
    if which == "clean_label" and not schema.ground_truth:
        raise ValueError(
            f"data.train_label=clean_label: the dataset {path or ''} has no ground truth "
            "(its schema names no clean_label / is_noisy columns)"
        )


def select_train_labels(batch: Batch, which: str) -> Batch:
    """``batch`` with ``labels`` replaced by ``clean_labels`` when ``which == "clean_label"``."""
    if which == "label":
        return batch
    if batch.clean_labels is None:
        raise ValueError("data.train_label=clean_label: the batch carries no clean labels")
    # labels is a field of torchrec's Batch, which ships no type information: mypy sees only our own fields
    return dataclasses.replace(batch, labels=batch.clean_labels)  # type: ignore[call-arg]

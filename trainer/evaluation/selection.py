"""What a run selects its model on (``eval.select_on``), resolved against the data, and how the summary says so.

Observed-label validation ranks a model by how well it predicts the *noisy* clicks, which a noise process
the model copies rewards; a trusted signal does not. The modes (docs/models.md, "Selection"):

- ``trusted``: AUC against the schema's ``trusted_label`` on the ``valid`` rows that carry one (split name
  ``valid_trusted``);
- ``random``: AUC against the observed labels of the randomised-exposure split ``<data>/valid_random``
  (positions shuffled, so the logging ranker's bias is gone);
- ``observed``: AUC against ``valid``'s observed labels (today's validation);
- ``auto``: ``trusted`` when valid holds trusted labels, else ``random`` when ``valid_random`` exists, else
  ``observed``.

Early stopping, the restored (and exported) epoch and the bench's sweeps all compare this one number; the
summary reports it with DeLong's interval (:mod:`~denoisrec.trainer.evaluation.auc_interval`).

Example::

    sel = resolve_selection("auto", readers)        # Selection(mode="trusted", split="valid_trusted", ...)
    sel.describe(1234)    # "AUC against the trusted labels of the 1,234 valid rows that have one"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from denoisrec.trainer.config.options import UsageError
from denoisrec.trainer.data.fs import open_parquet
from denoisrec.trainer.data.schema import RANDOM_SPLIT

SELECT_ON = ("auto", "observed", "trusted", "random")
SPLIT_OF = {"observed": "valid", "trusted": "valid_trusted", "random": RANDOM_SPLIT}


@dataclass(frozen=True)
class Selection:
    """The resolved selection: ``mode`` (observed, trusted, random), the evaluation ``split`` it reads, what
    was asked and why this mode; ``trusted_rows``: rows of valid with a trusted label.
    """

    asked: str
    mode: str
    reason: str
    trusted_rows: int = 0

    @property
    def split(self) -> str:
        """The split this selection scores (``valid``, ``valid_trusted`` or ``valid_random``)."""
        return SPLIT_OF[self.mode]

    def describe(self, rows: int) -> str:
        """The selection metric in words, for ``rows`` scored rows."""
        if self.mode == "trusted":
            return f"AUC against the trusted labels of the {rows:,} valid rows that have one"
        if self.mode == "random":
            return f"observed AUC on the {rows:,} rows of the randomised-exposure split {RANDOM_SPLIT}"
        return f"observed AUC on the {rows:,} valid rows (labels with the training data's noise)"


def count_trusted(reader: Any) -> int:
    """Rows of ``reader``'s split whose trusted label is not null (0 when the schema names none); reads that
    one column of every file.
    """
    col = reader.schema.trusted_label
    if col is None or not reader.layout.with_trusted:
        return 0
    n = 0
    for f in reader.files:
        pf = open_parquet(reader.dp, f)
        try:
            arr = pf.read(columns=[col]).column(col)
            n += len(arr) - arr.null_count
        finally:
            pf.close()
    return n


def resolve_selection(asked: str, readers: Dict[str, Any]) -> Selection:
    """The mode ``asked`` (``eval.select_on``) resolves to on this data; a :class:`UsageError` naming the
    option when an explicit ``trusted`` or ``random`` has nothing to read.
    """
    if asked not in SELECT_ON:
        raise UsageError(f"eval.select_on={asked!r}: expected one of {', '.join(SELECT_ON)}")
    valid = readers["valid"]
    column = valid.schema.trusted_label
    trusted = count_trusted(valid)
    has_random = RANDOM_SPLIT in readers
    if asked == "trusted" and not trusted:
        why = f"column {column!r} is null on every valid row" if column else "the schema names no trusted_label column"
        raise UsageError(
            f"eval.select_on=trusted: {why}; add trusted labels to valid (schema key trusted_label), or use "
            f"select_on=random (needs <data>/{RANDOM_SPLIT}) or auto"
        )
    if asked == "random" and not has_random:
        raise UsageError(
            f"eval.select_on=random: {valid.path.rsplit('/', 1)[0]}/{RANDOM_SPLIT} does not exist; write the "
            "randomised-exposure split there, or use select_on=trusted or auto"
        )
    if asked == "trusted" or (asked == "auto" and trusted):
        return Selection(asked, "trusted", f"valid has {trusted:,} trusted label(s) in {column!r}", trusted)
    if asked == "random" or (asked == "auto" and has_random):
        why = "asked" if asked == "random" else f"no trusted labels in valid; the data has a {RANDOM_SPLIT} split"
        return Selection(asked, "random", why, trusted)
    why = "asked" if asked == "observed" else f"no trusted labels in valid and no {RANDOM_SPLIT} split"
    return Selection(asked, "observed", why, trusted)

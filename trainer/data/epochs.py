"""The training feed: steps ``[start, total)`` over consecutive epochs, the next epoch read ahead.

Epoch ``step // steps_per_epoch``; on resume the batches of that epoch already trained are skipped (the
reader is deterministic given the epoch and the seed). Without look-ahead every epoch starts cold: its
threads start, its files open and the shuffle buffer fills (262,144 rows by default) while training
waits, which showed as the slow step window that crosses an epoch. Here, when the epoch being trained has
``lookahead`` steps left, the next epoch is opened (:meth:`ParquetBatchReader.open_epoch`) on a background
thread (:class:`.prefetch.Background`), so its first batches are ready when training reaches them;
``lookahead`` defaults to 8 steps plus the shuffle buffer in batches (:func:`default_lookahead`: the first
batch of an epoch needs a full window). At most two epochs' pipelines are alive at once (two shuffle windows),
and only during those last steps.

Row accounting stays exact: each epoch's :class:`EpochReport` counts the batches handed to training
(:func:`.reader.counted`, in the consumer's thread, not the read-ahead's), the batches a resumed run skips
to reach its position as skipped (:meth:`EpochReport.mark_skipped`); it is appended to ``reports``
when training finishes the epoch, when the step budget ends it, or when the feed is closed (early stop, end
of a session). An epoch opened ahead but never reached is closed and not reported.

Readers without ``open_epoch`` (any object with ``__len__``, ``set_epoch`` and ``__iter__``) are read
epoch after epoch without look-ahead.

Example::

    reports = []
    for batch in epoch_batches(reader, start_step=0, total_steps=3 * len(reader), reports=reports):
        ...  # train
    [r.complete for r in reports]  # [True, True, True]
"""

from __future__ import annotations

from typing import Any, Iterator, List, Optional, Tuple

from denoisrec.trainer.data.prefetch import Background
from denoisrec.trainer.data.reader import counted

# Steps before an epoch's end at which the next epoch starts reading, on top of the batches its shuffle
# buffer must hold before the first one comes out (:func:`default_lookahead`).
LOOKAHEAD_STEPS = 8


def default_lookahead(reader: Any) -> int:
    """``LOOKAHEAD_STEPS`` plus the shuffle buffer in batches (262,144 / 8,192 = 32 at the defaults): the
    next epoch's first batch needs a full window decoded, so it gets that many steps of head start.
    """
    buffer, batch = getattr(reader, "shuffle_buffer", 0), getattr(reader, "batch_size", 1)
    return LOOKAHEAD_STEPS + -(-buffer // max(batch, 1))


_Opened = Tuple[Iterator[Any], Optional[Any], Optional[Iterator[Any]]]


def _open(reader: Any, epoch: int, ahead: bool) -> _Opened:
    """(the counted batches, the epoch's report, the read-ahead thread if any)."""
    if not hasattr(reader, "open_epoch"):  # a plain iterable reader: no read-ahead, its own report if it has one
        reader.set_epoch(epoch)
        report = reader.epoch_report() if hasattr(reader, "epoch_report") else None
        return iter(reader), report, None
    batches, report = reader.open_epoch(epoch)
    if ahead:  # start its threads now; the first batch (the shuffle buffer's fill) is made in the background
        batches = Background(batches, depth=1, name=f"epoch-{epoch}")
    return counted(batches, report), report, batches if ahead else None


def _close(it: Optional[Iterator[Any]]) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


def epoch_batches(
    reader: Any, start_step: int, total_steps: int, reports: Optional[List[Any]] = None, lookahead: Optional[int] = None
) -> Iterator[Any]:
    """The batches of steps ``[start_step, total_steps)`` (see the module docstring).

    Args:
        reader: a :class:`~denoisrec.trainer.data.reader.ParquetBatchReader` (or any reader with ``__len__``,
            ``set_epoch`` and ``__iter__``).
        start_step: the first step to yield (a resumed run's position).
        total_steps: the step budget.
        reports: where each epoch's row accounting is appended.
        lookahead: steps before an epoch's end at which the next one is opened (0: no look-ahead; default:
            :func:`default_lookahead`).
    """
    spe = len(reader)
    if lookahead is None:
        lookahead = default_lookahead(reader)
    step = start_step
    if step >= total_steps:
        return
    epoch, skip = divmod(step, spe)
    current: Optional[_Opened] = _open(reader, epoch, ahead=False)
    ahead: Optional[_Opened] = None
    try:
        while current is not None:
            it, report, _ = current
            if hasattr(reader, "open_epoch"):
                reader.set_epoch(epoch)
            try:
                skipped_rows = 0
                for i, batch in enumerate(it):
                    if i < skip:  # trained by an earlier launch: counted as skipped, not read
                        skipped_rows += getattr(batch, "size", 0)
                        continue
                    if i == skip and skip and report is not None:
                        report.mark_skipped(skip, skipped_rows)
                    left = spe - 1 - i  # steps of this epoch after this one
                    if (
                        ahead is None
                        and lookahead > 0
                        and left <= lookahead
                        and (epoch + 1) * spe < total_steps
                        and hasattr(reader, "open_epoch")
                    ):
                        ahead = _open(reader, epoch + 1, ahead=True)
                    yield batch
                    step += 1
                    if step >= total_steps:  # before reading another batch: the report counts what was trained
                        return
            finally:
                _close(it)
                if reports is not None:
                    reports.append(report if report is not None else reader.epoch_report())
            epoch, skip = epoch + 1, 0
            if step >= total_steps:
                current = None
            else:
                current, ahead = ahead or _open(reader, epoch, ahead=False), None
    finally:
        if ahead is not None:  # opened but never reached: its generator never started, so close its threads too
            _close(ahead[0])
            _close(ahead[2])

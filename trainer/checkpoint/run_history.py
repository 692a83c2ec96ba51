"""A run's history across launches: rows read per epoch and launch, and ``metrics.jsonl`` without replays.

**Rows.** Launch 0 is the first launch of a run; a launch that resumes from a checkpoint written by launch
``L`` is launch ``L + 1``. Every checkpoint's ``meta.json`` carries ``rows_read``: the per-epoch row
accounting (:func:`denoisrec.trainer.data.accounting.gather_reports` entries, each with its ``launch``) of
every launch up to that checkpoint's position. The epoch in progress at the checkpoint is recorded as it
stands *at that step* (``min(batches · B, planned rows)`` per rank: batches are full until a rank's share
runs out), not as far as a pipeline or a prefetcher had read ahead. A resumed launch starts from that list
and appends its own epochs; the rows it decodes only to reach the resume position are counted as
``rows_skipped``, not as read. So ``summary.json``'s ``rows_read`` lists every epoch of every launch that
made it into the final model, and the rows read per epoch over launches add up to the split.

**Metrics.** A launch that resumes from step ``S`` drops the ``metrics.jsonl`` records of steps after ``S``
(the dead launch's work that is about to be redone, otherwise logged twice), and at the end of every
launch a record replaces an earlier one of the same step and kind (a finished run launched again
evaluates again at its last step). The file is rewritten atomically.

Example::

    rows = position_reports(reports, reader, epoch=1, batches=5, batch_size=64)  # this rank, at a checkpoint
    compact_metrics("runs/x/metrics.jsonl", upto_step=120)
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence


def position_reports(
    reports: Sequence[Any], reader: Any, epoch: int, batches: int, batch_size: int
) -> List[Dict[str, Any]]:
    """This rank's reports of the epochs before ``epoch``, plus ``epoch`` as it stands after ``batches`` of its
    batches (when ``batches > 0``): what a checkpoint at that position has trained on.
    """
    reports = list(reports)
    live = reader.epoch_report()  # an epoch that has just ended is reported only when its generator moves on
    if all(r.epoch != live.epoch for r in reports) and live.batches_read + live.batches_skipped > 0:
        reports.append(live)
    out = [r.to_dict() for r in reports if r.epoch < epoch]
    if batches > 0:
        current = [r for r in reports if r.epoch == epoch]
        d = (current[-1] if current else reader.epoch_report()).to_dict()
        skipped_rows, skipped_batches = d.get("rows_skipped", 0), d.get("batches_skipped", 0)
        done = batches - skipped_batches
        d["rows_read"] = max(0, min(batches * batch_size, d["planned_rows"]) - skipped_rows)
        d["batches_read"] = max(0, done)
        d["complete"] = (
            d["rows_read"] + skipped_rows == d["planned_rows"] and d["batches_read"] + skipped_batches == d["steps"]
        )
        out.append(d)
    return out


def with_launch(entries: Sequence[Dict[str, Any]], launch: int) -> List[Dict[str, Any]]:
    """``entries`` with ``launch`` set on those that have none."""
    return [{**e, "launch": e.get("launch", launch)} for e in entries]


def compact_metrics(path: str, upto_step: Optional[int] = None) -> int:
    """Rewrite ``metrics.jsonl`` without records of steps after ``upto_step`` and with one record per (step,
    kind), the last; returns how many records were dropped.
    """
    if not os.path.isfile(path):
        return 0
    kept: Dict[tuple, Dict[str, Any]] = {}  # insertion-ordered: a replacing record moves to the end
    total = 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut by a kill mid-write
                total += 1
                continue
            total += 1
            step = rec.get("step")
            if upto_step is not None and isinstance(step, int) and step > upto_step:
                continue
            key = (step, rec.get("kind"))
            kept.pop(key, None)
            kept[key] = rec
    if len(kept) == total:
        return 0
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for rec in kept.values():
            f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return total - len(kept)

"""Row accounting across ranks: how many rows every rank read in every epoch, and whether that is the split.

Each rank's :class:`~denoisrec.trainer.data.reader.EpochReport` is gathered (``all_gather_object``, so it
works on gloo and NCCL alike; a few hundred bytes per rank per epoch, once per run), and summed per epoch:

    {"epoch": 0, "per_rank": [3000, 3000], "total": 6000, "split_rows": 6000, "complete": True,
     "steps": 12, "short_batches": [1, 1], "empty_batches": [0, 0], "oov_hashed": {...}, "nan_imputed": {...}}

``complete`` is True when every rank read its whole planned share, so ``total == split_rows`` and no row was
read twice (the shares are disjoint by construction; ``tests/dist/reader_accounting.py`` checks it with the
ids of the rows seen).

Example::

    reports = []
    for epoch in range(epochs):
        reader.set_epoch(epoch)
        for batch in reader:
            ...
        reports.append(reader.epoch_report())
    rows = gather_reports(reports)      # the same on every rank
    print(format_rows_read(rows))
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch.distributed as dist


def _sum_counts(dicts: Sequence[Dict[str, int]]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def gather_reports(reports: Sequence[Any]) -> List[Dict[str, Any]]:
    """Per epoch, the rows every rank read and their total (a collective: every rank must call it).

    ``reports``: this rank's :class:`EpochReport` s (or their ``to_dict()``), the same epochs on every rank.
    """
    mine = [r if isinstance(r, dict) else r.to_dict() for r in reports]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        everyone: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
    else:
        everyone = [mine]
    out = []
    for e in range(len(mine)):
        per = [everyone[r][e] for r in range(len(everyone))]
        out.append(
            {
                "split": per[0]["split"],
                "epoch": per[0]["epoch"],
                "per_rank": [p["rows_read"] for p in per],
                "total": sum(p["rows_read"] for p in per),
                "split_rows": per[0]["total_rows"],
                "complete": all(p["complete"] for p in per),
                "steps": per[0]["steps"],
                "batches_read": [p["batches_read"] for p in per],
                "short_batches": [p["short_batches"] for p in per],
                "empty_batches": [p["empty_batches"] for p in per],
                "oov_hashed": _sum_counts([p["oov_hashed"] for p in per]),
                "nan_imputed": _sum_counts([p["nan_imputed"] for p in per]),
                "empty_files": per[0]["empty_files"],
            }
        )
        skipped = [p.get("rows_skipped", 0) for p in per]
        if any(skipped):  # a resumed run: rows an earlier launch had trained, decoded again only to skip them
            out[-1]["rows_skipped"] = skipped
            out[-1]["batches_skipped"] = [p.get("batches_skipped", 0) for p in per]
    return out


def format_rows_read(rows: Sequence[Dict[str, Any]]) -> str:
    """One line per epoch: ``rows read, epoch 0: 6,000 of 6,000 (3,000 + 3,000), complete``."""
    lines = []
    several = any(r.get("launch") for r in rows)  # a resumed run: say which launch read what
    for r in rows:
        shares = " + ".join(f"{n:,}" for n in r["per_rank"])
        state = "complete" if r["complete"] else "partial (step budget, early stop or end of the launch)"
        extra = ""
        if r["oov_hashed"]:
            extra += f"; ids hashed {sum(r['oov_hashed'].values()):,}"
        if r["nan_imputed"]:
            extra += f"; dense values imputed {sum(r['nan_imputed'].values()):,}"
        if r["empty_files"]:
            extra += f"; {len(r['empty_files'])} empty file(s)"
        if r.get("rows_skipped"):
            extra += f"; {sum(r['rows_skipped']):,} skipped on resume (trained by an earlier launch)"
        tail = f"{r['steps']} steps/rank, last batches short {sum(r['short_batches'])} empty {sum(r['empty_batches'])}"
        launch = f" (launch {r.get('launch', 0)})" if several else ""
        lines.append(
            f"  rows read, epoch {r['epoch']}{launch}: {r['total']:,} of {r['split_rows']:,} ({shares}), "
            f"{state}; {tail}{extra}"
        )
    return "\n".join(lines)

"""The choice among candidate runs: the simplest one whose selection AUC is not clearly below the best.

Every candidate is a finished run scored on the same selection rows (``eval.select_on``). The best is the
highest AUC; a candidate *ties* the best when the best's lead over it lies within the ``level`` interval of
the difference — DeLong's paired interval when both runs saved their selection scores (same rows, same
order: :data:`~denoisrec.trainer.evaluation.evaluator.SCORES_FILE`), else the conservative unpaired one,
``z·√(se_a² + se_b²)``. The choice is the simplest candidate that ties the best (simplicity: the order the
candidates are given in, simplest first), so a more complex method must *clearly* win to be chosen.

Example::

    cands = [Candidate("bce", 0.861, 0.006), Candidate("observation", 0.866, 0.006)]
    choose(cands).chosen          # 0: BCE, the observation model's lead 0.005 is within ±0.017
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from denoisrec.trainer.evaluation.auc_interval import paired_difference, z_value


@dataclass
class Candidate:
    """One candidate's selection result: AUC and its DeLong standard error; ``labels``/``logits``: its
    selection rows (for the paired test), when saved.
    """

    name: str
    auc: float
    se: float
    labels: Optional[np.ndarray] = None
    logits: Optional[np.ndarray] = None
    info: Dict[str, object] = field(default_factory=dict)


@dataclass
class Choice:
    """``chosen``: index of the chosen candidate; ``best``: of the highest AUC; per candidate the best's lead
    over it (``lead``), that lead's half interval (``half_width``), how it was computed (``paired``) and
    whether it ties the best; ``reason``: the choice in words.
    """

    chosen: int
    best: int
    lead: List[float]
    half_width: List[float]
    paired: List[bool]
    ties: List[bool]
    reason: str


def _lead(best: Candidate, c: Candidate, level: float) -> tuple:
    """(lead of ``best`` over ``c``, its half interval, paired?)."""
    if best is c:
        return 0.0, 0.0, True
    if (
        best.labels is not None
        and c.labels is not None
        and best.logits is not None
        and c.logits is not None
        and best.labels.shape == c.labels.shape
        and np.array_equal(best.labels, c.labels)
    ):
        d = paired_difference(best.labels, best.logits, c.logits, level)
        if not math.isnan(d["diff"]):
            return d["diff"], d["half_width"], True
    return best.auc - c.auc, z_value(level) * math.sqrt(best.se**2 + c.se**2), False


def choose(cands: List[Candidate], level: float = 0.95) -> Choice:
    """The simplest candidate (the list's order) whose AUC ties the best's within the ``level`` interval of
    their difference (see the module docstring). NaN AUCs never win and never tie.
    """
    if not cands:
        raise ValueError("choose: no candidates")
    ok = [i for i, c in enumerate(cands) if not math.isnan(c.auc)]
    if not ok:
        raise ValueError("choose: no candidate has a selection AUC (every run scored NaN)")
    best = max(ok, key=lambda i: (cands[i].auc, -i))  # the highest AUC; the simpler on an exact tie
    leads, halves, paired, ties = [], [], [], []
    for i, c in enumerate(cands):
        lead, half, p = _lead(cands[best], c, level) if i in ok else (math.nan, math.nan, False)
        leads.append(lead)
        halves.append(half)
        paired.append(p)
        ties.append(i in ok and lead <= half)
    chosen = next(i for i in range(len(cands)) if ties[i])
    b, c = cands[best], cands[chosen]
    if chosen == best:
        simpler = [cands[i].name for i in range(best)]
        reason = f"{b.name} has the best selection AUC {b.auc:.4f}" + (
            f" and leads every simpler candidate ({', '.join(simpler)}) beyond the {level:.0%} interval"
            if simpler
            else " and is the simplest"
        )
    else:
        how = "paired DeLong" if paired[chosen] else "unpaired"
        reason = (
            f"{c.name} ({c.auc:.4f}) is simpler than the best, {b.name} ({b.auc:.4f}), and the difference "
            f"{leads[chosen]:+.4f} is within its {level:.0%} interval ±{halves[chosen]:.4f} ({how})"
        )
    return Choice(chosen, best, leads, halves, paired, ties, reason)

"""Early stopping on validation AUC: stop after ``patience`` validations in a row without a better AUC.

The DART thesis trains "until convergence with an early stopper of two trials".

Its state is plain data, saved in checkpoints' ``meta.json``.

Example::

    es = EarlyStopping(patience=2)
    [es.update(step, auc) for step, auc in [(1, 0.70), (2, 0.72), (3, 0.71), (4, 0.715)]]
    # [True, True, False, False]: improvements at steps 1 and 2; es.stop is True after step 4
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional


@dataclass
class EarlyStopping:
    """Args: ``patience`` validations without improvement before stopping (0: never stop);
    ``min_delta``: the AUC gain that counts as an improvement.
    """

    patience: int = 0
    min_delta: float = 0.0
    best_auc: Optional[float] = None
    best_step: Optional[int] = None
    bad_evals: int = 0
    stop: bool = False

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ValueError(f"run.early_stop_patience={self.patience}: must be >= 0")

    @property
    def enabled(self) -> bool:
        """Whether early stopping is on (``patience > 0``)."""
        return self.patience > 0

    def update(self, step: int, auc: float) -> bool:
        """Record a validation AUC at ``step``; ``True`` when it is the best so far."""
        if not math.isnan(auc) and (self.best_auc is None or auc > self.best_auc + self.min_delta):
            self.best_auc, self.best_step, self.bad_evals = auc, step, 0
            return True
        self.bad_evals += 1
        if self.enabled and self.bad_evals >= self.patience:
            self.stop = True
        return False

    def state_dict(self) -> Dict[str, Any]:
        """The stopper's state, for the checkpoint."""
        return asdict(self)

    def load_state_dict(self, d: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (keys it lacks keep their values)."""
        for k in ("best_auc", "best_step", "bad_evals", "stop"):
            setattr(self, k, d.get(k, getattr(self, k)))

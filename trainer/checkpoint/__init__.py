"""Checkpoints and the run folder: checkpointer, cadence, files, identity checks, ``--out`` policy, lock, history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

from denoisrec.trainer import lazy_exports

_EXPORTS: Dict[str, str] = {
    "Checkpointer": "denoisrec.trainer.checkpoint.checkpointer",
    "check_same_run": "denoisrec.trainer.checkpoint.identity",
    "data_fingerprint": "denoisrec.trainer.checkpoint.identity",
    "PeriodicCheckpointer": "denoisrec.trainer.checkpoint.cadence",
    "RunLock": "denoisrec.trainer.checkpoint.run_lock",
    "acquire_for_run": "denoisrec.trainer.checkpoint.run_lock",
    "compact_metrics": "denoisrec.trainer.checkpoint.run_history",
    "prepare_out": "denoisrec.trainer.checkpoint.out_policy",
}
"""Public name → the module that defines it (imported on first use: no torch until then)."""

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from denoisrec.trainer.checkpoint.cadence import PeriodicCheckpointer as PeriodicCheckpointer
    from denoisrec.trainer.checkpoint.checkpointer import Checkpointer as Checkpointer
    from denoisrec.trainer.checkpoint.identity import check_same_run as check_same_run
    from denoisrec.trainer.checkpoint.identity import data_fingerprint as data_fingerprint
    from denoisrec.trainer.checkpoint.out_policy import prepare_out as prepare_out
    from denoisrec.trainer.checkpoint.run_history import compact_metrics as compact_metrics
    from denoisrec.trainer.checkpoint.run_lock import RunLock as RunLock
    from denoisrec.trainer.checkpoint.run_lock import acquire_for_run as acquire_for_run

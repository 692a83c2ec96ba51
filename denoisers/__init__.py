"""Denoising loss layer: every method selectable by name.

>>> from denoisrec.denoisers import build_denoiser
>>> build_denoiser("tce", eps_max=0.1, num_gradual=10000)
TruncatedBCE(eps_max=0.1, num_gradual=10000)
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Type

from denoisrec.denoisers.adt import ReweightedBCE, TruncatedBCE
from denoisrec.denoisers.base import Denoiser, LossOutput
from denoisrec.denoisers.bce import BCE

DENOISERS: Dict[str, Type[Denoiser]] = {cls.name: cls for cls in (BCE, TruncatedBCE, ReweightedBCE)}


def build_denoiser(name: str, process_group: Any = None, **params: Any) -> Denoiser:
    """Instantiate denoiser ``name`` with hyperparameters ``params`` (unknown names are an error)."""
    if name not in DENOISERS:
        raise ValueError(f"--denoiser {name!r}: unknown denoiser, expected one of {sorted(DENOISERS)}")
    cls = DENOISERS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "process_group"}
    unknown = set(params) - accepted
    if unknown:
        raise ValueError(f"denoiser {name!r}: unknown option(s) {sorted(unknown)}; accepted: {sorted(accepted)}")
    return cls(process_group=process_group, **params)


__all__ = ["BCE", "DENOISERS", "Denoiser", "LossOutput", "ReweightedBCE", "TruncatedBCE", "build_denoiser"]

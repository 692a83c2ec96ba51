"""Denoising loss layer: every method selectable by name.

| name | class | paper |
|---|---|---|
| ``bce`` | :class:`BCE` | baseline |
| ``tce``, ``rce`` | :class:`TruncatedBCE`, :class:`ReweightedBCE` | ADT (WSDM 2021) |
| ``lcd``, ``lcd_re`` | :class:`LCD`, :class:`LCDRe` | LCD (CIKM 2022) |
| ``bootstrap_soft``, ``bootstrap_hard`` | :class:`SoftBootstrap`, :class:`HardBootstrap` | Reed et al. 2015 |
| ``dart`` | :class:`DART` | DART (thesis 2023) |
| ``deca``, ``deca_p`` | :class:`DeCA`, :class:`DeCAPrior` | DeCA (WWW 2022) |
| ``observation`` | :class:`ObservationModel` | DeCA's noise model over the observation context |
| ``observation_tce`` | :class:`ObservationTCE` | the same, plus T-CE |
| ``observation_ids`` | :class:`ObservationIdNoise` | the same, plus DeCA's MF noise models over user × item |

Hyperparameters are the constructor's keyword arguments (``-p name=value``); each class's ``GRID`` holds
the papers' grid. Arguments listed in a class's ``NEEDS.injected`` (feature table sizes, device, DeCA(p)'s
prior model) are not options: the trainer passes them in ``context``. What else a denoiser needs from the
trainer (a context tower, a dynamic graph, run-length binding, model-parallel tables, a pre-training phase)
is its :class:`DenoiserNeeds` (``Denoiser.needs``).

>>> from denoisrec.denoisers import build_denoiser
>>> build_denoiser("tce", eps_max=0.1, num_gradual=10000)
TruncatedBCE(eps_max=0.1, num_gradual=10000)
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Optional, Type

from torch.distributed import ProcessGroup

from denoisrec.denoisers.adt import ReweightedBCE, TruncatedBCE
from denoisrec.denoisers.base import Denoiser, DenoiserNeeds, JobFacts, LossOutput, Pretraining
from denoisrec.denoisers.bce import BCE
from denoisrec.denoisers.bootstrap import HardBootstrap, SoftBootstrap
from denoisrec.denoisers.dart import DART
from denoisrec.denoisers.deca import DeCA, DeCAPrior
from denoisrec.denoisers.lcd import LCD, LCDRe
from denoisrec.denoisers.observation import ObservationIdNoise, ObservationModel, ObservationTCE

DENOISERS: Dict[str, Type[Denoiser]] = {
    cls.name: cls
    for cls in (
        BCE,
        TruncatedBCE,
        ReweightedBCE,
        LCD,
        LCDRe,
        SoftBootstrap,
        HardBootstrap,
        DART,
        DeCA,
        DeCAPrior,
        ObservationModel,
        ObservationTCE,
        ObservationIdNoise,
    )
}


def options(name: str) -> List[str]:
    """The user-settable hyperparameters of denoiser ``name``."""
    cls = DENOISERS[name]
    return sorted(set(inspect.signature(cls.__init__).parameters) - {"self", "process_group", *cls.NEEDS.injected})


def build_denoiser(
    name: str, process_group: Optional[ProcessGroup] = None, context: Optional[Mapping[str, Any]] = None, **params: Any
) -> Denoiser:
    """Instantiate denoiser ``name`` with hyperparameters ``params`` (unknown names are an error).

    ``context`` supplies the arguments the class lists in ``NEEDS.injected`` (e.g. ``tables``, ``device``,
    ``prior``); a missing one is an error naming it.
    """
    if name not in DENOISERS:
        raise ValueError(f"--denoiser {name!r}: unknown denoiser, expected one of {sorted(DENOISERS)}")
    cls = DENOISERS[name]
    accepted = options(name)
    unknown = set(params) - set(accepted)
    if unknown:
        raise ValueError(f"denoiser {name!r}: unknown option(s) {sorted(unknown)}; accepted: {accepted}")
    context = dict(context or {})
    missing = [k for k in cls.NEEDS.injected if k not in context]
    if missing:
        raise ValueError(f"denoiser {name!r} needs {missing} from the trainer (build_denoiser(context=...))")
    injected = {k: context[k] for k in cls.NEEDS.injected}
    return cls(process_group=process_group, **injected, **params)


__all__ = [
    "BCE",
    "DART",
    "DENOISERS",
    "DeCA",
    "DeCAPrior",
    "Denoiser",
    "DenoiserNeeds",
    "HardBootstrap",
    "JobFacts",
    "LCD",
    "LCDRe",
    "LossOutput",
    "ObservationIdNoise",
    "ObservationModel",
    "ObservationTCE",
    "Pretraining",
    "ReweightedBCE",
    "SoftBootstrap",
    "TruncatedBCE",
    "build_denoiser",
    "options",
]

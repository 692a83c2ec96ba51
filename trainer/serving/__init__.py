"""After training: serving artefacts, batch scoring, calibration of the scores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

from denoisrec.trainer import lazy_exports

_EXPORTS: Dict[str, str] = {
    "Platt": "denoisrec.trainer.serving.calibration",
    "export_serving": "denoisrec.trainer.serving.export",
    "fit_platt": "denoisrec.trainer.serving.calibration",
    "load_artefact": "denoisrec.trainer.serving.export",
    "predict_file": "denoisrec.trainer.serving.predict",
}
"""Public name → the module that defines it (imported on first use: no torch until then)."""

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from denoisrec.trainer.serving.calibration import Platt as Platt
    from denoisrec.trainer.serving.calibration import fit_platt as fit_platt
    from denoisrec.trainer.serving.export import export_serving as export_serving
    from denoisrec.trainer.serving.export import load_artefact as load_artefact
    from denoisrec.trainer.serving.predict import predict_file as predict_file

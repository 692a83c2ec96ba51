"""The trainer's side of the denoisers: building them, DeCA(p)'s prior phase, feature views, the observation report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

from denoisrec.trainer import lazy_exports

_EXPORTS: Dict[str, str] = {
    "build_denoiser_for": "denoisrec.trainer.denoising.build",
    "feature_views": "denoisrec.trainer.denoising.feature_views",
    "prepare_denoiser": "denoisrec.trainer.denoising.build",
    "pretrain_prior": "denoisrec.trainer.denoising.prior",
    "write_observation_report": "denoisrec.trainer.denoising.observation_report",
}
"""Public name → the module that defines it (imported on first use: no torch until then)."""

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from denoisrec.trainer.denoising.build import build_denoiser_for as build_denoiser_for
    from denoisrec.trainer.denoising.build import prepare_denoiser as prepare_denoiser
    from denoisrec.trainer.denoising.feature_views import feature_views as feature_views
    from denoisrec.trainer.denoising.observation_report import write_observation_report as write_observation_report
    from denoisrec.trainer.denoising.prior import pretrain_prior as pretrain_prior

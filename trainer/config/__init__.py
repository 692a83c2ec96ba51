"""The run's configuration: the dataclass tree, the torch-free check, the option catalog, the papers' presets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

from denoisrec.trainer import lazy_exports

_EXPORTS: Dict[str, str] = {
    "Config": "denoisrec.trainer.config.tree",
    "DENOISER_OPTIONS": "denoisrec.trainer.config.options",
    "MODEL_OPTIONS": "denoisrec.trainer.config.options",
    "Preset": "denoisrec.trainer.config.presets",
    "apply_overrides": "denoisrec.trainer.config.tree",
    "apply_preset": "denoisrec.trainer.config.presets",
    "check_config": "denoisrec.trainer.config.check",
    "parse_params": "denoisrec.trainer.config.tree",
}
"""Public name → the module that defines it (imported on first use: no torch until then)."""

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from denoisrec.trainer.config.check import check_config as check_config
    from denoisrec.trainer.config.options import DENOISER_OPTIONS as DENOISER_OPTIONS
    from denoisrec.trainer.config.options import MODEL_OPTIONS as MODEL_OPTIONS
    from denoisrec.trainer.config.presets import Preset as Preset
    from denoisrec.trainer.config.presets import apply_preset as apply_preset
    from denoisrec.trainer.config.tree import Config as Config
    from denoisrec.trainer.config.tree import apply_overrides as apply_overrides
    from denoisrec.trainer.config.tree import parse_params as parse_params

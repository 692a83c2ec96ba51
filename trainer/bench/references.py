"""The reference rows the quality benches train beside the methods: set-ups a user cannot run on real logs.

They bound what a method can reach on the generator's data; they are never candidates of ``tune``.

| name | set-up |
|---|---|
| ``clean`` | BCE on the clean labels (``data.train_label=clean_label``): the top of the gap closure |
| ``clean_no_context`` | the same, with the context features withheld (``model.context=withhold``) |
| ``withheld`` | BCE with the context features withheld |
| ``oracle_noise`` | the observation model (examination form) with the generator's true noise model fixed |
|  | (``<data>/noise_model.json``; only where the noise family has the examination step) |

``bench quality`` (:func:`denoisrec.trainer.bench.quality.run_one`) and ``bench tuned``
(:func:`denoisrec.trainer.bench.tuned.reference_configs`) both set their rows here.

Example::

    cfg = Config()
    cfg.data.path = "data/small"
    set_reference(cfg, WITHHELD)          # True: BCE, model.context=withhold
    set_reference(cfg, ORACLE_NOISE)      # False when data/small has no noise_model.json
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

CLEAN = "clean"
CLEAN_NO_CONTEXT = "clean_no_context"
WITHHELD = "withheld"
ORACLE_NOISE = "oracle_noise"
REFERENCES = (CLEAN, CLEAN_NO_CONTEXT, WITHHELD, ORACLE_NOISE)
NOISE_MODEL_FILE = "noise_model.json"
BASELINE = "bce"


def noise_model_path(data: str) -> Optional[str]:
    """The generator's true noise model of ``data``.

    Args:
        data: a dataset folder.

    Returns:
        ``<data>/noise_model.json`` where ``gen-data`` wrote it, else ``None`` (real data has none).
    """
    path = os.path.join(data, NOISE_MODEL_FILE)
    return path if os.path.isfile(path) else None


def set_reference(cfg: Any, name: str, params: Optional[Dict[str, Any]] = None) -> bool:
    """Turn ``cfg`` (a trainer :class:`~denoisrec.trainer.config.tree.Config`) into the reference row ``name``.

    Args:
        cfg: the run's config; its ``data.path`` names the dataset. Changed in place.
        name: one of :data:`REFERENCES`.
        params: the observation model's options for ``oracle_noise`` (its ``noise_file`` is set here).

    Returns:
        ``False`` (``cfg`` unchanged) where the row does not apply: ``oracle_noise`` on data without a
        true noise model; else ``True``.
    """
    if name not in REFERENCES:
        raise ValueError(f"reference row {name!r}: expected one of {', '.join(REFERENCES)}")
    if name == ORACLE_NOISE:
        noise = noise_model_path(cfg.data.path)
        if noise is None:
            return False
        cfg.denoiser.name = "observation"
        cfg.denoiser.params = {"form": "examination", **(params or {}), "noise_file": noise}
        return True
    cfg.denoiser.name, cfg.denoiser.params = BASELINE, {}
    if name in (CLEAN, CLEAN_NO_CONTEXT):
        cfg.data.train_label = "clean_label"
    if name in (CLEAN_NO_CONTEXT, WITHHELD):
        cfg.model.context = "withhold"
    return True

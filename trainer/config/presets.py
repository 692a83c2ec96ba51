"""Presets: the papers' training set-ups as named bundles of config values (``denoisrec train --preset``).

| preset | from | embedding | MLP | dropout | global batch | optimizer | early stop |
|---|---|---|---|---|---|---|---|
| ``lcd`` | LCD (CIKM 2022) §4.1 | 8 | 256×128×64 | – | 8192 | (defaults) | – |
| ``dart`` | DART thesis §5.1 | 16 | 16×16 | 0.2 | 2048 | Adam lr 1e-3, weight decay 1e-6 | 2 validations |

The ``dart`` optimizer values apply to the dense and the sparse optimizer alike. A preset is applied after
``--config`` and before the other flags and ``--set``, so anything can still be overridden. The MLP maps onto
each model's own option: ``over_arch`` (plus the final 1) for DLRM, ``mlp`` for DCN-V2, DeepFM and Wide&Deep;
FM has no MLP. Dropout applies to the models that have the option.

Example::

    cfg = Config()
    cfg.model.name = "deepfm"
    apply_preset(cfg, "dart")
    cfg.model.params  # {'mlp': [16, 16], 'dropout': 0.2}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from denoisrec.models import model_options
from denoisrec.trainer.config.tree import Config


@dataclass(frozen=True)
class Preset:
    """One paper's set-up: the config values it sets (``None``: left as configured)."""

    embedding_dim: int
    mlp: Optional[List[int]] = None
    dropout: Optional[float] = None
    global_batch_size: Optional[int] = None
    optim: Dict[str, Any] = field(default_factory=dict)
    run: Dict[str, Any] = field(default_factory=dict)


PRESETS: Dict[str, Preset] = {
    "lcd": Preset(embedding_dim=8, mlp=[256, 128, 64], global_batch_size=8192),
    "dart": Preset(
        embedding_dim=16,
        mlp=[16, 16],
        dropout=0.2,
        global_batch_size=2048,
        optim={
            "dense": "adam",
            "lr": 1e-3,
            "weight_decay": 1e-6,
            "sparse": "adam",
            "sparse_lr": 1e-3,
            "sparse_weight_decay": 1e-6,
        },
        run={"early_stop_patience": 2, "eval_every": "epoch"},
    ),
}


def apply_preset(cfg: Config, name: str) -> List[str]:
    """Apply preset ``name`` to ``cfg`` in place for ``cfg.model.name``; return the values it set."""
    if name not in PRESETS:
        raise ValueError(f"--preset {name!r}: unknown preset, expected one of {sorted(PRESETS)}")
    p = PRESETS[name]
    accepted = set(model_options(cfg.model.name))
    applied = [f"model.embedding_dim={p.embedding_dim}"]
    cfg.model.embedding_dim = p.embedding_dim
    if p.mlp is not None:
        if "over_arch" in accepted:
            cfg.model.params["over_arch"] = list(p.mlp) + [1]
            applied.append(f"model.params.over_arch={cfg.model.params['over_arch']}")
        elif "mlp" in accepted:
            cfg.model.params["mlp"] = list(p.mlp)
            applied.append(f"model.params.mlp={p.mlp}")
    if p.dropout is not None and "dropout" in accepted:
        cfg.model.params["dropout"] = p.dropout
        applied.append(f"model.params.dropout={p.dropout}")
    if p.global_batch_size is not None:
        cfg.data.global_batch_size = p.global_batch_size
        applied.append(f"data.global_batch_size={p.global_batch_size}")
    for section, values in (("optim", p.optim), ("run", p.run)):
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
            applied.append(f"{section}.{k}={v}")
    return applied

"""Presets: named training set-ups as bundles of config values (``denoisrec train --preset NAME``).

Also ``preset: NAME`` in a YAML config, and ``-- --preset NAME`` under torchx and Slurm.

- ``recommended``: ``--denoiser observation -p form=examination tower_warmup=25% rates_lr_scale=50``, 3
  epochs; for impression logs with context columns (``role: context``; the synthetic ``tiny``, ``small``,
  ``medium``, ``product``).
- ``lcd``: LCD (CIKM 2022) §4.1: embedding 8, MLP 256×128×64, global batch 8192.
- ``dart``: DART thesis §5.1: embedding 16, MLP 16×16, dropout 0.2, global batch 2048, Adam lr 1e-3 and
  weight decay 1e-6, early stopping after 2 validations.

``recommended`` is what ``make train`` runs (benchmarks/README.md has its numbers); on data without context
columns (``criteo``-shaped data, MovieLens, DeCA's sets) the observation model refuses: train ``--denoiser bce``
or ``--denoiser deca_p`` there. ``--denoiser NAME`` with another denoiser replaces the preset's denoiser and
its options (``--preset recommended --denoiser bce``: BCE, 3 epochs).

The ``dart`` optimizer values apply to the dense and the sparse optimizer alike. A preset is applied after
``--config`` and before the other flags and ``--set``, so anything can still be overridden (in a YAML file,
``preset: NAME`` is applied first and the file's own values on top). The MLP maps onto each model's own option:
``over_arch`` (plus the final 1) for DLRM, ``mlp`` for DCN-V2, DeepFM and Wide&Deep; FM has no MLP. Dropout
applies to the models that have the option.

Example::

    cfg = Config()
    cfg.model.name = "deepfm"
    apply_preset(cfg, "dart")
    cfg.model.params  # {'mlp': [16, 16], 'dropout': 0.2}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from denoisrec.trainer.config.options import MODEL_OPTIONS
from denoisrec.trainer.errors import UsageError

if TYPE_CHECKING:  # config.py resolves a YAML file's ``preset:`` with this module: no import circle
    from denoisrec.trainer.config.tree import Config


@dataclass(frozen=True)
class Preset:
    """One set-up: the config values it sets (``None``: left as configured); ``data`` says which data it is for."""

    data: str
    embedding_dim: Optional[int] = None
    denoiser: Optional[str] = None
    denoiser_params: Dict[str, Any] = field(default_factory=dict)
    epochs: Optional[int] = None
    mlp: Optional[List[int]] = None
    dropout: Optional[float] = None
    global_batch_size: Optional[int] = None
    optim: Dict[str, Any] = field(default_factory=dict)
    run: Dict[str, Any] = field(default_factory=dict)


PRESETS: Dict[str, Preset] = {
    "recommended": Preset(
        data="impression logs with context columns (role: context), e.g. gen-data tiny/small/medium/product",
        denoiser="observation",
        denoiser_params={"form": "examination", "tower_warmup": "25%", "rates_lr_scale": 50},
        epochs=3,
    ),
    "lcd": Preset(
        data="LCD (CIKM 2022) section 4.1's set-up", embedding_dim=8, mlp=[256, 128, 64], global_batch_size=8192
    ),
    "dart": Preset(
        data="DART thesis section 5.1's set-up",
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


def apply_preset(cfg: Config, name: str, denoiser: Optional[str] = None) -> List[str]:
    """Apply preset ``name`` to ``cfg`` in place for ``cfg.model.name``; return the values it set.

    Args:
        cfg: the config so far (its ``model.name`` is the final model's: the MLP maps onto its options).
        name: a key of :data:`PRESETS`.
        denoiser: the denoiser the flags name, if any: another one than the preset's replaces the preset's
            denoiser and its options.

    Returns:
        The ``key=value`` settings applied, in order.
    """
    if name not in PRESETS:
        raise UsageError(f"--preset {name!r}: unknown preset, expected one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    accepted = set(MODEL_OPTIONS.get(cfg.model.name, {}))  # an unknown model is the config check's to name
    applied: List[str] = []
    if p.denoiser is not None and denoiser in (None, p.denoiser):
        cfg.denoiser.name = p.denoiser
        cfg.denoiser.params.update(p.denoiser_params)
        applied.append(f"denoiser.name={p.denoiser}")
        applied += [f"denoiser.params.{k}={v}" for k, v in p.denoiser_params.items()]
    if p.epochs is not None:
        cfg.run.epochs = p.epochs
        applied.append(f"run.epochs={p.epochs}")
    if p.embedding_dim is not None:
        cfg.model.embedding_dim = p.embedding_dim
        applied.append(f"model.embedding_dim={p.embedding_dim}")
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


def describe_presets() -> str:
    """``--help`` lines: each preset, what it sets, and which data it is for."""
    lines = []
    for name, p in PRESETS.items():
        sets = []
        if p.denoiser:
            sets.append(f"--denoiser {p.denoiser} -p " + " ".join(f"{k}={v}" for k, v in p.denoiser_params.items()))
        if p.epochs:
            sets.append(f"--epochs {p.epochs}")
        if p.embedding_dim:
            sets.append(f"embedding {p.embedding_dim}")
        if p.mlp:
            sets.append(f"MLP {'x'.join(map(str, p.mlp))}")
        if p.dropout:
            sets.append(f"dropout {p.dropout}")
        if p.global_batch_size:
            sets.append(f"global batch {p.global_batch_size}")
        if p.optim:
            sets.append(", ".join(f"optim.{k}={v}" for k, v in p.optim.items()))
        if p.run:
            sets.append(", ".join(f"run.{k}={v}" for k, v in p.run.items()))
        lines.append(f"  {name}: {'; '.join(sets)}\n      for: {p.data}")
    return "\n".join(lines)

"""Model files: a trained model as one unsharded ``torch.save`` file, loadable on one process.

Format (a dict, ``torch.save``-d; load with ``torch.load(path, weights_only=True)``)::

    {
      "format": "denoisrec-model", "version": 1,
      "spec": ModelSpec.to_dict(),        # name, features + table sizes, dense width, widths, options
      "schema": {...},                    # the dataset schema the model was trained on (column roles)
      "state_dict": {name: Tensor},       # the model's parameters and buffers, unsharded, on CPU
      "extra": {...},                     # free-form: step, metrics, config of the run
    }

Used by ``denoisrec predict`` and by denoisers that need a frozen copy of a trained model (DeCA(p)).

Example::

    save_model_file("model.pt", spec, model.state_dict(), schema={"sparse": [...], "dense": []})
    loaded = load_model_file("model.pt")
    loaded.model.eval()
    logits = loaded.model(dense, kjt)          # [B, 1]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from denoisrec.models.spec import ModelSpec

FORMAT = "denoisrec-model"
VERSION = 1


@dataclass
class LoadedModel:
    model: nn.Module
    spec: ModelSpec
    schema: Dict[str, Any]
    extra: Dict[str, Any]


def save_model_file(path: str, spec: ModelSpec, state_dict: Mapping[str, torch.Tensor],
                    schema: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> None:
    """Write a model file atomically (a temporary file renamed into place)."""
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec.to_dict(),
        "schema": schema,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        "extra": extra or {},
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load_model_file(path: str, device: Optional[torch.device] = None) -> LoadedModel:
    """Rebuild the model of a model file on ``device`` (CPU by default) and load its parameters."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file (written as <run out>/model.pt by training)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable model file ({type(e).__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a denoisrec model file (no format={FORMAT!r} field)")
    if blob.get("version") != VERSION:
        raise ValueError(f"{path}: model file version {blob.get('version')}, this denoisrec reads {VERSION}")
    spec = ModelSpec.from_dict(blob["spec"])
    device = device or torch.device("cpu")
    model = spec.build(device)
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: state_dict does not match model {spec.name!r}: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")
    model.to(device)
    return LoadedModel(model=model, spec=spec, schema=blob["schema"], extra=blob.get("extra", {}))

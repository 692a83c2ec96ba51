"""Model files: a trained model as one unsharded ``torch.save`` file, loadable on one process.

The one API that writes and reads them: training's export (``Checkpointer.export_model``), ``predict``, ``export``
(serving artefacts), the serving bench and DeCA(p)'s ``prior_checkpoint`` all go through it.

- :func:`save_model_file` writes one (atomically);
- :func:`read_model_file` reads and checks one without building anything (:class:`ModelFile`);
- :func:`load_model_file` reads one and rebuilds its model (:class:`LoadedModel`);
- :func:`read_weights` reads the weights of a model file or of a plain ``torch.save(state_dict)``.

Format (a dict, ``torch.save``-d; load with ``torch.load(path, weights_only=True)``)::

    {
      "format": "denoisrec-model", "version": 1,
      "spec": ModelSpec.to_dict(),        # name, features + table sizes, dense width, widths, options
      "schema": {...},                    # the dataset schema the model was trained on (column roles)
      "state_dict": {name: Tensor},       # the model's parameters and buffers, unsharded, on CPU
      "extra": {...},                     # free-form: step, metrics, config of the run
    }

Example::

    save_model_file("model.pt", spec, model.state_dict(), schema={"sparse": [...], "dense": []})
    read_model_file("model.pt").extra["step"]   # metadata only, no model built
    loaded = load_model_file("model.pt")
    loaded.model.eval()
    logits = loaded.model(dense, kjt)          # [B, 1]
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from denoisrec.models.spec import ModelSpec

FORMAT = "denoisrec-model"
VERSION = 1


@dataclass
class ModelFile:
    """A model file's contents, checked: the spec, the schema, the unsharded weights (CPU), the extras."""

    spec: ModelSpec
    schema: Dict[str, Any]
    state_dict: Dict[str, torch.Tensor]
    extra: Dict[str, Any]


@dataclass
class LoadedModel:
    """A model file read back: the built model with its weights, its spec, the data schema and extra metadata."""

    model: nn.Module
    spec: ModelSpec
    schema: Dict[str, Any]
    extra: Dict[str, Any]


def save_model_file(
    path: str,
    spec: ModelSpec,
    state_dict: Mapping[str, torch.Tensor],
    schema: Dict[str, Any],
    extra: Optional[Dict[str, Any]] = None,
) -> None:
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


def _read_blob(path: str, what: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such {what} (written as <run out>/model.pt by training)")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; JSON, text or random bytes are not one
        raise ValueError(f"{path}: not a denoisrec model file (not a torch.save archive; training writes RUN/model.pt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # never torch's advice to retry with weights_only=False: that would run the file's code
        raise ValueError(
            f"{path}: not a denoisrec model file (it holds objects other than tensors and plain values, so it is "
            "not loaded)"
        ) from None
    except Exception as e:
        raise ValueError(f"{path}: not a readable {what} ({type(e).__name__}: {_why(e)})") from e


def _why(e: BaseException) -> str:
    """``e``'s message without torch's advice to load with ``weights_only=False``.

    That advice is unsafe, and no fix here: a model file holds tensors and plain containers only.
    """
    text = " ".join(str(e).split())
    if "weights_only" not in text:
        return text[:300]
    inner = text.split("WeightsUnpickler error:", 1)
    detail = inner[1].split(" Check the documentation", 1)[0].strip() if len(inner) > 1 else ""
    return f"{detail or 'not a weights-only torch.save file'}; random bytes, a truncated file or another format"


def is_model_file(blob: Any) -> bool:
    """Whether a loaded object is a model file's dict (its ``format`` field)."""
    return isinstance(blob, Mapping) and blob.get("format") == FORMAT


def _parse(path: str, blob: Any) -> ModelFile:
    if not is_model_file(blob):
        raise ValueError(f"{path}: not a denoisrec model file (no format={FORMAT!r} field)")
    if blob.get("version") != VERSION:
        raise ValueError(f"{path}: model file version {blob.get('version')}, this denoisrec reads {VERSION}")
    return ModelFile(
        spec=ModelSpec.from_dict(blob["spec"]),
        schema=blob["schema"],
        state_dict=dict(blob["state_dict"]),
        extra=blob.get("extra", {}),
    )


def read_model_file(path: str) -> ModelFile:
    """Read and check a model file (format and version) without building its model."""
    return _parse(path, _read_blob(path, "model file"))


def read_weights(path: str) -> Dict[str, torch.Tensor]:
    """The weights in ``path`` (keys as saved).

    A model file's ``state_dict``, or a plain ``torch.save(model.state_dict())``. Anything else is an error naming the
    file.
    """
    blob = _read_blob(path, "model file or state dict")
    if is_model_file(blob):
        return _parse(path, blob).state_dict
    if not isinstance(blob, Mapping) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise ValueError(f"{path}: expected a model file or a state_dict, got {type(blob).__name__}")
    return dict(blob)


def load_model_file(path: str, device: Optional[torch.device] = None) -> LoadedModel:
    """Rebuild the model of a model file on ``device`` (CPU by default) and load its parameters."""
    f = read_model_file(path)
    device = device or torch.device("cpu")
    model = f.spec.build(device)
    missing, unexpected = model.load_state_dict(f.state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: state_dict does not match model {f.spec.name!r}: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    model.to(device)
    return LoadedModel(model=model, spec=f.spec, schema=f.schema, extra=f.extra)

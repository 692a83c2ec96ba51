"""Check a whole :class:`~denoisrec.trainer.config.tree.Config` before anything heavy starts.

Every field is checked against its dataclass annotation (``int``, ``float``, ``bool``, ``str``,
``Optional[...]``, ``List[str]``, ``Dict``, ``Literal[...]`` choices) and against the interval or choices
written on the field itself (:func:`~denoisrec.trainer.config.tree.setting`); model and denoiser
hyperparameters against :mod:`denoisrec.trainer.config.options`. A new config field is therefore type-checked
from its annotation alone; give its ``setting`` a ``lo``/``hi`` to bound it.
Each mistake raises one :class:`~denoisrec.trainer.config.options.UsageError` naming the key, the value and what
is accepted. Numbers are normalised in place (``lr: 1`` becomes ``1.0``).

Nothing here imports torch, except to ask whether CUDA is there when ``run.device`` is ``cuda``, and to read
the denoiser registry for a denoiser the catalog does not list.

Example::

    cfg = Config()
    cfg.run.epochs = "abc"
    check_config(cfg)  # UsageError: run.epochs='abc': expected an integer in [1, inf) (passes over the train split)
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Literal, Mapping, Optional, Union

from denoisrec.trainer.config.close_names import did_you_mean
from denoisrec.trainer.config.options import (
    CONTEXT_TOWER_DENOISERS,
    DENOISER_OPTIONS,
    DENSE_MODELS,
    Opt,
    UsageError,
    check_choice,
    check_denoiser_params,
    check_model_params,
    check_value,
)
from denoisrec.trainer.config.tree import Config

EVAL_SPLITS = ("valid", "test_clean", "test_observed", "valid_trusted", "valid_random")

_KIND = {int: "int", float: "float", bool: "bool", str: "str"}


def check_config(cfg: Config, world_size: Optional[int] = None) -> Config:
    """Check every value of ``cfg`` (see the module docstring); return ``cfg`` with numbers normalised.

    Args:
        cfg: the config to check (changed in place: numbers normalised).
        world_size: the number of ranks when known (``denoisrec launch`` reads it from ``-j``); default: the
            ``WORLD_SIZE`` variable torchrun sets, else unknown (``data.global_batch_size`` is then checked
            when the ranks start).

    Returns:
        ``cfg``.
    """
    for section in dataclasses.fields(cfg):
        obj = getattr(cfg, section.name)
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            key = f"{section.name}.{f.name}"
            setattr(obj, f.name, _check_field(key, getattr(obj, f.name), hints.get(f.name, Any), f.metadata))
    _check_eval(cfg)
    check_model_params(cfg.model.name, cfg.model.params)
    _check_denoiser(cfg)
    _check_world_size(cfg, world_size)
    _check_schema(cfg)
    _check_device(cfg.run.device)
    return cfg


def _check_world_size(cfg: Config, world_size: Optional[int]) -> None:
    if world_size is None and os.environ.get("WORLD_SIZE", "").isdigit():
        world_size = int(os.environ["WORLD_SIZE"])
    gbs = cfg.data.global_batch_size
    if gbs is not None and world_size and gbs % world_size:
        raise UsageError(
            f"data.global_batch_size={gbs}: not divisible by the world size {world_size}; "
            f"use a multiple of {world_size} (e.g. {max(world_size, gbs - gbs % world_size)})"
        )


def _check_schema(cfg: Config) -> None:
    """The model/schema facts that need no torch: dense features for a model that needs them, context
    features for a denoiser with a context tower. A schema that cannot be read here is left to the data
    checks that follow (they name the file).
    """
    path = cfg.data.path
    if cfg.data.schema is None and not (isinstance(path, str) and "://" not in path and os.path.isdir(path)):
        return
    from denoisrec.trainer.data.schema import DataSchema

    try:
        schema = DataSchema.from_config(cfg.data.schema, path)
    except Exception:  # noqa: BLE001 - reported with its file by the data checks
        return
    if cfg.model.name in DENSE_MODELS and not schema.dense:
        raise UsageError(
            f"--model {cfg.model.name}: it needs at least one dense feature and {path} has none; "
            "use dcnv2, deepfm, fm or widedeep"
        )
    for name in cfg.eval.marginalise:
        if name not in schema.context_names:
            raise UsageError(
                f"eval.marginalise: {name!r} is not a context feature of {path} (role: context); "
                f"its context features: {', '.join(schema.context_names) or 'none'}"
                + did_you_mean(name, schema.context_names)
            )
    if cfg.denoiser.name in CONTEXT_TOWER_DENOISERS and not schema.context_names:
        raise UsageError(
            f"--denoiser {cfg.denoiser.name}: the schema of {path} has no context features (role: context); "
            "mark the context columns role: context in schema.json, or use --denoiser bce"
        )


def _check_field(key: str, v: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
    """One field against its annotation and the bounds or choices :func:`~denoisrec.trainer.config.tree.setting`
    put on it.
    """
    optional = typing.get_origin(hint) is Union and type(None) in typing.get_args(hint)
    if meta.get("choices"):
        check_choice(key, v, meta["choices"], none_ok=optional)
        return v
    if meta.get("lo") is not None or meta.get("hi") is not None:
        inner = [a for a in typing.get_args(hint) if a is not type(None)] if optional else [hint]
        bounds = {k: meta[k] for k in ("lo", "hi", "lo_open", "hi_open")}
        return check_value(f"{key}={v!r}", v, Opt(_KIND[inner[0]], None, meta["help"], **bounds, none_ok=optional))
    return _check_type(key, v, hint, meta.get("help") or key.split(".")[-1].replace("_", " "))


def _check_type(key: str, v: Any, hint: Any, help: str) -> Any:
    """Type check from the annotation alone (fields without a rule)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is Union:
        if v is None and type(None) in args:
            return v
        inner = [a for a in args if a is not type(None)]
        return _check_type(key, v, inner[0], help) if len(inner) == 1 else v
    if origin is Literal:  # an enum: the annotation lists the choices
        if isinstance(v, bool) and ("on" if v else "off") in args:
            v = "on" if v else "off"  # YAML 1.1 reads on/off as booleans: the documented words come back
        check_choice(key, v, [str(a) for a in args])
        return v
    if hint in _KIND:
        return check_value(f"{key}={v!r}", v, Opt(_KIND[hint], None, help))
    if origin in (list, typing.List) and not isinstance(v, (list, tuple)):
        raise UsageError(f"{key}={v!r}: expected a list, e.g. [a, b]")
    if origin in (dict, typing.Dict) and not isinstance(v, dict):
        raise UsageError(f"{key}={v!r}: expected a mapping, e.g. {{name: value}}")
    return v


def _check_eval(cfg: Config) -> None:
    e = cfg.run.eval_every
    if not (e in ("epoch", "auto") or (isinstance(e, int) and not isinstance(e, bool) and e >= 0)):
        raise UsageError(
            f"run.eval_every={e!r}: expected auto (every epoch when the data has ground truth), "
            "epoch, or a number of steps >= 0 (0: only at the end)"
        )
    bad = [s for s in cfg.run.eval_during if s not in EVAL_SPLITS]
    if bad:
        raise UsageError(
            f"run.eval_during={cfg.run.eval_during!r}: unknown split(s) {bad}; expected some of "
            f"{', '.join(EVAL_SPLITS)}"
        )


def _check_denoiser(cfg: Config) -> None:
    name = cfg.denoiser.name
    if name not in DENOISER_OPTIONS:  # perhaps registered by a newer module: ask the registry (imports torch)
        from denoisrec.denoisers import DENOISERS

        if name not in DENOISERS:
            raise UsageError(
                f"--denoiser {name!r}: unknown denoiser; expected one of {', '.join(DENOISERS)}"
                + did_you_mean(name, DENOISERS, quote=True)
            )
    cfg.denoiser.params = check_denoiser_params(name, cfg.denoiser.params)


def _check_device(device: str) -> None:
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        build = f"torch {torch.__version__} " + ("with CUDA" if torch.version.cuda else "without CUDA (CPU build)")
        raise UsageError(f"--device cuda: no CUDA device is visible ({build}); use --device cpu or auto")

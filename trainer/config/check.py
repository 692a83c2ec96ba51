"""Check a whole :class:`~denoisrec.trainer.config.tree.Config` before anything heavy starts.

Every field is checked against its dataclass annotation (``int``, ``float``, ``bool``, ``str``,
``Optional[...]``, ``List[str]``, ``Dict``, ``Literal[...]`` choices), then against :data:`RULES` (interval
or choices) when the field is listed there; model and denoiser hyperparameters against
:mod:`denoisrec.trainer.config.options`. A new config field is therefore type-checked from its annotation alone;
add a line to :data:`RULES` to bound it.
Each mistake raises one :class:`~denoisrec.trainer.config.options.UsageError` naming the key, the value and what
is accepted. Numbers are normalised in place (``lr: 1`` becomes ``1.0``).

Nothing here imports torch, except to ask whether CUDA is there when ``run.device`` is ``cuda``, and to read
the denoiser registry for a denoiser the catalog does not list.

Example::

    cfg = Config()
    cfg.run.epochs = "abc"
    check_config(cfg)  # UsageError: run.epochs='abc': expected an integer >= 1 (passes over the train split)
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Dict, Literal, Optional, Tuple, Union

from denoisrec.trainer.config.options import (
    CONTEXT_TOWER_DENOISERS,
    DENOISER_OPTIONS,
    DENSE_MODELS,
    DENSE_OPTIMIZERS,
    DEVICES,
    MODEL_OPTIONS,
    SHARDING_TYPES,
    SPARSE_OPTIMIZERS,
    Opt,
    UsageError,
    check_choice,
    check_denoiser_params,
    check_model_params,
    check_value,
)
from denoisrec.trainer.config.tree import Config

EVAL_SPLITS = ("valid", "test_clean", "test_observed", "valid_trusted", "valid_random")

#: ``section.field`` -> an :class:`Opt` (type and interval) or a tuple of accepted strings.
RULES: Dict[str, Union[Opt, Tuple[str, ...]]] = {
    "data.batch_size": Opt("int", 2048, "rows per rank per step", 1),
    "data.global_batch_size": Opt("int", None, "rows per step over all ranks", 1, none_ok=True),
    "data.eval_batch_size": Opt("int", 8192, "rows per evaluation batch", 1),
    "data.shuffle_buffer": Opt("int", 262144, "rows", 0),
    "data.prefetch": Opt("int", 4, "batches kept ready", 0),
    "data.workers": Opt("int", 1, "threads per rank assembling batches", 1, 256),
    "model.name": tuple(MODEL_OPTIONS),
    "model.embedding_dim": Opt("int", 16, "embedding width", 1),
    "model.embedding_init": Opt("float", None, "uniform init bound", 0, lo_open=True, none_ok=True),
    "optim.dense": DENSE_OPTIMIZERS,
    "optim.lr": Opt("float", 1e-3, "dense learning rate", 0, lo_open=True),
    "optim.weight_decay": Opt("float", 0.0, "dense weight decay", 0),
    "optim.sparse": SPARSE_OPTIMIZERS,
    "optim.sparse_lr": Opt("float", 0.05, "sparse learning rate", 0, lo_open=True),
    "optim.sparse_weight_decay": Opt("float", 0.0, "sparse weight decay", 0),
    "optim.warmup_steps": Opt("int", 0, "steps of linear warm-up", 0),
    "optim.min_lr_ratio": Opt("float", 0.0, "final lr / lr", 0, 1),
    "optim.clip_grad_norm": Opt("float", None, "dense gradient norm bound", 0, lo_open=True, none_ok=True),
    "sharding.sharding_type": SHARDING_TYPES,
    "run.epochs": Opt("int", 1, "passes over the train split", 1),
    "run.max_steps": Opt("int", None, "step budget", 1, none_ok=True),
    "run.log_every": Opt("int", 50, "steps between log lines", 1),
    "run.device": DEVICES,
    "run.early_stop_patience": Opt("int", 0, "validations without improvement; 0: off", 0),
    "run.early_stop_min_delta": Opt("float", 0.0, "AUC improvement that counts", 0),
    "run.checkpoint_every": Opt("int", 0, "steps between checkpoints; 0: never", 0),
    "run.keep_checkpoints": Opt("int", 2, "checkpoints kept", 1),
    "run.stop_after_steps": Opt("int", None, "steps in this session", 1, none_ok=True),
    "eval.ci_level": Opt("float", 0.95, "confidence level of the selection metric's interval", 0, 1, True, True),
}
_NULLABLE_CHOICES = {"sharding.sharding_type"}
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
            setattr(obj, f.name, _check_field(key, getattr(obj, f.name), hints.get(f.name, Any)))
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
    if cfg.denoiser.name in CONTEXT_TOWER_DENOISERS and not schema.context_names:
        raise UsageError(
            f"--denoiser {cfg.denoiser.name}: the schema of {path} has no context features (role: context); "
            "mark the context columns role: context in schema.json, or use --denoiser bce"
        )


def _check_field(key: str, v: Any, hint: Any) -> Any:
    rule = RULES.get(key)
    if isinstance(rule, tuple):
        check_choice(key, v, rule, none_ok=key in _NULLABLE_CHOICES)
        return v
    if isinstance(rule, Opt):
        return check_value(f"{key}={v!r}", v, rule)
    return _check_type(key, v, hint)


def _check_type(key: str, v: Any, hint: Any) -> Any:
    """Type check from the annotation alone (fields without a rule)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is Union:
        if v is None and type(None) in args:
            return v
        inner = [a for a in args if a is not type(None)]
        return _check_type(key, v, inner[0]) if len(inner) == 1 else v
    if origin is Literal:  # an enum: the annotation lists the choices
        if isinstance(v, bool) and ("on" if v else "off") in args:
            v = "on" if v else "off"  # YAML 1.1 reads on/off as booleans: the documented words come back
        check_choice(key, v, [str(a) for a in args])
        return v
    if hint in _KIND:
        return check_value(f"{key}={v!r}", v, Opt(_KIND[hint], None, key.split(".")[-1].replace("_", " ")))
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
            raise UsageError(f"--denoiser {name!r}: unknown denoiser; expected one of {', '.join(DENOISERS)}")
    cfg.denoiser.params = check_denoiser_params(name, cfg.denoiser.params)


def _check_device(device: str) -> None:
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        build = f"torch {torch.__version__} " + ("with CUDA" if torch.version.cuda else "without CUDA (CPU build)")
        raise UsageError(f"--device cuda: no CUDA device is visible ({build}); use --device cpu or auto")

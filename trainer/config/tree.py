"""One dataclass config tree (data, model, denoiser, optim, sharding, run, eval), from YAML and the command line.

Each field carries its default, its one-line help and its bounds or choices (:func:`setting`): the torch-free
check (``trainer/config/check.py``) and the ``--help`` of ``denoisrec train`` read them from the field.
Every run writes the resolved tree to ``<out>/config.yaml``; loading that file reproduces the run.

Example::

    cfg = Config.from_dict({"denoiser": {"name": "tce", "params": {"eps_max": 0.1}}})
    apply_overrides(cfg, ["run.max_steps=100", "model.embedding_dim=8"])
    cfg.run.max_steps  # 100
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import yaml

from denoisrec.trainer.config.close_names import did_you_mean
from denoisrec.trainer.config.options import (
    DENSE_OPTIMIZERS,
    DEVICES,
    MODEL_OPTIONS,
    SHARDING_TYPES,
    SPARSE_OPTIMIZERS,
    UsageError,
)


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Optional[Callable[[], Any]] = None,
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    lo_open: bool = False,
    hi_open: bool = False,
    choices: Tuple[str, ...] = (),
    unset: str = "none",
) -> Any:
    """A config field with its help and its bounds beside its default (read back with :func:`about`).

    Args:
        default: the value (or ``factory`` for a list or a mapping).
        help: what the value means, one line (``--help`` and the check's messages show it).
        factory: builds the default of a mutable field instead of ``default``.
        lo: the smallest accepted number (``lo_open``: excluded), ``None`` for none.
        hi: the largest accepted number (``hi_open``: excluded), ``None`` for none.
        lo_open: ``lo`` itself is refused.
        hi_open: ``hi`` itself is refused.
        choices: the accepted strings of a free-text field (a ``Literal`` annotation lists its own).
        unset: what a ``None`` default means, for the help (``default: the planner chooses``).

    Returns:
        A :func:`dataclasses.field`.

    Example::

        batch_size: int = setting(2048, "rows per rank per step", lo=1)
    """
    meta = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices}
    meta["unset"] = unset
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def about(key: str) -> Dict[str, Any]:
    """The default, help, bounds and choices that :func:`setting` put on config field ``key``.

    Args:
        key: ``section.field`` (``data.batch_size``).

    Returns:
        The field's metadata with ``default`` (its default, built when it has a factory) and ``type`` (its
        annotation, resolved) added.

    Example::

        about("data.batch_size")["default"]  # 2048
    """
    section, name = key.split(".")
    cls = type(getattr(Config(), section))
    f = {x.name: x for x in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        default = f.default
    else:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
    hint = typing.get_type_hints(cls)[name]
    return {"help": "", "unset": "none", "choices": (), **f.metadata, "default": default, "type": hint}


@dataclass
class DataConfig:
    """Where the data is and how it is batched (see docs/ingest.md).

    ``batch_size`` is per rank (the global batch is ``batch_size × world size``); ``global_batch_size``,
    when set, overrides it with ``global_batch_size / world size`` (it must divide evenly). ``train_label`` is the
    column training sees: ``label`` (observed) or ``clean_label`` (the ground-truth oracle, see
    ``trainer/data/train_labels.py``). ``schema``: ``None`` reads ``<path>/schema.json``; a path names a schema file
    (JSON or YAML); a mapping is the schema itself. ``oov_policy`` / ``nan_policy`` override the schema's.
    ``shuffle_buffer`` is in rows (0: row-group order only); ``prefetch`` is the number of batches background
    threads keep ready (0: none). ``workers``: threads per rank that assemble batches (and build the shuffle
    window) in parallel; the batches do not depend on it (with ``prefetch: 0`` everything runs in the
    training thread). ``preflight_row_groups``: before training, decode about this many row groups of
    each of ``valid`` and ``test`` with the checks of ``denoisrec validate`` (0: off; ``trainer/data/preflight.py``).
    """

    path: str = setting("data/small", "dataset directory")
    batch_size: int = setting(2048, "rows per rank per step", lo=1)
    global_batch_size: Optional[int] = setting(None, "rows per step over all ranks", lo=1)
    eval_batch_size: int = setting(8192, "rows per evaluation batch", lo=1)
    shuffle: bool = setting(True, "shuffle the train split every epoch")
    train_label: Literal["label", "clean_label"] = setting("label", "the label column training sees")
    schema: Any = setting(None, "schema file or mapping", unset="<path>/schema.json")
    oov_policy: Optional[Literal["error", "hash"]] = setting(None, "out-of-table ids", unset="the schema's")
    nan_policy: Optional[Literal["error", "impute"]] = setting(None, "missing dense values", unset="the schema's")
    shuffle_buffer: int = setting(262144, "rows in the shuffle window", lo=0)
    prefetch: int = setting(4, "batches kept ready", lo=0)
    workers: int = setting(1, "threads per rank assembling batches", lo=1, hi=256)
    preflight_row_groups: int = setting(32, "row groups of valid and test decoded before training; 0: off")


@dataclass
class ModelConfig:
    """``name`` from :data:`denoisrec.models.MODELS`; ``params`` are that model's options; ``tables`` overrides
    single tables: ``{feature: {num_embeddings: N, embedding_dim: D}}`` (a smaller ``num_embeddings`` applies
    the schema's out-of-table policy to the ids above it); ``embedding_init`` ``a`` starts every table uniform
    in ``[−a, a]`` (``null``: the model's default, see :class:`denoisrec.models.ModelSpec`). ``context`` says how
    the schema's ``role: context`` features are used: ``features`` (ordinary inputs), ``withhold`` (never read)
    or ``auto`` (``features``, but kept out of the target model under ``--denoiser observation``; see
    ``trainer/denoising/feature_views.py``).
    """

    name: str = setting("dlrm", "the model", choices=tuple(MODEL_OPTIONS))
    embedding_dim: int = setting(16, "embedding width", lo=1)
    params: Dict[str, Any] = setting(factory=dict, help="the model's options")
    tables: Dict[str, Dict[str, int]] = setting(factory=dict, help="per-table overrides")
    embedding_init: Optional[float] = setting(None, "uniform init bound", lo=0, lo_open=True, unset="the model's")
    context: Literal["auto", "features", "withhold"] = setting("auto", "how the context features are used")


@dataclass
class DenoiserConfig:
    """``name`` from :data:`denoisrec.denoisers.DENOISERS`; ``params`` are its hyperparameters."""

    name: str = setting("bce", "the loss layer")
    params: Dict[str, Any] = setting(factory=dict, help="the denoiser's options")


@dataclass
class OptimConfig:
    """Dense optimizer (applied after backward) and sparse optimizer (fused into backward).

    The learning rates of both follow one schedule: linear warm-up over ``warmup_steps``, then ``decay``
    (``none``, ``linear`` or ``cosine``) down to ``min_lr_ratio × lr`` at the last step. ``clip_grad_norm``
    clips the dense gradients' global L2 norm (the fused sparse update happens inside backward, unclipped).
    """

    dense: str = setting("adam", "dense optimizer", choices=DENSE_OPTIMIZERS)
    lr: float = setting(1e-3, "dense learning rate", lo=0, lo_open=True)
    weight_decay: float = setting(0.0, "dense weight decay", lo=0)
    sparse: str = setting("rowwise_adagrad", "sparse optimizer (fused into backward)", choices=SPARSE_OPTIMIZERS)
    sparse_lr: float = setting(0.05, "sparse learning rate", lo=0, lo_open=True)
    sparse_weight_decay: float = setting(0.0, "sparse weight decay", lo=0)
    warmup_steps: int = setting(0, "steps of linear warm-up", lo=0)
    decay: Literal["none", "linear", "cosine"] = setting("none", "learning-rate decay after the warm-up")
    min_lr_ratio: float = setting(0.0, "final lr / lr", lo=0, hi=1)
    clip_grad_norm: Optional[float] = setting(None, "dense gradient norm bound", lo=0, lo_open=True)


@dataclass
class ShardingConfig:
    """``sharding_type`` forces one TorchRec sharding type for every table (``table_wise``,
    ``column_wise``, ``row_wise`` (GPU only), ``data_parallel``); ``None`` lets the planner choose.
    """

    sharding_type: Optional[str] = setting(
        None, "one sharding type for every table", choices=SHARDING_TYPES, unset="the planner chooses"
    )


@dataclass
class RunConfig:
    """The run: budget, evaluation, early stopping, checkpoints, precision, outputs.

    - ``eval_every``: validate every N steps (0: only at the end; ``"epoch"``: at every epoch's end;
      ``"auto"``: every epoch when the data has ground truth or a trusted signal, else only at the end), on
      the splits in ``eval_during`` (``valid``, ``test_clean``, ``test_observed``, ``valid_trusted``,
      ``valid_random``; ``test_clean`` only with ground truth) and the selection split (``eval.select_on``).
    - ``early_stop_patience``: stop after this many validations without a better selection AUC
      (``eval.select_on``; 0: off); the best model is then restored for the final evaluation.
    - ``checkpoint_every``: save a sharded checkpoint every N steps and at the end (0: never).
      ``resume``: ``auto`` (from ``<out>/checkpoints/latest`` when present), ``never``, or a checkpoint
      directory. See docs/checkpoints.md.
      ``stop_after_steps``: end this session after N steps with a checkpoint and no final evaluation (for
      time-sliced schedulers: the next launch with ``resume=auto`` continues the same run).
      ``overwrite``: a launch that would not continue the run already in ``out`` (its checkpoints or its
      finished outputs) deletes it instead of refusing (see ``trainer/checkpoint/out_policy.py``).
    - ``nonfinite``: ``stop`` (a non-finite loss or gradient stops the run within ``nonfinite_check_every``
      steps, exporting nothing), ``skip`` (skip such batches; at most ``nonfinite_max_skips`` in a row) or
      ``off`` (see ``trainer/loop/nonfinite.py``).
    - ``precision``: ``fp32``, ``bf16`` or ``fp16`` autocast of the forward pass.
    - ``pipeline``: ``auto`` (TorchRec's ``TrainPipelineSparseDist`` on GPU), ``on`` or ``off``.
    - ``progress``: ``auto`` (a tqdm bar on a terminal, log lines otherwise), ``bar``, ``log`` or ``none``.
    - ``baseline``: a run directory (or its ``summary.json``) to report RealImp against.
    - ``export``: write ``<out>/model.pt`` (unsharded, for ``denoisrec predict``) at the end.
    - ``curves``: draw ``<out>/curves.png`` (clean vs observed AUC, noisy vs clean positive loss, noise
      identification; :mod:`denoisrec.trainer.outputs.curves`) at the end.
    """

    out: str = setting("runs/default", "run output directory")
    epochs: int = setting(1, "passes over the train split", lo=1)
    max_steps: Optional[int] = setting(None, "step budget", lo=1)
    log_every: int = setting(50, "steps between log lines", lo=1)
    seed: int = setting(0, "the run's seed")
    device: str = setting("auto", "where to train", choices=DEVICES)
    eval_every: Any = setting("auto", "steps between validations, epoch or auto")
    eval_during: List[str] = setting(factory=lambda: ["valid", "test_clean"], help="splits validated during the run")
    early_stop_patience: int = setting(0, "validations without improvement; 0: off", lo=0)
    early_stop_min_delta: float = setting(0.0, "AUC improvement that counts", lo=0)
    checkpoint_every: int = setting(0, "steps between checkpoints; 0: never", lo=0)
    keep_checkpoints: int = setting(2, "checkpoints kept", lo=1)
    resume: str = setting("auto", "auto, never, or a checkpoint directory")
    stop_after_steps: Optional[int] = setting(None, "steps in this session", lo=1)
    overwrite: bool = setting(False, "replace a run already in out instead of refusing")
    nonfinite: Literal["stop", "skip", "off"] = setting("stop", "what a non-finite loss or gradient does")
    nonfinite_check_every: int = setting(10, "steps between non-finite checks", lo=1)
    nonfinite_max_skips: int = setting(10, "skipped batches in a row before the run stops", lo=1)
    precision: Literal["fp32", "bf16", "fp16"] = setting("fp32", "autocast of the forward pass")
    pipeline: Literal["auto", "on", "off"] = setting("auto", "TorchRec's sparse-dist train pipeline")
    progress: Literal["auto", "bar", "log", "none"] = setting("auto", "progress display")
    baseline: Optional[str] = setting(None, "run directory whose summary.json is the RealImp baseline")
    export: bool = setting(True, "write <out>/model.pt at the end")
    curves: bool = setting(True, "draw <out>/curves.png at the end")


@dataclass
class EvalConfig:
    """What the run selects its model on (early stopping, the restored and exported epoch; docs/models.md,
    "Selection"), and the interval it reports.

    - ``select_on``: ``trusted`` (AUC against the trusted labels on the valid rows that have one: the schema's
      ``trusted_label``), ``random`` (observed AUC on the randomised-exposure split ``<data>/valid_random``),
      ``observed`` (AUC on ``valid``'s observed labels, which a noise process can fool), or ``auto``: trusted
      when valid holds trusted labels, else random when ``valid_random`` exists, else observed.
    - ``keep_selected``: with validation during the run (``run.eval_every``), keep the model of the best
      selection metric (the selected evaluation) and restore and export it at the end, early stopping on or
      off; ``false``: the last step's model, unless early stopping restores its best.
    - ``ci_level``: the confidence level of the selection metric's interval (DeLong's,
      ``trainer/evaluation/auc_interval.py``).
    - ``marginalise``: context features a serving request does not know (the list ``position``: the ranking
      decides it). Every evaluation — valid, the selection rows, the tests — scores each row as the mean served
      probability over their training distribution (``trainer/evaluation/scoring.py``), so a model that reads
      the logged position is not credited with the old ranker's knowledge. ``[]``: scored on the logged values.
    """

    select_on: Literal["auto", "observed", "trusted", "random"] = setting("auto", "the selection split")
    keep_selected: bool = setting(True, "restore and export the selected model")
    ci_level: float = setting(
        0.95, "confidence level of the selection metric's interval", lo=0, hi=1, lo_open=True, hi_open=True
    )
    marginalise: List[str] = setting(
        factory=list, help="context features scored marginalised over train (unknown at serving, e.g. [position])"
    )


@dataclass
class Config:
    """The whole run's configuration: one section per concern (``--set section.key=value`` on the command line)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Config":
        """A config from a nested mapping (as ``config.yaml`` holds it); an unknown key is a :class:`UsageError`."""
        return _build(cls, d, "")

    def to_dict(self) -> Dict[str, Any]:
        """The whole tree as a nested mapping (what ``--print-config`` and ``config.yaml`` show)."""
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path: str) -> "Config":
        """A config from a YAML file (a ``preset: NAME`` key resolved); a bad file is a one-line :class:`UsageError`.

        Args:
            path: the ``--config`` file.

        Returns:
            The config (not yet checked: :func:`~denoisrec.trainer.config.check.check_config`).
        """
        try:
            with open(path) as f:
                d = yaml.safe_load(f) or {}
        except OSError as e:
            raise UsageError(f"--config {path}: cannot read it ({e.strerror or e})") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise UsageError(f"--config {path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
        if not isinstance(d, dict):
            raise UsageError(f"--config {path}: a config file must hold a mapping, got {type(d).__name__}")
        try:
            return cls.from_dict(with_preset(d))
        except ValueError as e:
            raise UsageError(f"--config {path}: {e}") from None

    def save(self, path: str) -> None:
        """Write the tree to ``path`` as YAML (``Config.load`` reads it back)."""
        with open(path, "w") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)


def with_preset(d: Dict[str, Any]) -> Dict[str, Any]:
    """A config mapping with a top-level ``preset: NAME`` (trainer/config/presets.py) resolved: the preset's values
    first, the mapping's own on top. Without ``preset``, ``d`` itself.

    Example::

        with_preset({"preset": "recommended", "run": {"epochs": 1}})["denoiser"]["name"]  # 'observation'
    """
    if "preset" not in d:
        return d
    from denoisrec.trainer.config.presets import apply_preset

    d = dict(d)
    name = d.pop("preset")
    base = Config()
    model, denoiser = d.get("model") or {}, d.get("denoiser") or {}
    if isinstance(model, dict) and "name" in model:
        base.model.name = model["name"]
    apply_preset(base, str(name), denoiser=denoiser.get("name") if isinstance(denoiser, dict) else None)
    return _merge(base.to_dict(), d)


def _merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _build(cls: Any, d: Dict[str, Any], where: str) -> Any:
    if not isinstance(d, dict):
        raise UsageError(f"config {where or 'root'}: expected a mapping, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        hint = did_you_mean(sorted(unknown)[0], fields, quote=True)
        raise UsageError(f"config {where or 'root'}: unknown key(s) {sorted(unknown)}; known: {sorted(fields)}{hint}")
    kwargs = {}
    for k, v in d.items():
        f = fields[k]
        if dataclasses.is_dataclass(f.type) or (isinstance(f.type, str) and f.type in _SECTIONS):
            # is_dataclass() narrows to "class or instance"; a field's type is always the class
            section = f.type if isinstance(f.type, str) else f.type.__name__  # type: ignore[union-attr]
            kwargs[k] = _build(_SECTIONS[section], v, k)
        else:
            kwargs[k] = v
    return cls(**kwargs)


_SECTIONS = {
    c.__name__: c for c in (DataConfig, ModelConfig, DenoiserConfig, OptimConfig, ShardingConfig, RunConfig, EvalConfig)
}


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_value(raw: str, where: str = "") -> Any:
    """A command-line value as YAML (``[64, 1]``, ``null``, ``true``), except that every number is a number:
    YAML 1.1 reads ``1e-6`` (no dot) as a string, which would reach an optimizer as ``'1e-6'``.
    """
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise UsageError(f"{where or raw}: the value is not valid YAML (quote it, or write a list as [a, b])") from None
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    return value


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply ``dotted.key=value`` overrides in place (values parsed as YAML: ``1e-3``, ``[64, 1]``, ``null``).

    Keys under ``model.params`` / ``denoiser.params`` are free-form (checked by the model/denoiser);
    everything else must name an existing field.
    """
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        value = parse_value(raw, f"--set {item}")
        parts = key.strip().split(".")
        obj: Any = cfg
        for i, p in enumerate(parts[:-1]):
            if isinstance(obj, dict):
                obj = obj.setdefault(p, {})
            elif hasattr(obj, p):
                obj = getattr(obj, p)
            else:
                known = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
                hint = did_you_mean(p, known, quote=True)
                raise UsageError(f"--set {key}: unknown config key {'.'.join(parts[: i + 1])!r}{hint}")
        last = parts[-1]
        if isinstance(obj, dict):
            obj[last] = value
        elif dataclasses.is_dataclass(obj) and last in {f.name for f in dataclasses.fields(obj)}:
            setattr(obj, last, value)
        else:
            known = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
            raise UsageError(f"--set {key}: unknown config key {key!r}{did_you_mean(last, known, quote=True)}")
    return cfg


def parse_params(items: List[str]) -> Dict[str, Any]:
    """``["eps_max=0.1", "num_gradual=1000"]`` → ``{"eps_max": 0.1, "num_gradual": 1000}``."""
    out: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"-p {item!r}: expected name=value")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v, f"-p {item}")
    return out

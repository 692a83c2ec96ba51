"""What the command line accepts, without importing torch: models, denoisers with their options, choices.

The registries (:data:`denoisrec.models.MODELS`, :data:`denoisrec.denoisers.DENOISERS`) need torch and take
seconds to import; this catalog lets ``denoisrec train`` check every value and print ``--help`` before that.
``tests/trainer/config/test_options.py`` checks it against the registries (names, options, defaults), so a new
denoiser or option that is not listed here fails a test that names it.

An :class:`Opt` is a hyperparameter's type, default, accepted interval and one-line meaning. A denoiser
registered but missing here is still accepted (checked by its constructor only, after the imports).

Example::

    check_denoiser_params("tce", {"eps_max": 1.5})
    # UsageError: -p eps_max=1.5: tce's eps_max: out of range, expected a number in [0, 1) (the largest share ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from denoisrec.trainer.config.close_names import did_you_mean
from denoisrec.trainer.errors import UsageError


@dataclass(frozen=True)
class Opt:
    """One option: ``kind`` ``int``, ``float``, ``bool``, ``str`` or ``ints`` (a list of positive ints);
    ``lo``/``hi`` bound numbers (``lo_open``/``hi_open``: the bound itself is excluded); ``none_ok``: ``null``
    is accepted; ``multiple_of``: an int must be a multiple of it.
    """

    kind: str
    default: Any
    help: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    none_ok: bool = False
    choices: Tuple[str, ...] = ()
    multiple_of: int = 1

    def interval(self) -> str:
        """The accepted interval as written in messages and ``--help`` (``[0, 1)``), ``""`` when unbounded."""
        if self.lo is None and self.hi is None:
            return ""
        lo = "-inf" if self.lo is None else _num(self.lo)
        hi = "inf" if self.hi is None else _num(self.hi)
        left = "(" if self.lo_open or self.lo is None else "["
        right = ")" if self.hi_open or self.hi is None else "]"
        return f"{left}{lo}, {hi}{right}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _prob(default: float, help: str, hi_open: bool = False) -> Opt:
    return Opt("float", default, help, 0.0, 1.0, hi_open=hi_open)


def _steps(default: Optional[int], help: str) -> Opt:
    return Opt("int", default, help, 0, none_ok=default is None)


def _span(default: Any, help: str) -> Opt:
    """A schedule length: steps (1000), epochs ('1ep') or a share of the run ('30%'); denoisers/span.py."""
    return Opt("span", default, help)


_DECA = {
    "objective": Opt(
        "str",
        "marginal",
        "marginal (-log[f h' + (1-f) h]) or paper (Eq. 14-15 with C1, C2)",
        choices=("marginal", "paper"),
    ),
    "C1": Opt(
        "float",
        None,
        "objective=paper only: the positive noise model's regulariser (paper: 1000; ~10 with observed negatives)",
        0,
        none_ok=True,
    ),
    "C2": Opt(
        "float", None, "objective=paper only: the negative noise model's regulariser (paper: 10)", 0, none_ok=True
    ),
    "alpha": _prob(1.0, "share of the KL term"),
    "user_feature": Opt("str", "user_id", "sparse feature that identifies the user (MF tables)"),
    "item_feature": Opt("str", "item_id", "sparse feature that identifies the item (MF tables)"),
    "mf_dim": Opt("int", 32, "width of the MF noise models' embeddings (factors plus a bias)", 2),
}
_LCD = {
    "alpha_b": Opt("float", 2.0, "Beta CDF shape a", 0, lo_open=True),
    "beta_b": Opt("float", 2.0, "Beta CDF shape b", 0, lo_open=True),
    "start_step": _steps(0, "global step at which correction starts"),
}

_OBSERVATION = {
    "form": Opt(
        "str",
        "mixture",
        "how the context enters the noise model (denoisers/observation.py)",
        choices=("mixture", "examination", "product"),
    ),
    "dim": Opt("int", 4, "context embedding width, a multiple of 4", 4, multiple_of=4),
    "hidden": Opt("ints", (), "hidden widths of the observation MLP; [] for none"),
    "h_init": Opt("float", 0.1, "initial P(observed 1 | true 0), below h_prime_init", 0, 1, True, True),
    "h_prime_init": Opt("float", 0.9, "initial P(observed 1 | true 1)", 0, 1, True, True),
    "eps_max": _prob(0.0, "largest share of positives dropped by the T-CE part", hi_open=True),
    "num_gradual": _steps(0, "steps over which eps ramps up to eps_max"),
    "diag_decay": _prob(0.99, "decay of the diagnostics' running means", hi_open=True),
    "tower_warmup": _span(
        0, "steps, epochs ('1ep') or share of the run ('25%') with the context tower held at h_init, h_prime_init"
    ),
    "rates_lr_scale": Opt(
        "float", 1.0, "form=examination: learning-rate multiple of the global inattentive rates", 0, lo_open=True
    ),
    "noise_file": Opt("str", "", "form=examination: a JSON noise model fixed, not learnt (gen-data: noise_model.json)"),
    "trusted_weight": Opt(
        "float", 0.0, "weight of the trusted rows' cross-entropy on f (data's trusted_label; 0: off)", 0
    ),
}

#: denoiser name -> its user-settable options (the constructor's keyword arguments).
DENOISER_OPTIONS: Dict[str, Dict[str, Opt]] = {
    "bce": {},
    "tce": {
        "eps_max": _prob(0.2, "the largest share of positives dropped", hi_open=True),
        "num_gradual": _span("1ep", "steps, epochs ('1ep') or share of the run ('30%') of the ramp to eps_max"),
    },
    "rce": {"beta": Opt("float", 0.2, "reweighting exponent", 0)},
    "lcd": dict(_LCD),
    "lcd_re": dict(_LCD),
    "bootstrap_soft": {
        "lam": _prob(0.95, "weight of the observed label in the target"),
        "attach_target": Opt("bool", False, "backpropagate through the predicted part"),
    },
    "bootstrap_hard": {"lam": _prob(0.8, "weight of the observed label in the target")},
    "dart": {
        "t_i": _span(0, "steps, epochs or share of the run where the identification ramp starts"),
        "t_m": _span("1ep", "steps, epochs ('1ep') or share of the run ('30%') until tau reaches tau_m"),
        "tau_m": _prob(0.04, "the largest share of positives identified as noisy"),
        "r": _prob(0.5, "share of the identified positives relabelled 0 (the rest are dropped)"),
    },
    "deca": dict(_DECA),
    "deca_p": {
        **_DECA,
        "pretrain_steps": _steps(None, "BCE steps that pre-train the prior; null: to early stopping"),
        "pretrain_max_epochs": Opt("float", 5.0, "most epochs of the prior's pre-training", 0, lo_open=True),
        "pretrain_patience": Opt(
            "int", 1, "evaluations without a better validation AUC before the prior's pre-training stops", 1
        ),
        "prior_cache": Opt("bool", True, "score the training rows with the frozen prior once"),
        "prior_checkpoint": Opt("str", None, "a model file to load as the prior instead", none_ok=True),
    },
    "observation": dict(_OBSERVATION),
    "observation_ids": {
        **_OBSERVATION,
        "id_noise_dim": Opt("int", 8, "width of the user x item noise MF tables (dim - 1 factors plus a bias)", 2),
        "id_noise_init": Opt(
            "float", 0.02, "initial click / miss rate of the user x item channels", 0, 0.5, True, True
        ),
        "user_feature": Opt("str", "user_id", "sparse feature that identifies the user (MF tables)"),
        "item_feature": Opt("str", "item_id", "sparse feature that identifies the item (MF tables)"),
    },
    "observation_tce": {
        **_OBSERVATION,
        "eps_max": _prob(0.1, "largest share of positives dropped by the T-CE part", hi_open=True),
    },
}

_FIRST_ORDER = Opt(
    "str",
    "table",
    "first-order weights in their own tables (table) or in the embedding tables (fused)",
    choices=("table", "fused"),
)

#: model name -> its options (``model.params``).
MODEL_OPTIONS: Dict[str, Dict[str, Opt]] = {
    "dlrm": {
        "dense_arch": Opt("ints", [64], "bottom MLP widths"),
        "over_arch": Opt("ints", [128, 64, 1], "top MLP widths (last 1)"),
    },
    "dcnv2": {
        "cross_layers": Opt("int", 3, "cross layers", 1),
        "low_rank": Opt("int", None, "rank of the low-rank cross net; null: full rank", 1, none_ok=True),
        "structure": Opt("str", "stacked", "stacked or parallel", choices=("stacked", "parallel")),
        "mlp": Opt("ints", [128, 64], "deep MLP widths"),
        "dropout": _prob(0.0, "dropout in the MLP", hi_open=True),
    },
    "deepfm": {
        "mlp": Opt("ints", [128, 64], "deep MLP widths"),
        "dropout": _prob(0.0, "dropout", hi_open=True),
        "first_order": _FIRST_ORDER,
    },
    "fm": {"first_order": _FIRST_ORDER},
    "widedeep": {
        "mlp": Opt("ints", [128, 64], "deep MLP widths"),
        "dropout": _prob(0.0, "dropout", hi_open=True),
        "first_order": _FIRST_ORDER,
    },
}

#: denoisers that read the schema's context features in their own tower (``NEEDS.context_tower``).
CONTEXT_TOWER_DENOISERS: Tuple[str, ...] = ("observation", "observation_ids", "observation_tce")
#: models that need at least one dense feature (models/__init__.py's table).
DENSE_MODELS: Tuple[str, ...] = ("dlrm",)

SHARDING_TYPES: Tuple[str, ...] = ("table_wise", "column_wise", "row_wise", "data_parallel")
DEVICES: Tuple[str, ...] = ("auto", "cpu", "cuda")
PRESETS: Tuple[str, ...] = ("recommended", "lcd", "dart")  # trainer/config/presets.py
DENSE_OPTIMIZERS: Tuple[str, ...] = ("adam", "adamw", "adagrad", "sgd")
SPARSE_OPTIMIZERS: Tuple[str, ...] = ("rowwise_adagrad", "adagrad", "adam", "sgd")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_value(where: str, v: Any, o: Opt) -> Any:
    """``v`` as ``o`` accepts it (an int where a float belongs becomes a float), or a :class:`UsageError`
    whose one line starts with ``where`` (e.g. ``-p eps_max=abc``) and says what is accepted.
    """
    if v is None:
        if o.none_ok:
            return None
        raise UsageError(f"{where}: a value is required ({_accepts(o)})")
    if o.kind == "int" and not _is_int(v):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise UsageError(f"{where}: expected {_accepts(o)}")
    elif o.kind == "float":
        if not _is_num(v):
            raise UsageError(f"{where}: expected {_accepts(o)}")
        v = float(v)
    elif o.kind == "bool" and not isinstance(v, bool):
        raise UsageError(f"{where}: expected true or false")
    elif o.kind == "str" and (not isinstance(v, str) or (o.choices and v not in o.choices)):
        raise UsageError(f"{where}: expected {_accepts(o)}{did_you_mean(v, o.choices, quote=True)}")
    elif o.kind == "span":
        if not (_is_int(v) or (isinstance(v, float) and v.is_integer()) or (isinstance(v, str) and _SPAN.match(v))):
            raise UsageError(f"{where}: expected {_accepts(o)}")
        return int(v) if _is_num(v) and v >= 0 else _span_check(where, v, o)
    elif o.kind == "ints" and not (isinstance(v, (list, tuple)) and all(_is_int(x) and x > 0 for x in v)):
        raise UsageError(f"{where}: expected a list of positive integers such as [64, 32]")
    if o.kind == "ints":
        return v
    if _is_num(v):
        bad = (o.lo is not None and (v < o.lo or (o.lo_open and v == o.lo))) or (
            o.hi is not None and (v > o.hi or (o.hi_open and v == o.hi))
        )
        if bad:
            raise UsageError(f"{where}: out of range, expected {_accepts(o)}")
        if o.kind == "int" and v % o.multiple_of:
            raise UsageError(f"{where}: expected a multiple of {o.multiple_of} ({o.help})")
    return v


_SPAN = re.compile(r"^\s*(\d+\.?\d*|\.\d+)\s*(ep|epoch|epochs|%)\s*$|^\s*\d+\s*$")


def _span_check(where: str, v: Any, o: Opt) -> Any:
    if _is_num(v):  # a negative step count
        raise UsageError(f"{where}: out of range, expected {_accepts(o)}")
    return v


def _accepts(o: Opt) -> str:
    kind = {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "str": "a string",
        "ints": "a list of positive integers",
        "span": "steps (1000), epochs ('1ep') or a share of the run ('30%')",
    }[o.kind]
    if o.choices:
        kind = f"one of {', '.join(o.choices)}"
    iv = o.interval()
    return f"{kind}{' in ' + iv if iv else ''}{' or null' if o.none_ok else ''} ({o.help})"


def check_choice(where: str, v: Any, choices: Sequence[str], none_ok: bool = False) -> None:
    """Refuse ``v`` unless it is one of ``choices`` (or ``None`` with ``none_ok``), with the nearest choice.

    Args:
        where: the key or flag the value was given to (``optim.decay``).
        v: the value.
        choices: the accepted strings.
        none_ok: ``None`` (unset) is accepted too.

    Raises:
        UsageError: ``optim.decay='cosin': expected one of none, linear, cosine; did you mean 'cosine'?``.
    """
    if v is None and none_ok:
        return
    if v not in choices:
        unset = " (or unset)" if none_ok else ""
        raise UsageError(f"{where}={v!r}: expected one of {', '.join(choices)}{unset}{did_you_mean(v, choices, True)}")


def check_denoiser_params(name: str, params: Mapping[str, Any], flag: str = "-p") -> Dict[str, Any]:
    """Check ``params`` of denoiser ``name``; return them converted (ints where floats belong become floats).

    An option the catalog does not list for ``name`` is refused (tests/trainer/config/test_options.py ties the
    catalog to the constructors); a denoiser not in :data:`DENOISER_OPTIONS` passes unchecked here: the
    registry decides after the imports.
    """
    if name not in DENOISER_OPTIONS:
        return dict(params)
    accepted = DENOISER_OPTIONS[name]
    for k, v in params.items():
        if k not in accepted:
            raise UsageError(
                f"{flag} {k}={v}: {name} has no option {k!r}; its options: {', '.join(accepted) or 'none'}"
                + did_you_mean(k, accepted, quote=True)
            )
    return {
        k: check_value(f"{flag} {k}={v}: {name}'s {k}", v, accepted[k]) if k in accepted else v
        for k, v in params.items()
    }


def check_model_params(name: str, params: Mapping[str, Any]) -> None:
    """Check ``model.params`` of model ``name`` against :data:`MODEL_OPTIONS` (a model not listed passes).

    Args:
        name: the model (``model.name``).
        params: its options.

    Raises:
        UsageError: an unknown option (with the nearest name) or a value out of its range.
    """
    if name not in MODEL_OPTIONS:
        return
    accepted = MODEL_OPTIONS[name]
    for k, v in params.items():
        if k not in accepted:
            raise UsageError(
                f"model.params.{k}: {name} has no option {k!r}; its options: {', '.join(accepted) or 'none'}"
                + did_you_mean(k, accepted, quote=True)
            )
        check_value(f"model.params.{k}={v}: {name}'s {k}", v, accepted[k])


def describe(table: Mapping[str, Mapping[str, Opt]]) -> str:
    """``name: opt=default [interval], ...`` lines for ``--help``."""
    import textwrap

    lines = []
    for name, opts in table.items():
        body = ", ".join(f"{k}={o.default}{' ' + o.interval() if o.interval() else ''}" for k, o in opts.items())
        lines += textwrap.wrap(
            body or "(no options)",
            width=100,
            initial_indent=f"  {name:15s} ",
            subsequent_indent=" " * 18,
            break_on_hyphens=False,
        )
    return "\n".join(lines)

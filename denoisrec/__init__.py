"""denoisrec: CTR training on TorchRec that learns from noisy implicit feedback; the Python entry point.

``denoisrec.train(...)`` is ``denoisrec train ...`` as a function: the same options (a preset, the data, the
model, the denoiser and its options, any ``section.key=value``), the same checks, the same outputs in ``out``,
and the run's summary returned (what ``<out>/summary.json`` holds). The rest of the API lives in the
subpackages: :mod:`denoisrec.trainer` (``Config``, ``DataSchema``, ``predict_file``, ``export_serving``, ...),
:mod:`denoisrec.models`, :mod:`denoisrec.denoisers`, :mod:`denoisrec.launch` (the torchx components).
Importing ``denoisrec`` imports no torch.

Example (a notebook cell; ``denoisrec gen-data --preset tiny --out data/tiny`` first)::

    import denoisrec

    summary = denoisrec.train(preset="recommended", data="data/tiny", out="runs/nb", epochs=1)
    summary["metrics"]["test_clean"]["auc"]      # clean-test AUC of the exported model
    bce = denoisrec.train(data="data/tiny", out="runs/nb-bce", denoiser="bce", epochs=1,
                          set=["optim.lr=3e-4"])
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Union

if TYPE_CHECKING:
    from denoisrec.trainer.config.tree import Config

__all__ = ["train"]


def train(
    config: Union["Config", str, None] = None,
    *,
    preset: Optional[str] = None,
    data: Optional[str] = None,
    out: Optional[str] = None,
    model: Optional[str] = None,
    denoiser: Optional[str] = None,
    params: Optional[Mapping[str, Any]] = None,
    epochs: Optional[int] = None,
    steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    seed: Optional[int] = None,
    resume: Optional[str] = None,
    set: Sequence[str] = (),  # noqa: A002 - the command line's --set
) -> Dict[str, Any]:
    """Train and evaluate one model as ``denoisrec train`` does; return the run's summary.

    Args:
        config: a YAML config file (``--config``) or a :class:`denoisrec.trainer.Config`; default: the defaults.
        preset: a named set-up (``--preset``): ``recommended`` (the observation model, 3 epochs; for impression
            logs with context columns), ``lcd``, ``dart``; see ``denoisrec train --help``.
        data: the dataset directory (``--data``; default ``data/small``).
        out: the run's output directory (``--out``; default ``runs/default``).
        model: ``dlrm``, ``dcnv2``, ``deepfm``, ``fm`` or ``widedeep`` (``--model``).
        denoiser: the loss layer (``--denoiser``), e.g. ``bce``, ``tce``, ``observation``.
        params: the denoiser's options (``-p NAME=VALUE``), e.g. ``{"eps_max": 0.2}``.
        epochs: passes over the train split (``--epochs``).
        steps: a step budget (``--steps``).
        batch_size: rows per rank per step (``--batch-size``).
        seed: ``run.seed``.
        resume: ``auto``, ``never`` or a checkpoint directory (``--resume``).
        set: any config key, e.g. ``["optim.lr=3e-4", "run.eval_every=100"]`` (``--set``).

    Returns:
        The summary (identical on every rank under torchrun): ``metrics`` per split (``valid``, ``test_clean``,
        ...: ``auc``, ``gauc``, ``logloss``, ``ne``, ``ece``), ``steps``, throughput, the resolved ``config``.

    Raises:
        denoisrec.trainer.UsageError: a value is not accepted (one message naming the option).
        denoisrec.trainer.DataError: the data does not match its schema.
        OSError: a missing dataset directory, an unreadable file.
    """
    from denoisrec.trainer.cli import build_parser
    from denoisrec.trainer.commands.train import train_from_args
    from denoisrec.trainer.config.tree import Config

    argv = ["train"]
    flags = {
        "--config": config if isinstance(config, str) else None,
        "--preset": preset,
        "--data": data,
        "--out": out,
        "--model": model,
        "--denoiser": denoiser,
        "--epochs": epochs,
        "--steps": steps,
        "--batch-size": batch_size,
        "--seed": seed,
        "--resume": resume,
    }
    for flag, value in flags.items():
        if value is not None:
            argv += [flag, str(value)]
    if params:
        argv += ["-p", *(f"{k}={json.dumps(v)}" for k, v in params.items())]
    if set:
        argv += ["--set", *set]
    args = build_parser().parse_args(argv)
    base = config if isinstance(config, Config) else None
    summary = train_from_args(args, base)
    assert summary is not None  # no --print-config here
    return summary

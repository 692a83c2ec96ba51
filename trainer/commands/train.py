"""``denoisrec train``: flags → :class:`~denoisrec.trainer.config.tree.Config` → :func:`~denoisrec.trainer.train.train`.

``python -m denoisrec.trainer [train options]`` (the form torchrun and torchx start) is this command.
Building the parser imports no torch: the options are checked against :mod:`denoisrec.trainer.config.options`
first, and the trainer is imported only to run.

Example::

    denoisrec train --data data/small --denoiser tce -p eps_max=0.2 --set optim.lr=3e-4
"""

from __future__ import annotations

import argparse
import copy
import os
from typing import Any, Dict, Optional

from denoisrec.trainer.config.tree import Config, apply_overrides, parse_params

HELP = "train and evaluate a model (one process, or under torchrun/torchx)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The train options; ``--set`` reaches any config key."""
    from denoisrec.trainer.config.options import DEVICES, MODEL_OPTIONS, PRESETS, SHARDING_TYPES

    p.add_argument("--config", metavar="FILE", help="YAML config file: any part of the tree --print-config shows")
    p.add_argument(
        "--preset",
        metavar="NAME",
        help=f"a named set-up: {', '.join(PRESETS)} (applied after --config, before the other flags; "
        "which is for which data: below)",
    )
    p.add_argument("--data", metavar="DIR", help="dataset directory (data.path; default: data/small)")
    p.add_argument("--out", metavar="DIR", help="run output directory (run.out; default: runs/default)")
    p.add_argument("--model", metavar="NAME", help=f"{' | '.join(MODEL_OPTIONS)} (model.name; default: dlrm)")
    p.add_argument(
        "--denoiser",
        metavar="NAME",
        help="the loss layer (denoiser.name; default: bce); names and their -p options below",
    )
    p.add_argument(
        "-p",
        "--denoiser-param",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="denoiser option(s) (denoiser.params.NAME), repeatable: -p a=1 b=2 or -p a=1 -p b=2",
    )
    p.add_argument(
        "--batch-size", type=int, metavar="N", help="rows per rank per step (data.batch_size; default: 2048)"
    )
    p.add_argument("--epochs", type=int, metavar="N", help="passes over the train split (run.epochs; default: 1)")
    p.add_argument("--steps", type=int, metavar="N", help="step budget (run.max_steps; default: none)")
    p.add_argument("--seed", type=int, metavar="N", help="run.seed (default: 0)")
    p.add_argument(
        "--sharding",
        metavar="TYPE",
        help=f"{' | '.join(SHARDING_TYPES)} for every table "
        "(sharding.sharding_type; default: the planner chooses; row_wise on GPU only)",
    )
    p.add_argument("--device", metavar="DEV", help=f"{' | '.join(DEVICES)} (run.device; default: auto)")
    p.add_argument(
        "--baseline", metavar="RUN", help="run directory whose summary.json is the RealImp baseline (run.baseline)"
    )
    p.add_argument(
        "--resume",
        metavar="WHAT",
        help="auto (default: <out>/checkpoints/latest if present), never, or a checkpoint directory (run.resume)",
    )
    p.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, e.g. --set optim.lr=3e-4 run.eval_every=100 (repeatable; under torchx "
        "give them as one list)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="check the options, print the resolved config tree (every key, with its value) and exit",
    )


def epilog() -> str:
    """The denoisers, the models and their options, below ``denoisrec train --help``."""
    from denoisrec.trainer.config.options import DENOISER_OPTIONS, MODEL_OPTIONS, describe
    from denoisrec.trainer.config.presets import describe_presets

    return (
        "presets (--preset NAME, or preset: NAME in a --config file):\n"
        + describe_presets()
        + "\n\ndenoisers and their -p options (default [accepted range]):\n"
        + describe(DENOISER_OPTIONS)
        + "\n\nmodels and their options (--set model.params.NAME=VALUE):\n"
        + describe(MODEL_OPTIONS)
        + "\n\nevery config key with its default: denoisrec train --print-config\n"
        "mistakes exit 2 (usage) or 1 (data) with a one-line message naming the option"
    )


def config_from_args(a: argparse.Namespace, base: Optional[Config] = None) -> Config:
    """``--config`` file (or ``base``, a config built in Python), then ``--preset``, then the flags, then
    ``--set`` (later wins).
    """

    def flags_and_sets(cfg: Config) -> Config:
        direct = {
            "data.path": a.data,
            "run.out": a.out,
            "model.name": a.model,
            "denoiser.name": a.denoiser,
            "data.batch_size": a.batch_size,
            "run.epochs": a.epochs,
            "run.max_steps": a.steps,
            "run.seed": a.seed,
            "sharding.sharding_type": a.sharding,
            "run.device": a.device,
            "run.baseline": a.baseline,
            "run.resume": a.resume,
        }
        for key, value in direct.items():
            if value is not None:
                section, name = key.split(".")
                setattr(getattr(cfg, section), name, value)
        cfg.denoiser.params.update(parse_params(a.denoiser_param))
        return apply_overrides(cfg, a.set)

    def load() -> Config:
        if base is not None:
            return copy.deepcopy(base)
        return Config.load(a.config) if a.config else Config()

    if a.preset:
        from denoisrec.trainer.config.presets import apply_preset

        cfg = load()
        cfg.model.name = flags_and_sets(load()).model.name  # the preset maps onto the final model's options
        probe = Config()
        probe.denoiser.name = UNSET  # does a flag name a denoiser (one that may replace the preset's)?
        named = flags_and_sets(probe).denoiser.name
        apply_preset(cfg, a.preset, denoiser=None if named == UNSET else named)
        return flags_and_sets(cfg)
    return flags_and_sets(load())


UNSET = "<not named by a flag>"


def run(a: argparse.Namespace) -> int:
    """Check every option, then train (or print the config with ``--print-config``)."""
    train_from_args(a)
    return 0


def train_from_args(a: argparse.Namespace, base: Optional[Config] = None) -> Optional[Dict[str, Any]]:
    """The command's work: the config checked before torch is imported, then the run; its summary (``None``
    with ``--print-config``). :func:`denoisrec.train` calls it too.
    """
    from denoisrec.trainer.config.check import check_config

    cfg = check_config(config_from_args(a, base))  # every value checked before torch is imported
    if a.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
        return None
    path = cfg.data.path
    if isinstance(path, str) and "://" not in path and not os.path.exists(path):
        raise FileNotFoundError(2, "no such dataset directory (--data / data.path; denoisrec gen-data makes one)", path)
    from denoisrec.trainer.distributed.env import shutdown
    from denoisrec.trainer.train import train

    try:
        return train(cfg)
    finally:
        shutdown()

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
from typing import Any, Dict, Optional, Tuple

from denoisrec.trainer.config.options import DEVICES, MODEL_OPTIONS, SHARDING_TYPES
from denoisrec.trainer.config.tree import Config, about, apply_overrides, parse_params

HELP = "train and evaluate a model (one process, or under torchrun/torchx)"


#: flag -> (config key it sets, metavar, help; ``None``: the field's own). The default shown is the field's.
FLAGS: Dict[str, Tuple[str, str, Optional[str]]] = {
    "--data": ("data.path", "DIR", None),
    "--out": ("run.out", "DIR", None),
    "--model": ("model.name", "NAME", " | ".join(MODEL_OPTIONS)),
    "--denoiser": ("denoiser.name", "NAME", "the loss layer; names and their -p options below"),
    "--batch-size": ("data.batch_size", "N", None),
    "--epochs": ("run.epochs", "N", None),
    "--steps": ("run.max_steps", "N", None),
    "--seed": ("run.seed", "N", None),
    "--sharding": (
        "sharding.sharding_type",
        "TYPE",
        " | ".join(SHARDING_TYPES) + " for every table (row_wise on GPU only)",
    ),
    "--device": ("run.device", "DEV", " | ".join(DEVICES)),
    "--baseline": ("run.baseline", "RUN", None),
    "--resume": ("run.resume", "WHAT", "auto (<out>/checkpoints/latest if present), never, or a checkpoint directory"),
}


def flag_help(key: str, text: Optional[str] = None) -> str:
    """A flag's help built from its config field: ``"passes over the train split (run.epochs; default: 1)"``.

    Args:
        key: the ``section.field`` the flag sets.
        text: what the flag says before the parenthesis; default: the field's own help.

    Returns:
        The help line, with the field's default (or what its ``None`` means).
    """
    info = about(key)
    default = info["unset"] if info["default"] is None else info["default"]
    return f"{text or info['help']} ({key}; default: {default})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The train options; ``--set`` reaches any config key."""
    from denoisrec.trainer.config.options import PRESETS

    p.add_argument("--config", metavar="FILE", help="YAML config file: any part of the tree --print-config shows")
    p.add_argument(
        "--preset",
        metavar="NAME",
        help=f"a named set-up: {', '.join(PRESETS)} (applied after --config, before the other flags; "
        "which is for which data: below)",
    )
    for flag, (key, metavar, text) in FLAGS.items():
        numeric = about(key)["type"] in (int, Optional[int])  # --batch-size abc: refused by argparse, with the flag
        p.add_argument(flag, metavar=metavar, help=flag_help(key, text), type=int if numeric else str)
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
        direct = {key: getattr(a, flag[2:].replace("-", "_")) for flag, (key, _, _) in FLAGS.items()}
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
    from denoisrec.trainer.distributed.peers import as_peer_failure
    from denoisrec.trainer.train import train

    try:
        return train(cfg)
    except Exception as e:  # before shutdown(): a peer's echo of this failure reads the failed rank from the store
        raised = as_peer_failure(e, int(os.environ.get("RANK", "0")))
        if raised is e:
            raise
        raise raised from e
    finally:
        shutdown()

"""Presets: ``--preset recommended`` is ``make train``'s run, from the command line and from a YAML file alike."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

from denoisrec.trainer.cli import build_parser
from denoisrec.trainer.commands.train import config_from_args
from denoisrec.trainer.config.check import check_config
from denoisrec.trainer.config.tree import Config

ROOT = Path(__file__).resolve().parents[3]


def resolved(argv: List[str]) -> dict:
    args = build_parser().parse_args(["train", *argv])
    return check_config(config_from_args(args)).to_dict()


def make_train_args(*variables: str) -> List[str]:
    """The train options ``make train`` passes (its dry run's ``--print-config`` line)."""
    proc = subprocess.run(
        ["make", "-n", "-s", "train", *variables], cwd=ROOT, capture_output=True, text=True, check=True
    )
    line = next(x for x in proc.stdout.splitlines() if "denoisrec train " in x and "--print-config" in x)
    words = shlex.split(line.split("denoisrec train ", 1)[1].split(" --print-config", 1)[0])
    return words


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_preset_recommended_is_make_trains_run() -> None:
    make = resolved(make_train_args())
    cli = resolved(["--preset", "recommended", "--data", "data/small"])
    assert make["run"].pop("overwrite") is True and cli["run"].pop("overwrite") is False  # make's one addition
    assert make == cli
    assert cli["denoiser"] == {
        "name": "observation",
        "params": {"form": "examination", "tower_warmup": "25%", "rates_lr_scale": 50},
    }
    assert cli["run"]["epochs"] == 3 and Config().run.epochs == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_train_denoiser_replaces_the_presets_denoiser_and_its_options() -> None:
    for argv in (make_train_args("DENOISER=bce"), make_train_args("ARGS=--denoiser bce")):
        cfg = resolved(argv)
        assert cfg["denoiser"] == {"name": "bce", "params": {}} and cfg["run"]["epochs"] == 3
    cfg = resolved(make_train_args("EPOCHS=1", "ARGS=--denoiser tce -p eps_max=0.2"))
    assert cfg["denoiser"] == {"name": "tce", "params": {"eps_max": 0.2}} and cfg["run"]["epochs"] == 1


def test_a_yaml_preset_is_the_command_lines(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("preset: recommended\ndata:\n  path: data/small\n")
    assert resolved(["--config", str(tmp_path / "run.yaml")]) == resolved(
        ["--preset", "recommended", "--data", "data/small"]
    )
    # the file's own values win over its preset; another denoiser drops the preset's options
    (tmp_path / "bce.yaml").write_text("preset: recommended\nrun:\n  epochs: 2\ndenoiser:\n  name: bce\n")
    cfg = resolved(["--config", str(tmp_path / "bce.yaml")])
    assert cfg["denoiser"] == {"name": "bce", "params": {}} and cfg["run"]["epochs"] == 2
    # flags still win over a preset
    cfg = resolved(["--preset", "recommended", "--epochs", "1", "-p", "rates_lr_scale=10"])
    assert cfg["run"]["epochs"] == 1 and cfg["denoiser"]["params"]["rates_lr_scale"] == 10


def test_unknown_preset_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from denoisrec.trainer.cli import main

    assert main(["train", "--preset", "recomended", "--print-config"]) == 2
    assert "--preset 'recomended': unknown preset, expected one of recommended, lcd, dart" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("preset: nope\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml"), "--print-config"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_train_help_says_which_preset_is_for_which_data(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = capsys.readouterr().out
    assert "recommended: --denoiser observation -p form=examination tower_warmup=25% rates_lr_scale=50" in out
    assert "for: impression logs with context columns" in out

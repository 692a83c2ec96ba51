"""The reference rows of the quality benches (trainer/bench/references.py): each sets what its name says."""

from __future__ import annotations

from pathlib import Path

import pytest

from denoisrec.trainer.bench.references import REFERENCES, set_reference
from denoisrec.trainer.config.tree import Config


def _cfg(data: Path) -> Config:
    cfg = Config()
    cfg.data.path = str(data)
    cfg.denoiser.name, cfg.denoiser.params = "tce", {"beta": 0.5}  # a method the rows must replace
    return cfg


@pytest.mark.parametrize(
    "name, label, context",
    [("clean", "clean_label", None), ("clean_no_context", "clean_label", "withhold"), ("withheld", None, "withhold")],
)
def test_bce_rows_set_label_and_context(tmp_path: Path, name: str, label: str, context: str) -> None:
    cfg = _cfg(tmp_path)
    before = Config()
    assert set_reference(cfg, name)
    assert (cfg.denoiser.name, cfg.denoiser.params) == ("bce", {})
    assert cfg.data.train_label == (label or before.data.train_label)
    assert cfg.model.context == (context or before.model.context)


def test_oracle_row_needs_the_true_noise_model(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert not set_reference(cfg, "oracle_noise", {"tower_warmup": "25%"})
    assert cfg.denoiser.name == "tce"  # unchanged where the row does not apply
    (tmp_path / "noise_model.json").write_text("{}")
    assert set_reference(cfg, "oracle_noise", {"tower_warmup": "25%", "noise_file": "other.json"})
    assert cfg.denoiser.name == "observation"
    assert cfg.denoiser.params == {
        "form": "examination",
        "tower_warmup": "25%",
        "noise_file": str(tmp_path / "noise_model.json"),
    }


def test_unknown_row_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reference row 'nope': expected one of " + ", ".join(REFERENCES)):
        set_reference(_cfg(tmp_path), "nope")

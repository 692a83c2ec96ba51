"""``denoisrec export`` writes one self-consistent folder per format, atomically.

The docs' two export commands in a row leave two folders, each whose ``serving.json`` describes the artefact
beside it (the calibrated TorchScript file with its ``calibrator.json``; the ``.pt2`` without one), and a
re-export that fails midway (after its new ``serving.json`` was written, or inside the artefact's save) leaves
the previous folder byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict

import pytest
import torch

import denoisrec.trainer.serving.export as serving
from denoisrec.models import ModelSpec, save_model_file
from denoisrec.trainer.cli import main
from denoisrec.trainer.data.schema import DataSchema


def tree_hash(root: Path) -> Dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture()
def run(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model file; its calibrator is a fixed one (fitting is test_calibration.py's subject, not this file's)."""
    from denoisrec.trainer.serving.calibration import Platt

    fitted = {"a": 2.0, "b": -0.5, "valid": "v", "rows": 1, "valid_logloss_before": 0.7, "valid_logloss_after": 0.6}
    monkeypatch.setattr(serving, "_fit_on_valid", lambda *a: (Platt(2.0, -0.5, {"fitted_on": "v"}), fitted))
    schema = DataSchema.load(str(tiny_data))
    spec = ModelSpec(
        "deepfm", [(f.name, f.num_embeddings) for f in schema.sparse], len(schema.dense), 8, params={"mlp": [8]}
    )
    torch.manual_seed(0)
    out = tmp_path / "run"
    extra = {"config": {"data": {"path": str(tiny_data)}}}
    save_model_file(str(out / "model.pt"), spec, spec.build(torch.device("cpu")).state_dict(), schema.to_dict(), extra)
    return out


def spec_of(folder: Path) -> dict:
    return json.loads((folder / "serving.json").read_text())


def test_both_export_commands_leave_one_consistent_folder_each(run: Path, capsys: pytest.CaptureFixture) -> None:
    # an export of the old flat layout: it would contradict the new folders
    (run / "serving").mkdir()
    (run / "serving" / "serving.json").write_text('{"artefact": "exported-program"}')
    (run / "serving" / "calibrator.json").write_text("{}")
    assert main(["export", str(run), "--format", "torchscript", "--calibrate", "platt"]) == 0
    assert main(["export", str(run), "--format", "exported-program"]) == 0
    printed = capsys.readouterr().out
    assert "removed" in printed and sorted(p.name for p in (run / "serving").iterdir()) == [
        "exported-program",
        "torchscript",
    ]
    ts, ep = run / "serving" / "torchscript", run / "serving" / "exported-program"
    assert sorted(p.name for p in ts.iterdir()) == ["calibrator.json", "serving.json", "serving.pt"]
    assert sorted(p.name for p in ep.iterdir()) == ["serving.json", "serving.pt2"]
    cal = json.loads((ts / "calibrator.json").read_text())
    assert spec_of(ts)["artefact"] == "torchscript" and spec_of(ts)["calibrator"]["a"] == pytest.approx(cal["a"])
    assert spec_of(ep)["artefact"] == "exported-program" and spec_of(ep)["calibrator"] is None
    extra = {"serving.json": ""}
    torch.jit.load(str(ts / "serving.pt"), _extra_files=extra)
    assert json.loads(extra["serving.json"]) == spec_of(ts)  # the sidecar is the artefact's own description


@pytest.mark.parametrize("where", ["after_spec", "inside_save"])
def test_a_re_export_killed_midway_leaves_the_previous_folder_unchanged(
    run: Path, where: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert main(["export", str(run), "--format", "torchscript", "--calibrate", "platt"]) == 0
    before = tree_hash(run / "serving")
    real_save = serving._save

    def killed_save(module, fmt, path, spec_json, probe):  # type: ignore[no-untyped-def]
        if where == "inside_save":
            Path(path).write_bytes(b"half an artefact")
        raise KeyboardInterrupt("killed")  # not an Exception: nothing may catch it on the way out

    def killed_load(path):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt("killed")

    if where == "inside_save":
        monkeypatch.setattr(serving, "_save", killed_save)
    else:  # the new serving.json and artefact are written; killed at the self-check
        monkeypatch.setattr(serving, "load_artefact", killed_load)
    with pytest.raises(KeyboardInterrupt):
        serving.export_serving(str(run), "torchscript")  # uncalibrated: a different serving.json
    assert tree_hash(run / "serving") == before
    assert [p.name for p in (run / "serving").iterdir()] == ["torchscript"]  # no temporary folder left
    monkeypatch.setattr(serving, "_save", real_save)


def test_export_refuses_an_out_folder_with_other_files(run: Path, tmp_path: Path) -> None:
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds other files \\(notes.txt\\)"):
        serving.export_serving(str(run), "torchscript", out=str(other))
    assert (other / "notes.txt").read_text() == "keep me"

"""The edges a new user trips on first (issue 25 item 9), each through the command line as the user types it.

``gen-data`` over an existing dataset, ``validate`` of a folder that does not exist, ``predict`` handed a run's
``summary.json``, and the run environment that ``summary.json`` records.

Example::

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/trainer/test_first_run_edges.py
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict

import pytest

from denoisrec.trainer.cli import main
from denoisrec.trainer.commands.gen_data import DATASET_ENTRIES


def _tree(root: Path) -> Dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_gen_data_refuses_an_existing_dataset_and_leaves_it_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "ds"
    assert main(["gen-data", "--preset", "tiny", "--rows", "600", "--out", str(out), "--quiet"]) == 0
    before = _tree(out)
    capsys.readouterr()
    assert main(["gen-data", "--preset", "tiny", "--rows", "900", "--seed", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"--out {out}: already holds a dataset" in err and "--overwrite" in err
    assert _tree(out) == before


def test_gen_data_writes_only_what_overwrite_clears(tmp_path: Path) -> None:
    """Everything the generator writes is listed as the dataset's, so ``--overwrite`` deletes all of it."""
    out = tmp_path / "ds"
    assert main(["gen-data", "--preset", "tiny", "--rows", "600", "--out", str(out), "--quiet"]) == 0
    assert set(os.listdir(out)) <= set(DATASET_ENTRIES)
    assert (out / "valid_random").is_dir() and (out / "noise_truth.json").is_file()


def test_gen_data_overwrite_leaves_no_split_of_the_old_dataset(tmp_path: Path) -> None:
    """A new dataset without ``valid_random`` must not keep the old one's (a selection would read it)."""
    out = tmp_path / "ds"
    assert main(["gen-data", "--preset", "tiny", "--rows", "600", "--out", str(out), "--quiet"]) == 0
    assert (out / "valid_random").is_dir() and (out / "noise_model.json").is_file()
    args = ["gen-data", "--preset", "tiny", "--rows", "600", "--random-rows", "0", "--noise", "clickbait"]
    assert main(args + ["--out", str(out), "--overwrite", "--quiet"]) == 0
    assert not (out / "valid_random").exists() and not (out / "noise_model.json").exists()
    assert json.loads((out / "noise_truth.json").read_text())["family"] == "clickbait"
    assert "valid_random" not in json.loads((out / "stats.json").read_text())


def test_validate_a_missing_folder_says_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    nope = tmp_path / "nope"
    assert main(["validate", str(nope)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{nope}: no such dataset folder" in err and "gen-data" in err


def test_predict_with_a_summary_json_is_not_a_model_file(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    summary = tmp_path / "run" / "summary.json"
    summary.parent.mkdir()
    summary.write_text(json.dumps({"model_file": str(summary.parent / "model.pt"), "metrics": {}}))
    args = ["predict", "--model-file", str(summary), "--data", str(tiny_data / "test"), "--out", str(tmp_path / "s")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"denoisrec predict: error: {summary}: not a denoisrec model file")
    assert "\n" not in err and "weights_only" not in err and "model.pt" in err
    assert not (tmp_path / "s").exists()


def test_run_environment_names_torchrec_fbgemm_and_the_commit() -> None:
    from denoisrec.trainer.outputs.run_summary import environment, git_commit

    env = environment()
    import fbgemm_gpu  # noqa: F401  (installed: the versions must be found, not None)
    import torchrec  # noqa: F401

    assert env["torchrec"] and env["fbgemm_gpu"] and env["torch"]
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / ".git").exists():
        pytest.skip("not run from a git checkout")
    assert env["git_commit"] == git_commit(str(checkout))
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", env["git_commit"] or "")

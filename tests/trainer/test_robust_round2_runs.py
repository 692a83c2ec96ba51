"""Whole runs of round two (issue 26): ``run.nonfinite=skip`` through a burst of skipped steps, resumes that
continue another dataset, other options or another plan, and a full disk mid-run.

One process (tests/dist/robust_round2.py) runs every scenario, each training in a forked child; this side
asserts on what it wrote.
"""

from pathlib import Path
from typing import Any, Dict

import pytest
import torch
from conftest import run_dist_driver


@pytest.fixture(scope="module")
def round2(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    return run_dist_driver("robust_round2", tiny_data, tmp_path_factory.mktemp("round2"))


def _state(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.dist
def test_skip_trains_through_a_burst_logged_and_checkpointed_at_skipped_steps(round2: Dict[str, Any]) -> None:
    s = round2["skip"]
    assert s["ref_error"] is None and s["first_error"] is None and s["second_error"] is None, s
    ref, resumed = s["ref"], s["second"]
    assert ref["steps"] == resumed["steps"] == 24
    assert ref["nonfinite_skipped_steps"] >= 4  # five poisoned rows a epoch, in 2 epochs
    assert resumed["nonfinite_skipped_steps"] == ref["nonfinite_skipped_steps"]  # counted over both launches
    assert "with a non-finite loss (run.nonfinite=skip)" in s["ref_output"]
    # log lines of windows that hold only a skipped step: no loss, the count
    assert s["skipped_records"] and all(r["loss"] is None and r["skipped_steps"] == 1 for r in s["skipped_records"])
    assert all(p is None for p in s["after"]["problems"])  # a checkpoint after every step, skipped ones too
    a, b = _state(round2["root"] / "skip-ref" / "model.pt"), _state(round2["root"] / "skip" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.dist
def test_a_resume_refuses_other_data_and_options_and_finds_a_changed_digit(round2: Dict[str, Any]) -> None:
    i = round2["identity"]
    root = round2["root"]
    assert (
        i["other_data"].startswith(f"CheckpointError: {root}/id/checkpoints/step_00000012: trained on ")
        and f"this run reads {root}/other/train (3 file(s), 6,000 rows): another dataset" in i["other_data"]
    )
    assert "eps_max=0.2 in the checkpoint, 0.1 now" in i["other_eps"]
    assert i["digit_was_there"]
    d = i["digit"]
    assert d["error"] is None and d["result"]["resumed"]["from_step"] == 9  # not 10: the digit is found
    assert "step_00000012/meta.json: content differs from its own checksum" in d["output"]
    for epoch in (0, 1):  # every row of every epoch trained once
        entries = [r for r in d["result"]["rows_read"] if r["epoch"] == epoch]
        assert sum(r["total"] for r in entries) == 6000 and entries[-1]["complete"]


@pytest.mark.dist
def test_a_resume_with_another_batch_size_keeps_the_checkpoints_plan(round2: Dict[str, Any]) -> None:
    p = round2["plan"]
    assert p["first_error"] is None and p["second_error"] is None, p
    assert p["second"]["resumed"]["from_step"] == 12 and p["second"]["steps"] == 48  # 256 rows a step now
    assert p["second_types"] == ["table_wise"]  # the automatic plan alone would replicate them on one rank
    assert "written with optim.sparse=rowwise_adagrad, this run uses optim.sparse=sgd" in p["other_optimizer"]


@pytest.mark.dist
def test_a_full_disk_mid_run_is_one_line_and_the_relaunch_trains(round2: Dict[str, Any]) -> None:
    d = round2["disk"]
    assert d["error"].startswith("StorageError: ") and "could not save the checkpoint (" in d["error"]
    assert "\n" not in d["error"] and "nothing partial was kept" in d["error"]
    assert d["after"] == {"steps": [], "problems": [], "hidden": []}  # no .tmp-* left to misread
    assert d["again_error"] is None and d["again"]["steps"] == 24

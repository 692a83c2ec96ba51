"""Whole runs that are killed mid-save, damaged, blown up by a huge learning rate and collided (issue 17).

One process (tests/dist/robust_runs.py) runs every scenario, each training in a forked child, and one
torchrun job whose launcher is SIGKILLed; this side asserts on what it wrote.
"""

import re
from pathlib import Path
from typing import Any, Dict

import pytest
import torch
from conftest import run_dist_driver


@pytest.fixture(scope="module")
def robust(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    return run_dist_driver("robust_runs", tiny_data, tmp_path_factory.mktemp("robust"))


def _state(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.dist
def test_kill_9_inside_saves_never_leaves_a_partial_checkpoint_and_resumes_exactly(robust: Dict[str, Any]) -> None:
    k = robust["kill"]
    had_checkpoint = False
    for kill in k["kills"]:
        assert kill["killed"], kill
        assert all(p is None for p in kill["after"]["problems"]), kill  # every step_* intact after every kill
        assert kill["lock_left"]  # the killed launch's lock is stale: the next launch takes it over
        assert bool(kill["resumed_line"]) == had_checkpoint, kill  # never back to step 0 while checkpoints exist
        had_checkpoint = bool(kill["after"]["steps"])
    assert had_checkpoint and k["final"]["resumed"] is not None, k["kills"]
    assert k["final"]["steps"] == k["ref"]["steps"] == 24
    assert k["final"]["launch"] >= 1
    # bit for bit the uninterrupted run
    ref, got = _state(robust["root"] / "ref" / "model.pt"), _state(robust["root"] / "run" / "model.pt")
    assert ref.keys() == got.keys() and all(torch.equal(ref[n], got[n]) for n in ref)
    assert k["final"]["loss"]["first"] == k["ref"]["loss"]["first"]  # "last" averages the steps since the last log line
    # the leftovers of killed saves are gone, the kept checkpoints intact
    assert k["after_final"]["hidden"] == [] and all(p is None for p in k["after_final"]["problems"])
    # metrics.jsonl: one record per (step, kind) although launches redid steps
    keys = [tuple(x) for x in k["metric_keys"]]
    assert len(keys) == len(set(keys)) and (24, "test_clean") in keys
    # rows: every epoch across launches adds up to the split; what a resumed launch skipped is what an
    # earlier launch had trained, counted apart
    for epoch in (0, 1):
        entries = [r for r in k["final"]["rows_read"] if r["epoch"] == epoch]
        assert sum(r["total"] for r in entries) == 6000, entries
        for i, r in enumerate(entries):
            assert sum(r.get("rows_skipped", [0])) == sum(e["total"] for e in entries[:i]), entries
        assert entries[-1]["complete"]


@pytest.mark.dist
def test_damaged_checkpoints_are_named_and_skipped(robust: Dict[str, Any]) -> None:
    d = robust["damage"]
    assert d["bitflip_explicit"]["error"].endswith(
        "step_00000024/__0_0.distcp: content differs from its checksum in "
        "meta.json (damaged: a flipped bit or a partial write)"
    )
    auto = d["bitflip_auto"]
    assert auto["path"].endswith("step_00000021") and len(auto["skipped"]) == 1
    # ``best`` is the selected epoch's model (eval.keep_selected), beside the step checkpoints
    assert [x for x in auto["after"] if x != "best"] == ["damaged-step_00000024", "latest", "step_00000021"]
    assert (
        "step_00000024/__0_0.distcp: " in d["truncated"]["error"]
        and "(truncated or overwritten)" in d["truncated"]["error"]
    )
    assert "step_00000024/meta.json: not valid JSON, damaged (JSONDecodeError" in d["broken_meta"]["error"]
    assert "step_00000024/meta.json: missing key(s) ['steps_per_epoch']" in d["missing_key"]["error"]
    assert "step_00000024/rng/rank0.pt: 120 bytes, meta.json says" in d["garbage_rng"]["error"]
    assert (
        d["garbage_rng_unverified"].startswith("CheckpointError: ")
        and "step_00000024/rng/rank0.pt: not a readable RNG state, damaged (UnpicklingError"
        in d["garbage_rng_unverified"]
    )
    assert d["no_latest"]["path"] == d["no_latest"]["newest"] and d["no_latest"]["path"].endswith("step_00000024")
    assert (
        "2 checkpoint(s) but none is complete and intact, refusing to start again from step 0"
        in d["all_damaged"]["error"]
    )
    assert (
        robust["budget"]["error"].startswith("CheckpointError: ")
        and "trained to step 24, past this run's budget of 10 steps" in robust["budget"]["error"]
    )


@pytest.mark.dist
def test_non_finite_loss_stops_keeps_the_last_good_checkpoint_and_exports_nothing(robust: Dict[str, Any]) -> None:
    n = robust["nan"]
    m = re.match(
        r"NonFiniteError: non-finite training loss or gradient at step (\d+) \(found at step (\d+)\); "
        r"stopped: the last checkpoint is the last good one and no model was exported",
        n["huge_error"],
    )
    assert m, n["huge_error"]
    bad, found = int(m.group(1)), int(m.group(2))
    assert 24 < bad <= found <= 27  # checked before the checkpoint due at step 27 (and every 10 steps)
    assert "model.pt" not in n["files"] and "summary.json" not in n["files"]
    assert n["after"]["steps"][-1] == 24 and all(p is None for p in n["after"]["problems"])  # nothing NaN saved
    good = n["good"]
    assert good["resumed"]["from_step"] == 24 and good["steps"] == 36 and good["model_file"]
    assert good["loss"]["last"] == good["loss"]["last"] and good["loss"]["last"] < 1.0  # finite
    # skip: the batch with the overflowing row is skipped in each of the 2 epochs; the run ends and learns
    assert n["skip_error"] is None and n["skip"]["nonfinite_skipped_steps"] == 2 and n["skip"]["steps"] == 24
    assert n["skip"]["model_file"] and n["skip"]["loss"]["last"] < n["skip"]["loss"]["first"]


@pytest.mark.dist
def test_killing_only_the_launcher_leaves_a_worker_whose_lock_refuses_a_second_run(robust: Dict[str, Any]) -> None:
    lock = robust["lock"]
    assert lock["worker_alive"] and lock["worker_still_training"]  # torchelastic does not reap its workers
    assert lock["holder_pid"] != lock["launcher_pid"]
    assert (
        lock["second_error"].startswith("RunLockError: ")
        and f"--out is in use by another run (pid {lock['holder_pid']} on " in lock["second_error"]
    )

"""Checkpoints, resume, the pipeline and distributed metrics with real gloo processes: two launches of
tests/dist/train_resume.py ('resume' mode on 2 ranks, then 'reshard' mode on 3 ranks onto the first's
checkpoint), each once per module (module-scoped fixtures); the tests below each check one behaviour of them.
"""

from pathlib import Path

import pytest
from conftest import launch
from train_resume import launched

pytestmark = pytest.mark.dist


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def r(tiny_data: Path, root: Path) -> dict:
    """'resume' mode on 2 ranks: full, part (stop at 21, resume), pipe, mismatch, early (rank 0's findings)."""
    return launch(launched, 2, "resume", str(tiny_data), str(root))[0]


@pytest.fixture(scope="module")
def s(r: dict, tiny_data: Path, root: Path) -> dict:
    """'reshard' mode on 3 ranks from ``r``'s 2-rank checkpoint at step 21 (rank 0's findings)."""
    return launch(launched, 3, "reshard", str(tiny_data), str(root))[0]


def test_stopped_session_checkpoints_and_prunes(r: dict, root: Path) -> None:
    assert r["session"] == {
        "interrupted": True,
        "steps": 21,
        "checkpoint": str(root / "part" / "checkpoints" / "step_00000021"),
    }
    assert r["ckpts_after_stop"] == ["latest", "step_00000020", "step_00000021"]  # keep_checkpoints=2 pruned 10
    assert r["latest"] == "step_00000032"


def test_resume_equals_uninterrupted_bit_for_bit(r: dict) -> None:
    # N + resume + M steps == N + M uninterrupted steps, bit for bit (dropout, T-CE step, LR schedule, clipping,
    # fused row-wise Adagrad state, Adam state, data position mid-epoch).
    assert r["resumed"]["from_step"] == 21 and r["resumed"]["start_step"] == 21
    assert r["full_steps"] == r["resumed_steps"] == 32
    assert r["diff_resumed"] == 0.0
    assert r["metrics"][0] == r["metrics"][1]
    assert r["loss"][0] == r["loss"][1]


def test_resumed_run_reads_each_row_once_and_continues_the_log(r: dict) -> None:
    assert r["rows"] == [12000, 12000]  # 2 epochs of 6,000 rows: the resumed run skipped exactly what it had read
    assert r["train_log_steps"] == [8, 16, 21, 24, 32]  # metrics.jsonl continued (21: end of the first session)


def test_pipeline_trains_like_the_plain_loop(r: dict, root: Path) -> None:
    # TrainPipelineSparseDist (evaluations and checkpoints in between) trains exactly like the plain loop.
    assert r["pipelined_modules"] >= 1 and r["diff_pipe"] == 0.0
    assert r["pipe_evals"] == [5, 10, 15, 20, 25, 30]
    assert r["metrics"][2] == r["metrics"][0]
    assert r["pipe_realimp"] == {
        "baseline": str(root / "full" / "summary.json"),
        "valid": 0.0,
        "test_clean": 0.0,
        "test_observed": 0.0,
    }  # same AUC as its baseline


def test_resume_with_another_model_is_a_clear_error(r: dict) -> None:
    assert (
        "the checkpoint's model differs from this run's (name: 'deepfm' in the checkpoint, 'dlrm' now" in r["mismatch"]
    )


def test_early_stopping_stops_and_restores_the_best_model(r: dict) -> None:
    e = r["early"]  # min_delta=1 makes every validation after the first a miss: patience 1 stops at the second
    assert (e["steps"], e["stop"], e["best_step"], e["restored_best_step"]) == (8, True, 4, 4)
    assert [v["step"] for v in e["evals"]] == [4, 8]
    assert e["final_valid_auc"] == e["evals"][0]["valid"]["auc"] != e["evals"][1]["valid"]["auc"]
    assert e["precision"] == "bf16" and e["loss"]["last"] < 0.75


def test_two_rank_checkpoint_loads_onto_three_ranks_unchanged(s: dict) -> None:
    # The 2-rank checkpoint loads onto 3 ranks (tables re-sharded, now also on rank 2) unchanged ...
    assert s["loaded_resumed"]["world_size"] == 2 and s["loaded_steps"] == 21
    assert s["plan_ranks"] == [0, 1, 2]
    assert s["diff_loaded_vs_checkpoint"] == 0.0


def test_resharded_run_continues_and_accounts_rows_across_launches(s: dict) -> None:
    assert s["cont_steps"] == 32 and s["cont_loss_last"] < 0.69
    # Rows across launches: launch 0 (2 ranks) read epoch 0 and 5 batches of epoch 1; launch 1 (3 ranks) skipped
    # those 1,920 rows and read the other 4,080 (checkpointing every 5 steps on the way).
    assert [tuple(r) for r in s["cont_rows"]] == [
        (0, 0, 6000, 2, 0, True),
        (1, 0, 1920, 2, 0, False),
        (1, 1, 4080, 3, 1920, True),
    ]


def test_nonfinite_loss_and_held_lock_stop_every_rank_alike(s: dict) -> None:
    # Issue 17 on 3 ranks: every rank stops with the same one-line error (no rank left waiting in a collective).
    nan_errors = {e[0] for e in s["errors_per_rank"]}
    assert len(nan_errors) == 1 and next(iter(nan_errors)).startswith(
        "NonFiniteError: non-finite training loss or gradient at step "
    )
    assert "model.pt" not in s["nan_files"]
    lock_errors = {e[1] for e in s["errors_per_rank"]}
    assert len(lock_errors) == 1 and "--out is in use by another run" in next(iter(lock_errors))


def test_reshard_onto_data_parallel_tables_is_a_clear_error(s: dict) -> None:
    # ... but not onto data_parallel tables (their optimizer state lives in the dense optimizer): a clear error.
    assert (
        "could not load the checkpoint written by 2 rank(s) with plan ['table_wise'] onto 3 rank(s)" in s["dp_error"]
        and "resume without --sharding (the automatic plan keeps each table's type" in s["dp_error"]
        and "or with --sharding table_wise." in s["dp_error"]
    )


def test_metrics_on_three_ranks_equal_scikit_learn(s: dict) -> None:
    # Metrics on 3 ranks == scikit-learn on one process: the trained model's validation (distributed evaluation
    # vs the exported model scoring the split alone via `predict`), and random uneven shares (one rank empty).
    for got, want in [("dist_valid", "single_valid"), ("random_dist", "random_sklearn")]:
        for k in ("auc", "gauc"):
            assert s[got][k] == pytest.approx(s[want][k], abs=1e-9), (got, k)
        assert s[got]["logloss"] == pytest.approx(s[want]["logloss"], abs=1e-6)
    assert s["random_rows"] == 1537 and s["predict_rows"] == 1500
    assert s["predict_observed"]["auc"] == pytest.approx(s["single_valid"]["auc"], abs=1e-12)

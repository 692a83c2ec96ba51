"""The training job as a recipe: summary.json keeps its keys, the components keep their cadence, the logging
interface, ``check_config`` with ``Literal`` choices, and train.py stays small.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

from denoisrec.trainer.checkpoint.cadence import PeriodicCheckpointer
from denoisrec.trainer.config.check import check_config
from denoisrec.trainer.config.options import UsageError
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.outputs.loggers import JsonlLogger, MetricLogger
from denoisrec.trainer.outputs.progress import Progress
from denoisrec.trainer.outputs.run_summary import RunSummary
from denoisrec.trainer.outputs.runlog import RunLog
from denoisrec.trainer.train_state import RunLayout, TrainState

# summary.json's keys before the recipe (trainer/train.py at bad11c2); ``realimp`` only with run.baseline
SUMMARY_KEYS = {
    "config",
    "world_size",
    "device",
    "backend",
    "precision",
    "pipeline",
    "plan",
    "steps",
    "total_steps",
    "steps_per_epoch",
    "batch_size_per_rank",
    "epochs_started",
    "rows_trained",
    "ranks",
    "train_rows_in_split",
    "rows_read",
    "loss",
    "throughput_samples_per_s",
    "train_seconds",
    "eval_and_checkpoint_seconds",
    "wall_seconds",
    "metrics",
    "evaluations",
    "early_stopping",
    "resumed",
    "launch",
    "nonfinite_skipped_steps",
    "observation",
    "checkpoint",
    "model_file",
    "environment",
    "realimp",
    "selection",  # added with eval.select_on: what the run selected on, with its interval, and what it exported
    "input_wait",  # issue 27: the time the step waited for input
}
TRAIN_PY = Path(__file__).resolve().parents[2] / "trainer" / "train.py"


def test_a_run_writes_todays_summary_keys(tiny_data: Path, tmp_path: Path) -> None:
    from denoisrec.trainer.cli import main

    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"metrics": {"valid": {"auc": 0.5}, "test_clean": {"auc": 0.5}}}))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_data),
                "--out",
                str(out),
                "--epochs",
                "1",
                "--batch-size",
                "1000",
                "--set",
                "run.export=false",
                "run.curves=false",
                "run.progress=none",
                f"run.baseline={baseline}",
            ]
        )
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert set(s) == SUMMARY_KEYS
    assert [f for f in RunSummary.__dataclass_fields__] == [k for k in s]  # same order as written
    assert s["steps"] == 6 and s["rows_trained"]["total"] == 6000 and s["realimp"]["baseline"] == str(baseline)
    wait = s["input_wait"]
    assert len(wait["seconds_per_rank"]) == 1 and 0 < wait["max_seconds"] < s["train_seconds"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} >= {"train", "valid", "test_clean", "test_observed"}


def test_checkpoint_and_evaluation_cadence_come_from_their_components() -> None:
    every = PeriodicCheckpointer(checkpointer=None, every=4, total_steps=10)  # type: ignore[arg-type]
    assert [s for s in range(1, 11) if every.due(s)] == [4, 8]  # the last step's is save_final's
    assert not PeriodicCheckpointer(None, 0, 10).due(5)  # type: ignore[arg-type]
    layout = RunLayout(steps_per_epoch=5, batch_size=100, world_size=3, total_steps=12)
    assert layout.global_batch == 300 and layout.epoch_of(5) == 1
    assert layout.position(7) == {
        "step": 7,
        "epoch": 1,
        "batches_in_epoch": 2,
        "steps_per_epoch": 5,
        "world_size": 3,
        "batch_size": 100,
        "global_batch": 300,
        "total_steps": 12,
    }


def test_train_state_continues_a_checkpoints_launch() -> None:
    state = TrainState()
    state.load_meta({"launch": 2, "rows_read": [{"launch": 0}], "rows_trained": 900, "first_loss": 0.7}, 9)
    assert (state.step, state.start_step, state.launch, state.rows_before) == (9, 9, 3, 900)
    assert state.first_loss == 0.7 and state.history == [{"launch": 0}]
    assert math.isnan(TrainState().first_loss)


def test_every_logger_speaks_the_metric_logger_protocol(tmp_path: Path) -> None:
    log = RunLog(str(tmp_path), enabled=True)
    assert isinstance(log, MetricLogger) and isinstance(Progress(3, 0, False, "none"), MetricLogger)
    assert all(isinstance(x, MetricLogger) for x in log.loggers) and isinstance(log.loggers[0], JsonlLogger)
    log.log_dict({"loss": 0.5, "auc": math.nan}, step=2)
    log.log("auc", 0.7, step=2, kind="valid")
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["kind"]) for r in rows] == [(2, "train"), (2, "valid")]
    assert rows[0]["loss"] == 0.5 and rows[0]["auc"] is None and rows[1]["auc"] == 0.7


@pytest.mark.parametrize(
    "key,value",
    [
        ("run.precision", "fp8"),
        ("run.pipeline", "maybe"),
        ("data.oov_policy", "drop"),
        ("model.context", "hide"),
        ("run.nonfinite", "ignore"),
        ("optim.decay", "step"),
    ],
)
def test_validate_checks_literal_choices(key: str, value: str) -> None:
    cfg = Config()
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(UsageError, match=f"{key}='{value}': expected one of"):
        check_config(cfg)
    assert check_config(Config()).run.precision == "fp32"


def test_train_py_is_small_functions_without_closures() -> None:
    tree = ast.parse(TRAIN_PY.read_text())
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert funcs, "train.py has no functions"
    for f in funcs:
        assert f.end_lineno - f.lineno + 1 <= 60, f"{f.name}: {f.end_lineno - f.lineno + 1} lines"
        inner = [
            getattr(n, "name", "lambda")
            for n in ast.walk(f)
            if n is not f and isinstance(n, (ast.FunctionDef, ast.Lambda))
        ]
        assert not inner, f"{f.name} holds nested functions {inner}"

"""The training job end to end with real processes: 2 gloo ranks under torchrun, and one plain process."""

import json
from pathlib import Path

import pytest
from conftest import torchrun


@pytest.mark.dist
def test_two_rank_training_learns_and_reads_every_row(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    torchrun(
        "-m denoisrec.trainer",
        2,
        [
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--batch-size",
            "256",
            "--denoiser",
            "tce",
            "-p",
            "eps_max=0.2",
            "-p",
            "num_gradual=20",
            "--sharding",
            "table_wise",
            "--set",
            "run.log_every=5",
        ],
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps"] == 3 * 12
    assert s["rows_trained"]["total"] == 3 * 6000
    assert sum(s["rows_trained"]["per_rank"]) == 3 * 6000
    assert [(r["epoch"], r["total"], r["complete"]) for r in s["rows_read"]] == [(e, 6000, True) for e in range(3)]
    assert all(sum(r["per_rank"]) == 6000 and len(r["per_rank"]) == 2 for r in s["rows_read"])
    assert {p["sharding_type"] for p in s["plan"].values()} == {"table_wise"}
    assert {r for p in s["plan"].values() for r in p["ranks"]} == {0, 1}  # tables really spread
    assert s["loss"]["last"] < s["loss"]["first"] - 0.05
    assert s["metrics"]["test_clean"]["auc"] > 0.75
    assert s["metrics"]["valid"]["rows"] == 1500 and s["metrics"]["test_clean"]["target"] == "clean"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["kind"] == "train"]
    assert train_lines[-1]["eps"] == pytest.approx(0.2)  # the schedule reached ε_max
    assert (out / "config.yaml").exists() and (out / "plan.json").exists()


def test_one_process_training_via_the_cli(tiny_data: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "run1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "denoisrec.trainer",
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            "--steps",
            "8",
            "--batch-size",
            "500",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 8 and s["rows_trained"]["total"] == 8 * 500
    assert "test_clean" in s["metrics"] and "AUC" in proc.stdout

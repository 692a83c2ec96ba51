"""The GPU path on ``cuda:0`` (marker ``gpu``: skipped without CUDA; ``make gpu-check`` runs them).

Each test launches ``tests/dist/gpu_cases.py --device cuda`` on one rank (NCCL) for one case; the script
raises on any failed check, and the assertions here restate what the case must have covered.
``tests/trainer/test_gpu_cases_cpu.py`` runs the same cases on gloo ranks, so CPU CI covers this code.
"""

import json
from pathlib import Path
from typing import Any, Dict

import pytest
from conftest import torchrun

pytestmark = [pytest.mark.gpu, pytest.mark.dist]


def run_case(case: str, data: Path, tmp: Path) -> Dict[str, Any]:
    out = tmp / f"{case}.json"
    torchrun(
        "gpu_cases.py",
        1,
        ["--device", "cuda", "--cases", case, "--data", str(data), "--out", str(out), "--root", str(tmp)],
        timeout=300,
    )
    report = json.loads(out.read_text())
    assert report["device"] == "cuda:0" and report["world_size"] == 1
    return report[case]


def test_sharded_model_on_cuda_for_every_offered_sharding_type(tiny_data: Path, tmp_path: Path) -> None:
    r = run_case("sharding", tiny_data, tmp_path)
    assert {"table_wise", "column_wise", "row_wise", "data_parallel"} <= set(r["offered"])
    planned = {(x["sharding"], x["optimizer"]) for x in r["results"] if x["planned"]}
    for stype in ("table_wise", "column_wise", "row_wise", "data_parallel"):
        assert {(stype, "rowwise_adagrad"), (stype, "adam")} <= planned, (stype, r["results"])
    assert all(x["max_abs_diff"] <= 1e-4 for x in r["results"] if x["planned"])


def test_train_pipeline_sparse_dist_matches_the_plain_step(tiny_data: Path, tmp_path: Path) -> None:
    r = run_case("pipeline", tiny_data, tmp_path)
    assert r["pipelined_modules"] >= 1 and len(r["losses_plain"]) == 8
    assert r["max_loss_diff"] <= 1e-4 and r["max_param_diff"] <= 1e-4


def test_checkpoint_save_and_resume_on_cuda(tiny_data: Path, tmp_path: Path) -> None:
    r = run_case("checkpoint", tiny_data, tmp_path)
    assert r["device"] == "cuda:0" and (r["stopped_at"], r["steps"]) == (7, 12)
    assert r["max_param_diff"] <= 1e-4


def test_every_denoiser_step_without_host_sync(tiny_data: Path, tmp_path: Path) -> None:
    from denoisrec.denoisers import DENOISERS

    r = run_case("denoisers", tiny_data, tmp_path)
    assert set(r) - {"seconds"} == set(DENOISERS)
    assert all(r[n]["mode"] == "error" for n in DENOISERS if n not in ("deca", "deca_p"))


def test_trainer_step_issues_no_host_sync(tiny_data: Path, tmp_path: Path) -> None:
    r = run_case("trainer_step", tiny_data, tmp_path)
    assert {"plain", "pipelined"} <= set(r)

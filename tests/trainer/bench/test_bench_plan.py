"""`denoisrec bench plan`: the planner's plan for simulated GPU clusters covers every table, fits the HBM it
was given, and its all-to-all bytes equal a hand count.
"""

import json
from pathlib import Path

import pytest

from denoisrec.trainer.bench.plan_sim import (
    Cluster,
    TableShards,
    a2a_bytes,
    planning_module,
    simulate_plan,
)
from denoisrec.trainer.cli import main
from denoisrec.trainer.config.tree import Config, apply_overrides
from denoisrec.trainer.datasets.synthetic import preset_by_name, schema_for
from denoisrec.trainer.distributed.sharding import embedding_tables


def test_bench_plan_quick_covers_every_table_within_the_hbm_cap(tmp_path: Path) -> None:
    out = tmp_path / "plan"
    assert main(["bench", "plan", "--quick", "--hbm-gib", "1", "--out", str(out)]) == 0
    d = json.loads((out / "plan.json").read_text())
    assert (out / "plan.md").exists()
    tables = set(embedding_tables(planning_module(Config(), schema_for(preset_by_name("tiny")))))
    assert [r["world_size"] for r in d["rows"]] == [2, 8]
    for r in d["rows"]:
        assert set(r["tables"]) == tables
        assert sum(r["sharding"].values()) == len(tables)
        assert 0 < r["hbm_max_gib"] <= r["hbm_usable_gib"] < 1.0
        assert r["step_ms"] > 0 and r["samples_per_s"] == pytest.approx(r["world_size"] * 64 / (r["step_ms"] / 1e3))
        moved = r["a2a_bytes"]["forward"] + r["a2a_bytes"]["backward"]
        assert moved == r["a2a_bytes"]["intra_host"] + r["a2a_bytes"]["inter_host"]
        assert r["a2a_bytes"]["inter_host"] == 0  # 2 and 8 GPUs: one host
        assert r["reader_cores_per_gpu"] == pytest.approx(r["samples_per_s"] / r["world_size"] * 5.99e-6)
    # --merge rebuilds the table from the rows alone, sorted by scale then GPUs, without planning
    merged = tmp_path / "merged"
    assert main(["bench", "plan", "--merge", str(out / "plan.json"), "--out", str(merged)]) == 0
    assert json.loads((merged / "plan.json").read_text())["rows"] == d["rows"]


def test_a_table_wise_plan_moves_what_a_hand_count_says() -> None:
    # 17 tables of width 8, all table-wise, 2 GPUs, 4 samples each: a table's owner sends the other GPU's 4
    # pooled rows of 8 fp32 (128 bytes) forward, and receives their 128 bytes of gradients backward.
    cfg = apply_overrides(Config(), ["model.embedding_dim=8", "sharding.sharding_type=table_wise"])
    module = planning_module(cfg, schema_for(preset_by_name("tiny")))
    sim = simulate_plan(module, cfg, Cluster(), world_size=2, batch_size=4)
    assert {t.sharding_type for t in sim.tables} == {"table_wise"} and len(sim.tables) == 17
    a2a = a2a_bytes(sim.tables, world_size=2, gpus_per_host=8, batch_size=4)
    assert a2a["forward"] == a2a["backward"] == 17 * 128
    assert a2a["intra_host"] == 2 * 17 * 128 and a2a["inter_host"] == 0 and a2a["dp_allreduce"] == 0


def test_a2a_bytes_of_each_sharding_type_by_hand() -> None:
    # 16 GPUs on 2 hosts of 8, 10 samples per GPU, fp32.
    W, L, B = 16, 8, 10
    tw = TableShards("tw", "table_wise", "fused", 100, 4, [(3, 100, 4, 0)])
    # 150 samples on other GPUs (70 of them on GPU 3's host) × 4 values × 4 bytes
    assert a2a_bytes([tw], W, L, B) == {
        "forward": 150 * 16,
        "backward": 150 * 16,
        "intra_host": 2 * 70 * 16,
        "inter_host": 2 * 80 * 16,
        "dp_allreduce": 0,
    }
    cw = TableShards("cw", "column_wise", "fused", 100, 8, [(0, 100, 4, 0), (9, 100, 4, 4)])
    assert a2a_bytes([cw], W, L, B)["forward"] == 2 * 150 * 16
    rw = TableShards("rw", "row_wise", "fused", 160, 2, [(r, 10, 2, 0) for r in range(16)])
    # every GPU reduce-scatters partial sums of 2 values for the other 15 GPUs' 10 samples
    assert a2a_bytes([rw], W, L, B)["forward"] == 16 * 15 * 10 * 2 * 4
    twrw = TableShards("twrw", "table_row_wise", "fused", 80, 2, [(r, 10, 2, 0) for r in range(8)])
    # inside the host: 7 of 8 GPUs' partials for all 160 samples; then the other host's 80 samples
    twrw_fwd = a2a_bytes([twrw], W, L, B)
    assert twrw_fwd["forward"] == 7 * 160 * 8 + 80 * 8
    assert twrw_fwd["inter_host"] == 2 * 80 * 8
    dp = TableShards("dp", "data_parallel", "dense", 5, 2, [(r, 5, 2, 0) for r in range(16)])
    assert a2a_bytes([dp], W, L, B) == {
        "forward": 0,
        "backward": 0,
        "intra_host": 0,
        "inter_host": 0,
        "dp_allreduce": 2 * 15 * 5 * 2 * 4,
    }


def test_bench_plan_refuses_a_world_of_partial_hosts(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "plan", "--world-sizes", "8,12"]) == 2
    assert "--world-sizes 12: not a whole number of 8-GPU hosts" in capsys.readouterr().err


def test_the_denoisers_own_tables_stay_model_parallel_as_training_plans_them() -> None:
    from denoisrec.trainer.module import denoiser_of

    cfg = apply_overrides(Config(), ["denoiser.name=deca"])
    module = planning_module(cfg, schema_for(preset_by_name("tiny")))
    own = denoiser_of(module).needs.model_parallel_tables
    sim = simulate_plan(module, cfg, Cluster(), world_size=8, batch_size=64)
    types = {t.name: t.sharding_type for t in sim.tables}
    assert own and set(own) <= set(types) and all(types[t] != "data_parallel" for t in own)
    assert set(types) == set(embedding_tables(module))

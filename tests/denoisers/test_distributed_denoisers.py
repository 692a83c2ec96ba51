"""World-size independence with real gloo processes: the same global batch split over 1, 2 or 3 ranks,
evenly, unevenly, with an empty rank and with a rank holding no positives, gives the same decisions,
weights, targets, loss value and (global-mean) gradients as one process; with the denoiser's own tables
folded into a model's collection (DeCA's MF heads, the observation model's tower), on 1 and 3 ranks, the same
as one process with the tables unfolded.
"""

import pytest
from conftest import launch
from denoiser_property import launched, run

# Every denoiser with hyperparameters that make it act (and cross its schedule boundaries) within 5 steps.
CASES = [
    ["bce", {}],
    ["tce", {"eps_max": 0.4, "num_gradual": 3}],
    ["rce", {"beta": 0.3}],
    ["lcd", {"alpha_b": 0.5, "beta_b": 0.5, "start_step": 2}],
    ["lcd_re", {"alpha_b": 2.0, "beta_b": 2.0, "start_step": 0}],
    ["bootstrap_soft", {"lam": 0.7}],
    ["bootstrap_hard", {"lam": 0.6}],
    ["dart", {"t_i": 1, "t_m": 2, "tau_m": 0.6, "r": 0.5}],
    ["deca", {"objective": "paper", "C1": 10.0, "C2": 5.0, "alpha": 0.5, "mf_dim": 4}],
    ["deca", {"alpha": 0.5, "mf_dim": 4}],  # objective=marginal
    ["deca_p", {"pretrain_steps": 2, "alpha": 0.5, "mf_dim": 4}],
    ["deca_p", {"objective": "paper", "pretrain_steps": 2, "alpha": 0.5, "mf_dim": 4}],
    ["observation", {"hidden": [4]}],  # here the KJT's user / item ids stand in for the context
    ["observation_tce", {"eps_max": 0.4, "num_gradual": 3, "form": "product"}],
    ["observation", {"form": "examination", "tower_warmup": "40%"}],  # frozen for 2 of the 5 steps
    ["observation_ids", {"form": "examination", "id_noise_dim": 4, "tower_warmup": "20%"}],  # + user × item MFs
]
# (sizes per rank, leading samples forced negative): even, uneven, an empty rank, a rank with no positives.
SPLITS = [("37", 0), ("19,18", 0), ("30,7", 30), ("20,0,17", 0), ("12,12,13", 12)]


def reference(name: str, params: dict, n: int, steps: int, no_pos: int) -> list:
    res = run(name, params, [n], 0, steps, seed=0, no_pos=no_pos)
    return [
        {"value": r["value"], "stats": r["stats"], "report": r["report"], "rows": r["rows"].tolist()}
        for r in res["records"]
    ]


def _by_id(rows: list) -> dict:
    return {int(r[0]): r[1:] for r in rows}


@pytest.mark.dist
@pytest.mark.parametrize("split,no_pos", SPLITS, ids=[s[0] for s in SPLITS])
def test_decisions_do_not_depend_on_world_size_or_split(split: str, no_pos: int) -> None:
    steps = 5
    sizes = [int(s) for s in split.split(",")]
    results = launch(launched, len(sizes), sizes, CASES, steps, 0, no_pos)[0]
    check_against_one_process(CASES, results, sizes, steps, no_pos)


# The denoisers with tables of their own (needs.shared_tables).
FOLDED = [c for c in CASES if c[0].startswith(("deca", "observation"))]


@pytest.mark.dist
@pytest.mark.parametrize("split,no_pos", [("37", 0), ("12,12,13", 12)], ids=["37", "12,12,13"])
def test_folded_tables_give_the_unfolded_one_process_results(split: str, no_pos: int) -> None:
    # (No empty rank here: the stand-in model's collection is unsharded, and an unsharded EBC cannot pool an
    # empty batch; the sharded fold runs on 3 ranks, one of them uneven, in
    # tests/trainer/distributed/test_deca_folded.py.)
    steps = 5
    sizes = [int(s) for s in split.split(",")]
    results = launch(launched, len(sizes), sizes, FOLDED, steps, 0, no_pos, True)[0]
    check_against_one_process(FOLDED, results, sizes, steps, no_pos)


def check_against_one_process(cases: list, results: list, sizes: list, steps: int, no_pos: int) -> None:
    split = ",".join(map(str, sizes))
    assert len(results) == len(cases)
    for (name, params), got in zip(cases, results):
        ref = reference(name, params, sum(sizes), steps, no_pos)
        assert len(got) == len(ref) == steps
        for step, (r, g) in enumerate(zip(ref, got)):
            where = (name, split, step)
            assert g["value"] == pytest.approx(r["value"], rel=1e-6, abs=1e-9), where
            assert g["stats"].keys() == r["stats"].keys(), where
            for k, v in r["stats"].items():
                assert g["stats"][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (*where, k)
            assert g["report"].keys() == r["report"].keys(), where  # ground-truth diagnostics, reduced once
            for k, v in r["report"].items():
                assert g["report"][k] == pytest.approx(v, rel=1e-5, abs=1e-9, nan_ok=True), (*where, k)
            rb, gb = _by_id(r["rows"]), _by_id(g["rows"])
            assert rb.keys() == gb.keys()
            for sid, rrow in rb.items():
                grow = gb[sid]
                assert grow[:2] == rrow[:2], (*where, sid)  # dropped / relabelled: identical
                assert grow[2:4] == pytest.approx(rrow[2:4], rel=1e-6)  # weight / target
                assert grow[4] == pytest.approx(rrow[4], rel=1e-5, abs=1e-9)  # gradient after DDP averaging

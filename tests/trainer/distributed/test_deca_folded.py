"""DeCA(p) with its MF heads folded into the model's sharded collection (trainer/distributed/shared_lookup.py) on 3 gloo
ranks: one collection holds the model's and the MF's tables (model-parallel), a run stopped mid-way and
resumed from its checkpoint (phase 2's prior cache scored again) ends where the uninterrupted one does, and the
exported model is f alone.
"""

from pathlib import Path

import pytest
from conftest import launch
from folded_train import launched


@pytest.mark.dist
def test_deca_p_folded_trains_and_resumes_on_three_ranks(tiny_data: Path, tmp_path: Path) -> None:
    params = {"pretrain_steps": 4, "mf_dim": 8}  # phase 1 for 4 steps; the stop at 7 falls in phase 2
    r = launch(launched, 3, str(tiny_data), str(tmp_path), "deca_p", params)[0]
    assert r["world"] == 3 and r["steps"] == [16, 7, 16] and r["resumed_from"] == 7
    # Resumed == uninterrupted up to the summation order of 3-rank all-reduces; MF tables or the prior cache
    # not restored would differ by orders more.
    assert r["diff_resumed"] < 1e-5
    for a, b in zip(r["metrics"][0].values(), r["metrics"][1].values()):
        assert a["auc"] == pytest.approx(b["auc"], abs=1e-4)
    # One collection: the MF tables sit beside the model's t_ tables, model-parallel; none in the denoiser.
    mf = {k: v for k, v in r["plan"].items() if ".deca_" in k}
    assert len(mf) == 4 and all(".embedding_bag_collection." in k for k in mf), sorted(r["plan"])
    assert all(v["sharding_type"] != "data_parallel" for v in mf.values())
    # ... and in the sharding types of the model's own model-parallel tables: no all-to-all group of their own.
    own = {v["sharding_type"] for k, v in r["plan"].items() if ".t_" in k} - {"data_parallel"}
    assert own and {v["sharding_type"] for v in mf.values()} <= own, r["plan"]
    assert not any(k.startswith("denoiser.mf") for k in r["plan"])
    # The exported model is f alone.
    assert r["state_keys"] and not any("deca_" in k or "prior" in k for k in r["state_keys"])

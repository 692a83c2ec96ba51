"""The GPU tests' code on CPU: ``tests/dist/gpu_cases.py`` on 2 gloo ranks (uneven batches, in-process
``conftest.launch``), and the
host-sync guard (``host_sync``) catching what it must.
"""

from pathlib import Path

import pytest
import torch
from conftest import launch
from gpu_cases import launched
from host_sync import HostSyncError, HostSyncGuard

from denoisrec.denoisers import DENOISERS, build_denoiser, collectives


@pytest.mark.dist
def test_gpu_cases_run_on_two_gloo_ranks(tiny_data: Path, tmp_path: Path) -> None:
    r = launch(launched, 2, "cpu", str(tiny_data), str(tmp_path))[0]
    assert r["world_size"] == 2
    s = r["sharding"]
    assert {"table_wise", "column_wise", "data_parallel"} <= set(s["offered"]) and "row_wise" not in s["offered"]
    assert all(x["planned"] and x["max_abs_diff"] == 0.0 for x in s["results"])
    p = r["pipeline"]
    assert p["pipelined_modules"] >= 1 and p["max_loss_diff"] == 0.0 and p["max_param_diff"] == 0.0
    assert p["losses_plain"] == p["losses_pipelined"] and len(set(p["losses_plain"])) == 8
    assert r["checkpoint"]["max_param_diff"] == 0.0 and r["checkpoint"]["stopped_at"] == 7
    assert set(r["denoisers"]) - {"seconds"} == set(DENOISERS)
    # The guard saw TorchRec's / FBGEMM's own host reads in the step (so it was live), none from denoisrec.
    for key in ("plain", "pipelined"):
        sites = r["trainer_step"][key]["sites"]
        assert r["trainer_step"][key]["library_syncs"] > 0 and any("torchrec" in x for x in sites)
        assert not any("/denoisers/" in x or "/trainer/" in x for x in sites)


def test_guard_fails_on_a_host_read_and_names_the_line() -> None:
    x = torch.randn(8)
    with pytest.raises(HostSyncError, match=r"item at .*test_gpu_cases_cpu.py:\d+"):
        with HostSyncGuard(torch.device("cpu")):
            (x * 2).sum().item()
    for sync in (
        lambda: bool(x.sum() > 0),
        lambda: x[x > 0],
        lambda: torch.nonzero(x),
        lambda: x.tolist(),
        lambda: float(x[0]),
        lambda: torch.unique(x),
    ):
        with pytest.raises(HostSyncError):
            with HostSyncGuard(torch.device("cpu")):
                sync()
    with HostSyncGuard(torch.device("cpu")):  # device-side work only: passes
        torch.where(x > 0, x, torch.zeros_like(x)).cumsum(0)
        x[torch.tensor([0, 2])]


def test_guard_attributes_syncs_to_denoisrec_code() -> None:
    """T-CE's radix select reads its histogram on the host when it may stop early (the CPU default):
    recorded as a sync from denoisers/collectives.py; the GPU path (all rounds on device) has none.
    """
    torch.manual_seed(0)
    den = build_denoiser("tce", eps_max=0.2, num_gradual=1)
    logits, labels, ids = torch.randn(64), (torch.rand(64) > 0.5).float(), torch.arange(64)
    den(logits, labels, ids)
    with HostSyncGuard(torch.device("cpu"), "warn") as g:
        den(logits, labels, ids)
        float(logits.sum())  # this test's own read: not denoisrec's
    own = g.own()  # one host read per round until the select has decided
    assert own and {s.op for s in own} == {"__bool__"} and all(s.file.endswith("collectives.py") for s in own)
    assert len(g.syncs) == len(own) + 1 and g.syncs[-1].file == __file__
    keys = collectives.order_keys(logits.abs(), ids)
    with HostSyncGuard(torch.device("cpu"), "error"):
        collectives.radix_select(keys, labels > 0, torch.tensor([5]), early_exit=False)


def test_guard_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="HostSyncGuard mode='raise'"):
        HostSyncGuard(torch.device("cpu"), "raise")

"""Every denoiser through the real trainer (`train`) on the tiny preset, on 2 gloo ranks and on 1 process,
plus DeCA's update pattern and DeCA(p)'s checkpoint under DistributedModelParallel (one launch each).
"""

import math
from pathlib import Path

import pytest
from conftest import launch
from train_methods import launched

from denoisrec.denoisers import DENOISERS

# Which models a step changes (f = target, g = DeCA's MF, h / h' = noise models, f' = DeCA(p)'s prior).
DECA_STEPS = [["f", "g", "h"], ["f", "g", "h'"], ["f", "g", "h"], ["f", "g", "h'"]]  # DP, DN, DP, DN
DECA_P_STEPS = [["f'"], ["f'"], ["f", "h"], ["f", "h'"], ["f", "h"]]  # phase 1 × 2, then DP, DN, DP
# objective=marginal (the default): both noise models every step.
MARGINAL_STEPS = {
    "deca_marginal": [["f", "g", "h", "h'"]] * 2,
    "deca_p_marginal": [["f'"], ["f", "h", "h'"], ["f", "h", "h'"]],
}


# A stat each method logs with the training metrics (besides the ground-truth report every method logs).
LOGGED = {
    "bce": "loss",
    "tce": "eps",
    "rce": "mean_weight",
    "lcd": "omega_mean",
    "lcd_re": "omega_mean",
    "bootstrap_soft": "correction_mean",
    "bootstrap_hard": "correction_mean",
    "dart": "tau",
    "deca": "post_pos_mean",
    "deca_p": "post_pos_mean",
    "observation": "f_mean",
    "observation_tce": "drop_share",
    "observation_ids": "f_mean",
}
TRUTH = {"truth_precision", "truth_recall", "truth_random_precision", "truth_loss_noisy_pos", "truth_loss_clean_pos"}


def check(report: dict, world: int) -> None:
    assert sorted(report["train"]) == sorted(DENOISERS)
    bce = report["train"]["bce"]["loss"]
    assert bce["first"] == pytest.approx(math.log(2), abs=0.01)  # a fresh model's logits are near 0
    # Same seed, model and first batch: the methods that act later (T-CE drops nothing at step 0, LCD and DART
    # start at step 2) take BCE's first step exactly; every method then trains otherwise than BCE.
    for name in ("tce", "lcd", "lcd_re", "dart"):
        assert report["train"][name]["loss"]["first"] == bce["first"], name
    for name, s in report["train"].items():
        assert s["world_size"] == world and s["steps"] == 6, name
        assert name == "bce" or s["loss"]["last"] != bce["last"], (name, s["loss"], bce)
        assert 0.5 < s["auc"] <= 1.0, (name, s)  # better than chance on the clean test labels after 6 steps
        # BCE handles nothing: no precision field (it would be nan); recall 0 and the positives' losses logged
        truth = TRUTH - {"truth_precision"} if name == "bce" else TRUTH
        assert LOGGED[name] in s["logged"] and truth <= set(s["logged"]), (name, s["logged"])
        if name == "bce":
            assert "truth_precision" not in s["logged"], s["logged"]
        if name.startswith("deca"):
            assert {"truth_post_noisy_pos", "truth_post_clean_pos"} <= set(s["logged"]), name
    assert report["updates"]["deca"] == DECA_STEPS
    assert report["updates"]["deca_p"] == DECA_P_STEPS
    for name, steps in MARGINAL_STEPS.items():
        assert report["updates"][name] == steps, name


@pytest.mark.dist
def test_every_denoiser_trains_on_two_ranks(tiny_data: Path, tmp_path: Path) -> None:
    report = launch(launched, 2, str(tiny_data), str(tmp_path))[0]  # 12 trainer runs, 5 DMP builds
    check(report, 2)
    assert report["checkpoint"]["max_abs_diff"] < 1e-5  # the loaded prior reproduces the saved model
    # Zeroing the prior's local tensors changes its logits on some rank; copying them back restores them.
    assert report["checkpoint"]["zeroed_min_change"] > 1e-3 and report["checkpoint"]["restored_diff"] < 1e-6


@pytest.mark.dist
def test_every_denoiser_trains_on_one_process(tiny_data: Path, tmp_path: Path) -> None:
    check(launch(launched, 1, str(tiny_data), str(tmp_path), 6, True)[0], 1)

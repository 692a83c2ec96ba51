"""Selection on the trusted signal: DeLong's interval on hand cases, the choice rule (the simpler method within
the interval; a clearly better one wins; the paired test), ``eval.select_on``'s resolution and refusals, and a
run that keeps and exports the model of its selected epoch.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from trusted_data import add_trusted

from denoisrec.models.model_file import read_model_file
from denoisrec.trainer.config.check import check_config
from denoisrec.trainer.config.options import UsageError
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.data.splits import split_readers
from denoisrec.trainer.evaluation.auc_interval import auc_interval, paired_difference, z_value
from denoisrec.trainer.evaluation.selection import resolve_selection
from denoisrec.trainer.evaluation.selection_rule import Candidate, choose


def test_delong_interval_on_hand_cases() -> None:
    # X = [0.35, 0.8] (positives), Y = [0.1, 0.4]: psi = [[1, 0], [1, 1]]; V10 = [0.5, 1], V01 = [1, 0.5];
    # AUC 0.75; Var = 0.125/2 + 0.125/2 = 0.125
    iv = auc_interval(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert iv["auc"] == pytest.approx(0.75) and iv["se"] == pytest.approx(math.sqrt(0.125))
    assert iv["lo"] == pytest.approx(0.75 - 1.959964 * math.sqrt(0.125), abs=1e-6) and iv["hi"] == 1.0  # clipped
    # ties count one half: X = [0.5, 0.9], Y = [0.5, 0.2, 0.5]: V10 = [2/3, 1], V01 = [3/4, 1, 3/4]
    iv = auc_interval(np.array([1, 0, 1, 0, 0]), np.array([0.5, 0.5, 0.9, 0.2, 0.5]))
    var = np.var([2 / 3, 1], ddof=1) / 2 + np.var([0.75, 1, 0.75], ddof=1) / 3
    assert iv["auc"] == pytest.approx(5 / 6) and iv["se"] == pytest.approx(math.sqrt(var))
    assert (iv["positives"], iv["negatives"]) == (2, 3)
    assert math.isnan(auc_interval(np.array([1, 0, 0]), np.array([0.2, 0.1, 0.3]))["se"])  # one positive
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)


def test_paired_difference_matches_the_definition_and_is_zero_for_one_scorer() -> None:
    r = np.random.default_rng(0)
    y = (r.random(300) < 0.4).astype(float)
    a = y + r.normal(0, 1.0, 300)
    b = 0.5 * y + r.normal(0, 1.0, 300) + 0.3 * a
    d = paired_difference(y, a, b)
    x_a, w_a, x_b, w_b = a[y == 1], a[y == 0], b[y == 1], b[y == 0]

    def psi(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return (x[:, None] > w[None, :]) + 0.5 * (x[:, None] == w[None, :])

    pa, pb = psi(x_a, w_a), psi(x_b, w_b)
    m, n = pa.shape
    s10 = np.cov(np.stack([pa.mean(1), pb.mean(1)]))
    s01 = np.cov(np.stack([pa.mean(0), pb.mean(0)]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    assert d["diff"] == pytest.approx(pa.mean() - pb.mean()) and d["se"] == pytest.approx(math.sqrt(var))
    same = paired_difference(y, a, a)
    assert same["diff"] == 0.0 and same["se"] == pytest.approx(0.0, abs=1e-12)


def test_the_simpler_method_wins_within_the_interval_and_a_clearly_better_one_wins() -> None:
    # unpaired: half width 1.96 * sqrt(2) * 0.006 = 0.0166
    within = choose([Candidate("bce", 0.860, 0.006), Candidate("observation", 0.866, 0.006)])
    assert within.chosen == 0 and within.best == 1 and within.ties == [True, True]
    assert within.half_width[0] == pytest.approx(1.959964 * math.sqrt(2) * 0.006, rel=1e-5)
    assert "bce (0.8600) is simpler than the best, observation (0.8660)" in within.reason
    clear = choose([Candidate("bce", 0.860, 0.006), Candidate("observation", 0.900, 0.006)])
    assert clear.chosen == 1 and clear.ties == [False, True]
    assert "leads every simpler candidate (bce)" in clear.reason
    # three: the simplest that ties the best, even when a middle one is the best
    three = choose(
        [Candidate("bce", 0.850, 0.005), Candidate("tce", 0.880, 0.005), Candidate("observation", 0.884, 0.005)]
    )
    assert three.best == 2 and three.chosen == 1
    # NaN never wins nor ties; an exact tie goes to the simpler
    assert choose([Candidate("bce", math.nan, math.nan), Candidate("tce", 0.7, 0.01)]).chosen == 1
    assert choose([Candidate("bce", 0.7, 0.01), Candidate("tce", 0.7, 0.01)]).best == 0
    with pytest.raises(ValueError, match="no candidate has a selection AUC"):
        choose([Candidate("bce", math.nan, math.nan)])


def test_the_paired_test_sees_a_consistent_lead_that_the_unpaired_interval_misses() -> None:
    r = np.random.default_rng(3)
    y = (r.random(4000) < 0.3).astype(np.float64)
    base = 1.2 * y + r.normal(0, 1.0, y.size)
    better = base + 0.05 * y + r.normal(0, 0.05, y.size)  # the same scorer, slightly better on every positive
    ia, ib = auc_interval(y, base), auc_interval(y, better)
    unpaired = choose([Candidate("bce", ia["auc"], ia["se"]), Candidate("x", ib["auc"], ib["se"])])
    paired = choose([Candidate("bce", ia["auc"], ia["se"], y, base), Candidate("x", ib["auc"], ib["se"], y, better)])
    assert unpaired.chosen == 0 and not unpaired.paired[0]
    assert paired.chosen == 1 and paired.paired[0] and paired.lead[0] > paired.half_width[0]


@pytest.fixture()
def trusted_data(tiny_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "trusted"
    shutil.copytree(tiny_data, root)
    add_trusted(root, fraction={"valid": 0.5, "valid_random": 0.0})
    return root


def _readers(path: Path) -> dict:
    cfg = Config()
    cfg.data.path = str(path)
    return split_readers(cfg.data, DataSchema.load(str(path)), 0, 1, 0, torch.device("cpu"))


def test_select_on_resolves_auto_and_refuses_what_the_data_lacks(trusted_data: Path, tiny_data: Path) -> None:
    r = _readers(trusted_data)
    auto = resolve_selection("auto", r)
    assert (auto.mode, auto.split) == ("trusted", "valid_trusted") and 600 < auto.trusted_rows < 900
    assert resolve_selection("random", r).split == "valid_random"
    assert resolve_selection("observed", r).split == "valid"
    del r["valid_random"]
    with pytest.raises(UsageError, match=r"eval.select_on=random: .*valid_random does not exist"):
        resolve_selection("random", r)
    plain = _readers(tiny_data)
    assert resolve_selection("auto", plain).mode == "observed"
    with pytest.raises(UsageError, match="eval.select_on=trusted: the schema names no trusted_label column"):
        resolve_selection("trusted", plain)
    with pytest.raises(UsageError, match="eval.select_on='best'"):
        resolve_selection("best", plain)
    cfg = Config()
    cfg.eval.select_on = "clean"
    with pytest.raises(UsageError, match="eval.select_on='clean'"):
        check_config(cfg)
    cfg.eval.select_on, cfg.eval.ci_level = "auto", 1.0
    with pytest.raises(UsageError, match="eval.ci_level=1.0"):
        check_config(cfg)


def test_a_run_exports_its_selected_epoch_and_says_why(trusted_data: Path, tmp_path: Path) -> None:
    from denoisrec.trainer.train import train

    def run(name: str, keep: bool) -> dict:
        cfg = Config()
        cfg.data.path, cfg.data.batch_size = str(trusted_data), 250
        cfg.run.out, cfg.run.epochs, cfg.run.curves, cfg.run.progress = str(tmp_path / name), 3, False, "none"
        cfg.optim.lr, cfg.optim.sparse_lr = 0.01, 0.2  # fast enough to overfit within 3 epochs
        cfg.eval.keep_selected = keep
        return train(cfg)

    s = run("kept", True)
    sel = s["selection"]
    records = [json.loads(x) for x in (tmp_path / "kept" / "metrics.jsonl").read_text().splitlines()]
    trusted = {}
    for x in records:
        if x["kind"] == "valid_trusted":
            trusted.setdefault(x["step"], x["auc"])  # the first record of a step: its own evaluation
    best = max(trusted, key=lambda k: (trusted[k], -k))
    assert sel["select_on"] == "trusted" and sel["split"] == "valid_trusted"
    assert sel["selected_step"] == best == sel["exported_step"]
    assert sel["auc"] == pytest.approx(trusted[best]) and sel["ci"][0] < sel["auc"] < sel["ci"][1]
    assert sel["rows"] == s["metrics"]["valid_trusted"]["rows"] and 600 < sel["rows"] < 900
    extra = read_model_file(str(tmp_path / "kept" / "model.pt")).extra
    assert extra["step"] == s["steps"] and (extra["restored_best_step"] or s["steps"]) == best
    z = np.load(tmp_path / "kept" / "selection_scores.npz")
    assert z["labels"].shape == (sel["rows"],) and set(np.unique(z["labels"])) <= {0.0, 1.0}
    last = run("last", False)["selection"]
    assert last["exported_step"] == s["steps"] and "eval.keep_selected=false" in last["why"]


def test_train_with_a_selection_the_data_lacks_is_one_line_exit_2(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from denoisrec.trainer.cli import main

    argv = ["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--set", "eval.select_on=trusted"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("denoisrec train: error: eval.select_on=trusted: the schema names no trusted_label column")
    assert "\n" not in err and not (tmp_path / "r" / "summary.json").exists()

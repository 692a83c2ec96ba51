"""``denoisrec bench tuned`` on tiny data with trusted signals (2 seeds, 2 candidates, 1 epoch): the numbers it
reports are the runs' own (clean-test AUCs from summary.json, gap closures from them), the choices are
``choose``'s, and the selection accuracy counts picks of the clean-best candidate.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from denoisrec.trainer.bench.tuned import family_of, selection_accuracy
from denoisrec.trainer.cli import main


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> str:
    from denoisrec.trainer.datasets.synthetic import PRESETS, generate, with_trusted

    root = tmp_path_factory.mktemp("tuned")
    for s in range(2):
        generate(str(root / f"fam-s{s}"), with_trusted(PRESETS["tiny"], 500, 500, 1500), seed=s)
    return str(root / "fam-s{seed}")


def test_bench_tuned_reports_the_runs_numbers(seeded: str, tmp_path: Path) -> None:
    out = tmp_path / "b"
    argv = ["bench", "tuned", "--data", seeded, "--seeds", "2", "--out", str(out), "--candidates", "bce,tce"]
    assert main([*argv, "--draws", "4", "--sizes", "100,400", "--set", "data.batch_size=500"]) == 0
    rep = json.loads((out / "tuned.json").read_text())
    fam, pts = rep["families"]["fam"], rep["points"]["fam"]
    for p in pts:
        for name in ("bce", "tce", "clean"):
            summary = json.loads((out / "fam" / f"seed{p['seed']}" / "runs" / name / "summary.json").read_text())
            got = p["clean_oracle"] if name == "clean" else p["test_clean_auc"][name]
            assert got == pytest.approx(summary["metrics"]["test_clean"]["auc"])
        assert p["tuned_trusted"] in ("bce", "tce") and set(p["accuracy"]) == {"100", "400"}
    bce = [p["test_clean_auc"]["bce"] for p in pts]
    clean = [p["clean_oracle"] for p in pts]
    tuned = [p["test_clean_auc"][p["tuned_trusted"]] for p in pts]
    rows = fam["rows"]
    assert rows["bce"]["mean"] == pytest.approx(np.mean(bce)) and rows["bce"]["std"] == pytest.approx(
        np.std(bce, ddof=1)
    )
    gap = (np.mean(tuned) - np.mean(bce)) / (np.mean(clean) - np.mean(bce))
    assert rows["tuned (trusted)"]["gap_closure"] == pytest.approx(gap)
    assert rows["bce"]["gap_closure"] == 0 and rows["clean"]["gap_closure"] == pytest.approx(1.0)
    assert "| fam | tuned (trusted) |" in (out / "tuned.md").read_text()


def test_selection_accuracy_counts_picks_of_the_clean_best() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.4).astype(np.float32)
    good = {"labels": y, "logits": (y * 3 + rng.normal(size=2000)).astype(np.float32)}
    noise = {"labels": y, "logits": rng.normal(size=2000).astype(np.float32)}
    # the informative candidate is the clean-best: every resample of 500 rows picks it, regret 0
    acc = selection_accuracy([noise, good], [0.6, 0.9], [500], draws=10, seed=0)
    assert acc["500"] == {"picks_clean_best": 1.0, "mean_regret": 0.0, "draws": 10}
    # when the clean test disagrees with the selection rows, every pick misses by 0.3
    acc = selection_accuracy([noise, good], [0.9, 0.6], [500], draws=10, seed=0)
    assert acc["500"]["picks_clean_best"] == 0.0 and acc["500"]["mean_regret"] == pytest.approx(0.3)


def test_family_of_drops_the_seed_part() -> None:
    assert family_of("/d/examination-s{seed}") == "examination" and family_of("/d/mix_{seed}/") == "mix"

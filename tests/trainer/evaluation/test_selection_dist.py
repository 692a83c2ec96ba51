"""The selection metrics with real gloo processes: on 1, 2 and 3 ranks (uneven shares, a rank's share not a
multiple of the batch), the AUC against the trusted labels of the valid rows that have one, its DeLong
interval, and the observed AUC on ``valid_random`` equal one process computing them here, from the files,
with the definitions (pairwise counts, DeLong's components from the pair matrix).
"""

import math
from pathlib import Path
from typing import Dict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import launch
from trusted_data import add_trusted
from trusted_eval import fixed_logits, launched

from denoisrec.trainer.evaluation.auc_interval import z_value


@pytest.fixture(scope="module")
def trusted_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from denoisrec.trainer.datasets.synthetic import PRESETS, generate

    root = tmp_path_factory.mktemp("trusted_tiny")
    generate(str(root), PRESETS["tiny"], seed=2)
    add_trusted(root, fraction={"valid": 0.3, "valid_random": 0.2}, flip=0.05, seed=4)
    return root


def reference(split: Path, target: str) -> Dict[str, float]:
    """AUC and DeLong's standard error by definition: the ψ matrix of every (positive, negative) pair."""
    t = pq.read_table(split, columns=["row_id", "label", "trusted_label"])
    ids = torch.from_numpy(t.column("row_id").to_numpy())
    observed = t.column("label").to_numpy().astype(np.float32)
    z = fixed_logits(ids, torch.from_numpy(observed)).numpy().astype(np.float64)
    y = observed if target == "observed" else t.column("trusted_label").cast(pa.float32()).to_numpy(False)
    has = ~np.isnan(y)
    z, y = z[has], y[has]
    x, w = z[y == 1], z[y == 0]
    psi = (x[:, None] > w[None, :]) + 0.5 * (x[:, None] == w[None, :])
    m, n = psi.shape
    v10, v01 = psi.mean(1), psi.mean(0)
    var = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    return {"auc": psi.mean(), "se": math.sqrt(var), "rows": int(has.sum()), "positives": m}


@pytest.mark.dist
@pytest.mark.parametrize("world", [1, 2, 3])
def test_trusted_and_random_selection_metrics_are_exact_on_any_world_size(trusted_tiny: Path, world: int) -> None:
    ranks = launch(launched, world, str(trusted_tiny))
    for r in ranks[1:]:
        assert str(r) == str(ranks[0]), "ranks disagree"  # the same broadcast dict (str: NaN-safe)
    got = ranks[0]
    cases = [
        ("valid", "trusted", got["valid"]["trusted"]),
        ("valid_random", "observed", got["valid_random"]["observed"]),
    ]
    for split, target, m in cases:
        ref = reference(trusted_tiny / split, target)
        if target == "trusted":
            assert 100 < ref["rows"] < 1500, "the fixture labels a part of the split"
        assert m["rows"] == ref["rows"] and m["positives"] == ref["positives"], (split, m)
        assert m["auc"] == pytest.approx(ref["auc"], abs=1e-12), split
        assert m["auc_se"] == pytest.approx(ref["se"], rel=1e-9), split
        z = z_value(0.95)
        assert m["auc_lo"] == pytest.approx(ref["auc"] - z * ref["se"], abs=1e-12)
        assert m["auc_hi"] == pytest.approx(min(1.0, ref["auc"] + z * ref["se"]), abs=1e-12)
        assert m["target"] == target
    # the observed target of the same valid pass scores every row, with no interval asked
    full = reference(trusted_tiny / "valid", "observed")
    assert got["valid"]["observed"]["rows"] == 1500 and "auc_lo" not in got["valid"]["observed"]
    assert got["valid"]["observed"]["auc"] == pytest.approx(full["auc"], abs=1e-12)

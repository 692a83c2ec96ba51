"""Platt calibration: the fit recovers a known miscalibration, improves logloss without changing the ranking,
and travels from ``denoisrec export --calibrate platt`` into ``predict --calibrator`` and the artefact.
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from denoisrec.models import ModelSpec, save_model_file
from denoisrec.trainer.cli import main
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.evaluation.metrics import auc, ece, logloss
from denoisrec.trainer.serving.calibration import fit_platt, load_calibrator


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_platt_recovers_a_known_miscalibration_and_keeps_auc() -> None:
    r = np.random.default_rng(0)
    z = r.normal(0, 2, 20000)  # the model's logits; the truth is sigmoid(0.5·z − 1): over-confident, too high
    y = (r.random(z.size) < _sigmoid(0.5 * z - 1.0)).astype(np.float64)
    c = fit_platt(z, y)
    assert c.a == pytest.approx(0.5, abs=0.03) and c.b == pytest.approx(-1.0, abs=0.05)
    before, after = logloss(y, _sigmoid(z)), logloss(y, _sigmoid(c.apply(z)))
    assert after < before - 0.05
    assert ece(y, _sigmoid(c.apply(z))) < 0.02 < ece(y, _sigmoid(z))
    assert auc(y, c.apply(z)) == auc(y, z)  # monotone: the ranking is unchanged
    # the fitted point is the optimum: small moves of (a, b) do not lower the logloss
    for da, db in ((0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01)):
        assert logloss(y, _sigmoid((c.a + da) * z + c.b + db)) >= after
    # saturated logits (a T-CE model's reach |z| > 100): plain Newton overshoots, the damped fit converges
    c30 = fit_platt(30 * z, y)
    assert c30.a == pytest.approx(0.5 / 30, rel=0.06) and c30.b == pytest.approx(c.b, abs=1e-6 + 0.05)
    with pytest.raises(ValueError, match="one class"):
        fit_platt(z, np.ones_like(z))
    with pytest.raises(ValueError, match="better than chance"):
        fit_platt(z, (z < 0).astype(float))


def test_export_calibrates_on_valid_and_predict_and_artefact_use_it(tiny_data: Path, tmp_path: Path, capsys) -> None:
    schema = DataSchema.load(str(tiny_data))
    spec = ModelSpec(
        "dcnv2",
        [(f.name, f.num_embeddings) for f in schema.sparse],
        len(schema.dense),
        8,
        params={"low_rank": 4, "mlp": [8]},
    )
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_model_file(str(run / "model.pt"), spec, spec.build(torch.device("cpu")).state_dict(), schema.to_dict())
    # A validation split whose labels follow sigmoid(3·z/std + 0.5): the raw scores are miscalibrated.
    valid = pq.read_table(next((tiny_data / "valid").glob("*.parquet")))
    assert (
        main(
            [
                "predict",
                "--model-file",
                str(run / "model.pt"),
                "--data",
                str(tiny_data / "valid"),
                "--out",
                str(tmp_path / "v.parquet"),
            ]
        )
        == 0
    )
    z = pq.read_table(tmp_path / "v.parquet").column("logit").to_numpy().astype(np.float64)
    a_true = 3.0 / z.std()
    labels = (np.random.default_rng(1).random(z.size) < _sigmoid(a_true * z + 0.5)).astype(np.int8)
    valid = valid.set_column(valid.schema.get_field_index("label"), "label", pa.array(labels))
    pq.write_table(valid, tmp_path / "valid.parquet")
    capsys.readouterr()

    assert (
        main(
            [
                "export",
                str(run),
                "--format",
                "torchscript",
                "--calibrate",
                "platt",
                "--valid",
                str(tmp_path / "valid.parquet"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Platt calibrator" in printed
    c = load_calibrator(str(run / "serving" / "torchscript" / "calibrator.json"))
    assert c.a == pytest.approx(a_true, rel=0.25)
    out = tmp_path / "cal.parquet"
    assert (
        main(
            [
                "predict",
                "--model-file",
                str(run / "model.pt"),
                "--data",
                str(tmp_path / "valid.parquet"),
                "--out",
                str(out),
                "--calibrator",
                str(run / "serving" / "torchscript" / "calibrator.json"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    t = pq.read_table(out)
    assert t.column_names == ["row_id", "logit", "score", "score_calibrated"]
    cal = t.column("score_calibrated").to_numpy().astype(np.float64)
    assert np.allclose(cal, _sigmoid(c.a * t.column("logit").to_numpy().astype(np.float64) + c.b), atol=1e-6)
    raw = t.column("score").to_numpy().astype(np.float64)
    assert logloss(labels, cal) < logloss(labels, raw) - 0.05
    assert "labels observed_calibrated" in printed
    # the artefact carries the same calibrator
    served = torch.jit.load(str(run / "serving" / "torchscript" / "serving.pt"))
    assert served.calibrated and served.platt_a == pytest.approx(c.a) and served.platt_b == pytest.approx(c.b)

"""The observation model's diagnostics tell the level apart from the shape: the common offset of the learnt
rates once, the per-value shape error after it, and f's level against the trusted positive rate (hand cases).
"""

import math

import pytest

from denoisrec.trainer.denoising.observation_report import (
    common_offset,
    compare,
    diagnostics_line,
    level_line,
    level_report,
)


def _truth() -> dict:
    return {
        "values": [0, 1, 2],
        "h": [0.1, 0.2, 0.3],
        "h_prime": [0.9, 0.8, 0.7],
        "rows_y0": [1, 1, 2],
        "rows_y1": [2, 1, 1],
    }


def test_a_level_error_is_one_common_offset_and_no_shape_error() -> None:
    # every learnt h 0.05 low and h' 0.03 high, in both features: the offset, with no shape error left
    learned = {
        f: {"values": [0, 1, 2], "h": [0.05, 0.15, 0.25], "h_prime": [0.93, 0.83, 0.73]} for f in ("position", "scene")
    }
    errors = compare(learned, {"position": _truth(), "scene": _truth()})
    for f in ("position", "scene"):
        assert errors[f]["h"]["offset"] == pytest.approx(-0.05) and errors[f]["h"]["mean_abs"] == pytest.approx(0.05)
        assert errors[f]["h"]["shape_mean_abs"] == pytest.approx(0.0, abs=1e-12)
        assert errors[f]["h_prime"]["offset"] == pytest.approx(0.03)
    off = common_offset(errors)
    assert off["h"]["offset"] == pytest.approx(-0.05) and off["h"]["spread"] == pytest.approx(0.0, abs=1e-12)
    line = diagnostics_line("obs.json", errors, off)
    assert "common offset h -0.050, h' +0.030" in line and "position: |h| 0.000, |h'| 0.000" in line


def test_shape_error_is_what_is_left_after_the_weighted_offset() -> None:
    # h learnt [0.1, 0.3, 0.3] against [0.1, 0.2, 0.3], rows [1, 1, 2]: d = [0, 0.1, 0]; offset 0.1/4 = 0.025;
    # |d - offset| = [0.025, 0.075, 0.025], weighted (0.025 + 0.075 + 2 * 0.025) / 4 = 0.0375
    learned = {"position": {"values": [0, 1, 2], "h": [0.1, 0.3, 0.3], "h_prime": [0.9, 0.8, 0.7]}}
    e = compare(learned, {"position": _truth()})["position"]["h"]
    assert e["offset"] == pytest.approx(0.025) and e["shape_mean_abs"] == pytest.approx(0.0375)
    assert e["mean_abs"] == pytest.approx(0.025) and e["shape_max_abs"] == pytest.approx(0.075)


def test_f_level_against_the_trusted_positive_rate() -> None:
    # 1,000 trusted rows, 350 positive; mean prediction / rate = 1.2: mean f 0.42, 0.07 above the rate
    lvl = level_report({"rows": 1000, "positives": 350, "calibration": 1.2}, 0.45)
    half = 1.959964 * math.sqrt(0.35 * 0.65 / 1000)
    assert lvl["trusted_positive_rate"] == 0.35 and lvl["interval"] == pytest.approx([0.35 - half, 0.35 + half])
    assert lvl["f_mean_trusted_rows"] == pytest.approx(0.42) and lvl["f_minus_rate_train"] == pytest.approx(0.10)
    assert "positive rate 0.350 [0.320, 0.380] on 1,000 valid rows; mean f there 0.420 (+0.070)" in level_line(lvl)
    assert level_report(None, 0.4) is None and level_report({"rows": 0, "positives": 0}, 0.4) is None

"""The figures read at a glance: integer ticks on integer axes, short runs drawn with their values, legends
outside the data, a title on every figure, missing peers shown as missing, and a bench PNG redrawn from its
JSON. Each figure function runs on one-point and multi-point inputs; the assertions read the matplotlib
objects (tick values, legend and axes extents, texts), not pixels.
"""

import json
from pathlib import Path
from typing import Any, Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from denoisrec.trainer.bench import peers, quality, serving  # noqa: E402
from denoisrec.trainer.bench.redraw import read_report, redraw  # noqa: E402
from denoisrec.trainer.bench.report import BenchReport, environment, save_plot  # noqa: E402
from denoisrec.trainer.denoising.observation_report import observation_figure  # noqa: E402
from denoisrec.trainer.denoising.observation_report import plot as observation_plot
from denoisrec.trainer.errors import UsageError  # noqa: E402
from denoisrec.trainer.outputs.curves import Series, curves_figure, write_curves  # noqa: E402


def _visible_ticks(ax: Any, axis: str = "x") -> List[float]:
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
    return [float(t) for t in ticks if lo - 1e-9 <= t <= hi + 1e-9]


def _assert_integer_ticks(ax: Any, axis: str = "x") -> None:
    ticks = _visible_ticks(ax, axis)
    assert ticks, f"no {axis} ticks"
    assert all(float(t).is_integer() for t in ticks), f"fractional {axis} ticks {ticks}"


def _extent(fig: Any, artist: Any) -> Any:
    fig.canvas.draw()
    return artist.get_window_extent(fig.canvas.get_renderer())


def _assert_legend_outside(fig: Any, legend: Any, axes: List[Any]) -> None:
    assert legend is not None, "no legend"
    box = _extent(fig, legend)
    for ax in axes:
        if ax.get_visible():
            assert not box.overlaps(_extent(fig, ax)), f"legend over the data of {ax.get_title()!r}"


def _title(fig: Any) -> str:
    t = fig._suptitle  # the figure's title (matplotlib keeps it here; no public getter)
    return t.get_text() if t is not None else ""


def _series(epochs: int, with_decisions: bool = True, name: str = "observation") -> Series:
    e = [float(i + 1) for i in range(epochs)]
    half = [x - 0.5 for x in e] + e  # train records twice an epoch
    half.sort()
    s = Series(name)
    s.clean_auc = [(x, 0.90 + 0.01 * i) for i, x in enumerate(e)]
    s.valid_auc = [(x, 0.70) for x in e]
    s.loss_noisy = [(x, 1.0 + 0.1 * i) for i, x in enumerate(half)]
    s.loss_clean = [(x, 0.5) for x in half]
    s.random_precision = [(x, 0.25) for x in half]
    if with_decisions:
        s.precision = [(x, 0.5 + 0.05 * i) for i, x in enumerate(half)]
        s.recall = [(x, 0.3) for x in half]
    return s


@pytest.mark.parametrize("epochs", [1, 3])
def test_curves_integer_epochs_short_runs_legends_below_and_a_title(tmp_path: Path, epochs: int) -> None:
    s = _series(epochs)
    fig = curves_figure([s])
    axes = fig.axes
    for ax in axes:
        _assert_integer_ticks(ax, "x")
        lo, hi = ax.get_xlim()
        assert lo == 0.0 and hi > epochs, "the x axis runs from epoch 0 past the last point"
        _assert_legend_outside(fig, ax.get_legend(), axes)
    texts = [t.get_text() for t in axes[0].texts]
    if epochs == 1:  # one evaluation: its value is written beside the dot, and the y axis is not a ±0.0 band
        assert "0.9000" in texts and "0.7000" in texts
        y0, y1 = axes[0].get_ylim()
        assert y1 - y0 >= 0.02
    else:
        assert "0.9200" in texts  # three points are still short: labelled
    plt.close(fig)
    path = write_curves([s], str(tmp_path / "curves.png"), title="dlrm + observation")
    assert Path(path).read_bytes()[:4] == b"\x89PNG"


def test_curves_draw_no_lone_random_line_for_a_method_that_handles_nothing() -> None:
    fig = curves_figure([_series(3, with_decisions=False, name="bce"), _series(3, name="observation x=1")])
    noise = fig.axes[2]
    labels = [line.get_label() for line in noise.lines]
    assert labels and not any(label.startswith("bce:") for label in labels), labels
    assert any("bce" in t.get_text() and "handles no positives" in t.get_text() for t in noise.texts)
    plt.close(fig)
    fig = curves_figure([_series(1, with_decisions=False, name="bce")])
    noise = fig.axes[2]
    assert not noise.lines and any("handles no positives" in t.get_text() for t in noise.texts)
    plt.close(fig)


def test_curves_figure_has_the_default_title_when_none_is_given(tmp_path: Path, monkeypatch: Any) -> None:
    seen: Dict[str, str] = {}
    real = plt.Figure.savefig

    def spy(self: Any, *a: Any, **k: Any) -> None:
        seen["title"] = _title(self)
        real(self, *a, **k)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    write_curves([_series(2)], str(tmp_path / "c.png"))
    assert seen["title"]


def _observation_report(values: List[int]) -> Dict[str, Any]:
    n = len(values)
    return {
        "learned": {
            "device": {
                "values": values,
                "h": [0.2] * n,
                "h_prime": [0.8] * n,
                "true_h": [0.25] * n,
                "true_h_prime": [0.85] * n,
            },
            "position": {"values": list(range(1, 31)), "h": [0.1] * 30, "h_prime": [0.9] * 30},
        }
    }


@pytest.mark.parametrize("values", [[2], [0, 1, 2, 3]])
def test_observation_figure_integer_values_a_title_and_the_legend_beside(tmp_path: Path, values: List[int]) -> None:
    fig, title = observation_figure(_observation_report(values))
    assert "observation model" in title and "truth" in title
    for ax in fig.axes:
        _assert_integer_ticks(ax, "x")
    _assert_legend_outside(fig, fig.axes[-1].get_legend(), fig.axes)
    plt.close(fig)
    path = observation_plot(_observation_report(values), str(tmp_path / "observation.png"))
    assert path and Path(path).read_bytes()[:4] == b"\x89PNG"


def _quality_report(methods: List[str], points: int) -> BenchReport:
    rows, runs = [], []
    for i, m in enumerate(["bce", "clean"] + methods):
        rows.append({"method": m, "test_clean_auc": 0.90 + 0.001 * i, "test_clean_auc_std": 0.002})
        decisions = m not in ("bce", "clean", "observation")
        for seed in (0, 1):
            curve = [
                {"step": 10 * (k + 1), "precision": 0.6, "recall": 0.4, "random_precision": 0.25} for k in range(points)
            ]
            runs.append({"method": m, "seed": seed, "diagnostics": {"has_decisions": decisions, "curve": curve}})
    rows[-1]["test_clean_auc_std"] = float("nan")  # one seed: the JSON holds null
    rep = BenchReport("quality", params={"data": "data/tiny", "model": "dlrm", "seeds": 2, "epochs": 2}, env={})
    rep.rows, rep.raw = rows, {"runs": runs, "sweeps": {}}
    return rep


TEN = ["tce", "rce", "dart", "lcd", "lcd_re", "bootstrap", "bootstrap_soft", "deca_p", "observation", "withheld"]


@pytest.mark.parametrize("points", [1, 20])
def test_quality_figure_small_multiples_for_ten_methods(tmp_path: Path, points: int) -> None:
    rep = _quality_report(TEN, points)
    fig = plt.figure()
    quality.plot(fig, rep)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.lines and ax.get_ylim() == (0.0, 1.0)]
    with_decisions = [m for m in TEN if m != "observation"]
    assert sorted(ax.get_title() for ax in panels) == sorted(with_decisions)
    assert all(len(ax.lines) == 3 and ax.get_legend() is None for ax in panels), "three lines, no inner legend"
    for ax in panels:
        _assert_integer_ticks(ax, "x")
    auc = next(ax for ax in fig.axes if ax.get_title() == "clean-test AUC")
    labels = [t.get_text() for t in auc.get_yticklabels()]
    assert labels[0].startswith("bce  0.9000 ± 0.0020") and len(labels) == 2 + len(TEN)
    fig.canvas.draw()
    _assert_legend_outside(fig, auc.get_legend(), fig.axes)
    grid_legend = [leg for sub in fig.subfigs for leg in sub.legends]
    assert len(grid_legend) == 1
    _assert_legend_outside(fig, grid_legend[0], fig.axes)
    assert "bench quality" in _title(fig)
    assert any("observation" in sub._suptitle.get_text() for sub in fig.subfigs if sub._suptitle)
    plt.close(fig)
    assert save_plot(str(tmp_path / "q.png"), lambda f: quality.plot(f, rep))


def _peers_report() -> BenchReport:
    rep = BenchReport("peers", params={"data": "data/tiny", "epochs": 1}, env={})
    ok = {"status": "ok", "processes": 1}
    rep.rows = [
        {"system": "deepctr_torch", "package": "deepctr-torch", "processes": 1, "status": "not installed (pip ...)"},
        {"system": "torchfm", "package": "torchfm", **ok, "samples_per_s": 1000.0, "auc": 0.7},
        {"system": "denoisrec", "package": "denoisrec", **ok, "samples_per_s": 3000.0, "auc": 0.71},
        {"system": "denoisrec", "package": "denoisrec", "processes": 2, "status": "failed: boom"},
    ]
    return rep


def test_peers_figure_shows_missing_peers_as_missing(tmp_path: Path) -> None:
    rep = _peers_report()
    fig = plt.figure()
    peers.plot(fig, rep)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) == 4 and "deepctr_torch" in labels[0] and "(missing)" in labels[0]
    assert "(missing)" in labels[3] and "(missing)" not in labels[1]
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "not installed" in texts and "failed: boom" in texts
    _assert_legend_outside(fig, ax.get_legend(), [ax])
    assert "bench peers" in _title(fig)
    plt.close(fig)
    assert save_plot(str(tmp_path / "p.png"), lambda f: peers.plot(f, rep))


def _serving_report(sizes: List[int]) -> BenchReport:
    rep = BenchReport(
        "serving", params={"model": "deepfm", "run": "runs/x", "rows": 2048, "threads": 1, "rounds": 1}, env={}
    )
    rep.raw = {
        "artefacts": {"torchscript": {"bytes": 2**20, "load_seconds": 0.4, "export_seconds": 2.0}},
        "rows_per_s": {str(b): {"torchrec model (predict)": 100.0 * b, "torchscript": 150.0 * b} for b in sizes},
    }
    return rep


@pytest.mark.parametrize("sizes", [[1], [1, 64, 1024]])
def test_serving_figure_has_ratios_a_title_and_legends_outside(sizes: List[int]) -> None:
    fig = plt.figure()
    serving.plot(fig, _serving_report(sizes))
    ax, ax2 = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{b:,}" for b in sizes]
    assert "1.50×" in [t.get_text() for t in ax.texts]
    for a in (ax, ax2):
        _assert_legend_outside(fig, a.get_legend(), [ax, ax2])
    assert "bench serving" in _title(fig)
    plt.close(fig)


def test_redraw_reads_a_bench_json_back_and_writes_the_png(tmp_path: Path) -> None:
    rep = _quality_report(TEN[:3], 5)
    rep.env = environment()
    paths = rep.write(str(tmp_path), plot=None)  # the JSON only, as a bench on a machine without matplotlib
    assert "png" not in paths
    back = read_report(paths["json"])
    assert back.name == "quality" and back.rows[-1]["test_clean_auc_std"] is None  # NaN came back as null
    png = redraw(paths["json"])
    assert png == str(tmp_path / "quality.png") and Path(png).read_bytes()[:4] == b"\x89PNG"
    obs = tmp_path / "observation.json"
    obs.write_text(json.dumps(_observation_report([0, 1])))
    assert redraw(str(obs), str(tmp_path / "o.png")) == str(tmp_path / "o.png")
    other = tmp_path / "summary.json"
    other.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(UsageError, match="summary.json: not a bench report"):
        redraw(str(other))


def test_bench_redraw_command_writes_the_png_and_names_a_wrong_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from denoisrec.trainer.cli import main

    rep = _peers_report()
    rep.env = environment()
    paths = rep.write(str(tmp_path), plot=None)
    assert main(["bench", "redraw", paths["json"], "--out", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert f"figure: {tmp_path / 'fig.png'}" in capsys.readouterr().out
    assert main(["bench", "redraw", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.json: no such file" in err[0]


def test_throughput_figure_one_legend_beside_the_panels_and_a_title() -> None:
    from denoisrec.trainer.bench import throughput

    rep = BenchReport("throughput", params={"data": "data/tiny", "model": "dlrm"}, env={})
    for ws in (1, 2):
        for m, v in (("bce", 100.0), ("tce", 97.0), ("deca", 60.0)):
            rep.rows.append(
                {"world_size": ws, "method": m, "batch_size": 256, "samples_per_s": v, "samples_per_s_p25": v - 2,
                 "samples_per_s_p75": v + 2, "ratio": v / 100, "meets_target": None if m == "bce" else v > 90}
            )  # fmt: skip
    fig = plt.figure()
    throughput.plot(fig, rep)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    _assert_legend_outside(fig, legends[0], fig.axes)
    labels = [t.get_text() for t in legends[0].get_texts()]
    assert "BCE baseline" in labels and "below its target" in labels
    assert "bench throughput" in _title(fig)
    plt.close(fig)

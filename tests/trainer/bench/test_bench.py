"""`denoisrec bench`: the quick modes end to end (smoke tests of the real code paths), with every reported
number checked against the raw numbers it was computed from. Figures are measured by the full benches, never
here.
"""

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from denoisrec.models.dropout import Dropout16
from denoisrec.trainer.bench.quality import default_params, grid_points, select_best
from denoisrec.trainer.bench.report import BenchReport, markdown_table, summarize
from denoisrec.trainer.cli import main


def test_report_writes_json_markdown_png_and_environment(tmp_path: Path) -> None:
    rep = BenchReport("demo", params={"k": 1})
    rep.rows = [{"method": "bce", "v": 1234.5, "x": float("nan")}]
    rep.markdown = markdown_table(rep.rows, [("method", "method", "{}"), ("v", "v", "{:,.1f}"), ("x", "x", "{:.2f}")])
    paths = rep.write(str(tmp_path), plot=lambda fig: fig.add_subplot(111).bar(["bce"], [1.0]))
    d = json.loads(Path(paths["json"]).read_text())
    assert d["rows"][0]["x"] is None and d["params"] == {"k": 1}
    env = d["environment"]
    assert env["cpu_cores"] >= 1 and env["versions"]["torch"] and env["versions"]["torchrec"] and env["cpu_model"]
    assert env["device"] in ("cpu",) or env["cuda"]
    assert "| bce | 1,234.5 | — |" in Path(paths["md"]).read_text()
    assert Path(paths["png"]).read_bytes()[:4] == b"\x89PNG"
    s = summarize([3.0, 1.0, 2.0, 10.0])
    assert s["median"] == 2.5 and s["p25"] == 1.75 and s["p75"] == 4.75 and s["rel_spread"] == pytest.approx(3 / 2.5)


def test_grid_points_and_selection_use_validation_only() -> None:
    from denoisrec.denoisers import TruncatedBCE

    class Gridded(TruncatedBCE):
        name = "tce_grid_unit"
        GRID = {"eps_max": [0.1, 0.2], "num_gradual": [10, 20]}

    ofat = grid_points(Gridded, {}, "ofat", 24)
    assert ofat[0] == {"eps_max": 0.2, "num_gradual": "1ep"}  # the defaults come first
    assert {"eps_max": 0.1, "num_gradual": "1ep"} in ofat and {"eps_max": 0.2, "num_gradual": 10} in ofat
    assert len(ofat) == 1 + 1 + 2  # eps 0.2 is the default already
    assert len(grid_points(Gridded, {}, "full", 24)) == 1 + 4
    assert grid_points(Gridded, {"num_gradual": 5}, "ofat", 24) == [
        {"eps_max": 0.2, "num_gradual": 5},
        {"eps_max": 0.1, "num_gradual": 5},
    ]
    with pytest.raises(ValueError, match="max-grid"):
        grid_points(Gridded, {}, "full", 3)
    pts = [  # the selection metric (eval.select_on) chooses; observed validation and the test do not
        {"select_auc": 0.7, "valid_auc": 0.9, "test": 0.99},
        {"select_auc": 0.8, "valid_auc": 0.6, "test": 0.1},
        {"select_auc": 0.8},
        {"select_auc": float("nan")},
    ]
    assert select_best(pts) == 1


def test_grid_points_take_an_empty_list_and_an_empty_tuple_as_one_point() -> None:
    from denoisrec.denoisers.observation import ObservationTCE

    assert ObservationTCE.GRID["hidden"][0] == [] and default_params(ObservationTCE)["hidden"] == ()
    ofat = grid_points(ObservationTCE, {}, "ofat", 24)
    assert [p["hidden"] for p in ofat].count(()) == len(ofat) - 1  # hidden=[] is the default, not a new point
    assert [list(p["hidden"]) for p in ofat].count([32]) == 1
    assert len(ofat) == 1 + 2 + 1  # eps_max 0.05 and 0.2 beside the default 0.1; hidden [32]


@pytest.mark.dist
def test_bench_throughput_quick(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # One rank in this process, three under torchrun (an odd world size; one launch keeps the test short).
    out = tmp_path / "b"
    assert (
        main(
            [
                "bench",
                "throughput",
                "--quick",
                "--denoisers",
                "tce,rce",
                "--ranks",
                "1,3",
                "--count-ranks",
                "",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    d = json.loads((out / "throughput.json").read_text())
    assert (out / "throughput.md").exists() and (out / "throughput.png").exists()
    said = capsys.readouterr().out
    assert said.count("bench throughput: timed ") == 1, said  # the same step on 1 and 3 ranks: said once
    raw = d["raw"]["per_world_size"]
    assert sorted(raw) == ["1", "3"] and raw["3"]["mode"] == "time" and raw["3"]["world_size"] == 3
    rows = {(r["world_size"], r["method"]): r for r in d["rows"]}
    assert sorted(rows) == [(w, m) for w in (1, 3) for m in ("bce", "rce", "tce")]
    for (ws, m), r in rows.items():
        rates, base = raw[str(ws)]["rates"][m], raw[str(ws)]["rates"]["bce"]
        assert len(rates) == 5 and all(x > 0 for x in rates)
        assert r["samples_per_s"] == pytest.approx(statistics.median(rates))
        assert r["ratio"] == pytest.approx(statistics.median(x / b for x, b in zip(rates, base)))
        assert r["step_ms"] == pytest.approx(256 * ws / r["samples_per_s"] * 1000)
    assert rows[(1, "bce")]["ratio"] == 1.0 and rows[(3, "tce")]["target"] == 0.97
    c = d["raw"]["collectives"]
    for m in ("bce", "rce", "tce"):
        assert c[m]["1"] == {"calls_per_step": 0.0, "bytes_per_step": 0.0, "max_call_bytes": 0}  # one process
    from denoisrec.denoisers.collectives import BINS, SHIFTS

    # BCE: one all-reduce of the float64 sums [Σ w·ℓ, Σ count]; R-CE adds Σ w to the same vector.
    assert c["bce"]["3"] == {"calls_per_step": 1.0, "bytes_per_step": 2 * 8, "max_call_bytes": 2 * 8}
    assert c["rce"]["3"] == {"calls_per_step": 1.0, "bytes_per_step": 3 * 8, "max_call_bytes": 3 * 8}
    # T-CE: only the radix select's all-reduces (on CPU it stops once a round has decided). Each round carries
    # a [BINS] count and a [BINS] loss-sum histogram; the first also the guessed second digit's two rows and
    # [B, Σℓ], so the loss value needs no all-reduce of its own.
    for ws in ("1", "3"):
        assert c["bce"][ws]["max_call_bytes"] == (16 if ws == "3" else 0)
    t = c["tce"]["3"]
    rounds = t["calls_per_step"]
    assert 1 <= rounds < len(SHIFTS)  # early exit: fewer than the 6 rounds
    assert t["bytes_per_step"] == pytest.approx((4 * BINS + 2) * 8 + (rounds - 1) * 2 * BINS * 8)
    assert t["max_call_bytes"] == (4 * BINS + 2) * 8  # the first round, whatever the ranks


def test_bench_quality_quick_with_a_swept_denoiser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from denoisrec.denoisers import DENOISERS, TruncatedBCE

    class Gridded(TruncatedBCE):
        name = "tce_grid"
        GRID = {"eps_max": [0.05]}

    monkeypatch.setitem(DENOISERS, "tce_grid", Gridded)
    out = tmp_path / "q"
    assert (
        main(
            [
                "bench",
                "quality",
                "--quick",
                "--denoisers",
                "tce_grid",
                "-p",
                "tce_grid.num_gradual=5",
                "--curve-points",
                "1000",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    d = json.loads((out / "quality.json").read_text())
    assert (out / "quality.md").exists() and (out / "quality.png").exists()
    runs, rows = d["raw"]["runs"], {r["method"]: r for r in d["rows"]}
    assert sorted(rows) == ["bce", "clean", "tce_grid"]
    # Sweep: defaults (eps 0.2) and eps 0.05 on seed 0; the better validation AUC wins.
    sw = d["raw"]["sweeps"]["tce_grid"]
    assert [p["params"] for p in sw["points"]] == [
        {"eps_max": 0.2, "num_gradual": 5},
        {"eps_max": 0.05, "num_gradual": 5},
    ]
    assert sw["selected"] == int(np.argmax([p["select_auc"] for p in sw["points"]]))
    assert rows["tce_grid"]["params"] == sw["points"][sw["selected"]]["params"]
    # Aggregates are the seeds' mean ± std; RealImp and gap closure follow their formulas.
    for m, row in rows.items():
        aucs = [r["test_clean"]["auc"] for r in runs if r["method"] == m]
        assert len(aucs) == 2 and row["test_clean_auc"] == pytest.approx(np.mean(aucs))
        assert row["test_clean_auc_std"] == pytest.approx(np.std(aucs, ddof=1))
        finals = [r["epoch_curve"][-1]["test_clean_auc"] for r in runs if r["method"] == m]
        assert row["final_epoch_clean_auc"] == pytest.approx(np.mean(finals))
    base, clean, t = (rows[m]["test_clean_auc"] for m in ("bce", "clean", "tce_grid"))
    assert rows["tce_grid"]["real_imp"] == pytest.approx((t - 0.5) / (base - 0.5) - 1)
    assert rows["tce_grid"]["gap_closure"] == pytest.approx((t - base) / (clean - base))
    assert rows["clean"]["gap_closure"] == pytest.approx(1.0)
    # The oracle trains on clean labels and is validated against them; the others on observed labels.
    assert {r["valid"]["target"] for r in runs if r["method"] == "clean"} == {"clean"}
    assert {r["valid"]["target"] for r in runs if r["method"] != "clean"} == {"observed"}
    # Noise identification, read from the run's own metrics.jsonl (the denoiser's report, logged every step):
    # T-CE drops min(⌊ε(T)·B⌋, positives) per step, ε(T) = min(T·ε_max/g, ε_max).
    eps, g, b = rows["tce_grid"]["params"]["eps_max"], 5, 500
    for r in (r for r in runs if r["method"] == "tce_grid"):
        curve = r["diagnostics"]["curve"]
        assert len(curve) == r["steps"] == 2 * 12  # tiny: 6,000 rows in batches of 500, 2 epochs
        for step, point in enumerate(curve):
            expect = min(math.floor(min(step * eps / g, eps) * b + 1e-9), point["candidates"])
            assert point["handled"] == expect and point["step"] == step + 1
        tot = r["diagnostics"]["total"]
        assert tot["precision"] == pytest.approx(tot["handled_noisy"] / tot["handled"])
        assert tot["recall"] == pytest.approx(tot["handled_noisy"] / tot["noisy_candidates"])
        assert tot["random_precision"] == pytest.approx(tot["noisy_candidates"] / tot["candidates"])
        assert tot["handled"] == sum(p["handled"] for p in curve)
    assert not rows["bce"]["has_decisions"] and rows["tce_grid"]["has_decisions"]
    assert "tce_grid" in (out / "quality.md").read_text()
    # --reuse: the same bench again reads every finished run back instead of retraining it.
    summaries = sorted((out / "quality-runs").glob("*/summary.json"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    argv = ["bench", "quality", "--quick", "--denoisers", "tce_grid", "-p", "tce_grid.num_gradual=5"]
    assert main([*argv, "--curve-points", "1000", "--out", str(out), "--reuse"]) == 0
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    again = {r["method"]: r for r in json.loads((out / "quality.json").read_text())["rows"]}
    assert {m: r["test_clean_auc"] for m, r in again.items()} == {m: r["test_clean_auc"] for m, r in rows.items()}


def test_bench_peers_quick(tmp_path: Path) -> None:
    from denoisrec.models import MODELS
    from denoisrec.trainer.data.schema import DataSchema

    out = tmp_path / "p"
    assert main(["bench", "peers", "--quick", "--out", str(out)]) == 0
    d = json.loads((out / "peers.json").read_text())
    assert (out / "peers.md").exists()
    view = DataSchema.load(str(out / "peers-data"))
    assert view.dense == [] and not any(f.multi_hot for f in view.sparse) and len(view.sparse) == 15
    rows = d["rows"]
    for name in ("deepctr_torch", "torchfm"):
        r = next(r for r in rows if r["system"] == name)
        try:
            __import__(name)
        except ImportError:
            assert r["status"].startswith("not installed")
            continue
        assert r["status"] == "ok" and r["samples_per_s"] > 0 and 0.0 <= r["auc"] <= 1.0
    dn = [r for r in rows if r["system"] == "denoisrec"]
    assert [r["processes"] for r in dn] == [1, 2]
    for r in dn:
        if "deepfm" in MODELS:
            assert r["status"] == "ok" and r["samples_per_s"] > 0 and r["auc"] > 0.5
        else:
            assert r["status"].startswith("failed: --model 'deepfm': unknown model")


def test_deepfm_overrides_name_the_registered_deepfm_arguments() -> None:
    from denoisrec.models import build_model, embedding_bag_collection
    from denoisrec.trainer.bench.peers import deepfm_overrides
    from denoisrec.trainer.config.tree import Config, apply_overrides

    cfg = apply_overrides(Config(), deepfm_overrides([8, 4], 0.25))
    assert cfg.model.params == {"mlp": [8, 4], "dropout": 0.25}
    ebc = embedding_bag_collection([("a", 10), ("b", 7)], 4)
    model = build_model("deepfm", ebc, 0, **cfg.model.params)  # unknown options would raise here
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths[:2] == [8, 4], widths
    assert any(isinstance(m, Dropout16) and m.p == 0.25 for m in model.modules())


def test_quality_default_params_leave_out_what_the_trainer_injects() -> None:
    from denoisrec.denoisers import DENOISERS
    from denoisrec.trainer.bench.quality import default_params

    d = default_params(DENOISERS["deca_p"])
    assert d["objective"] == "marginal" and d["C1"] is None and not {"tables", "device", "prior"} & set(d)
    assert default_params(DENOISERS["tce"]) == {"eps_max": 0.2, "num_gradual": "1ep"}


def test_quality_methods_add_the_withheld_baseline() -> None:
    from denoisrec.trainer.bench.quality import quality_methods

    assert quality_methods("withheld,observation") == ["bce", "withheld", "observation"]
    assert quality_methods("tce") == ["bce", "tce"]
    assert quality_methods("withheld") == ["bce", "withheld"]
    assert quality_methods("observation,oracle_noise,withheld") == ["bce", "withheld", "oracle_noise", "observation"]
    with pytest.raises(ValueError, match="unknown denoiser"):
        quality_methods("withheld,nope")


def test_oracle_noise_needs_the_generators_noise_model(tmp_path: Path) -> None:
    from denoisrec.trainer.bench.quality import oracle_noise_file

    with pytest.raises(ValueError, match="oracle_noise: .*noise_model.json is missing"):
        oracle_noise_file(str(tmp_path))
    (tmp_path / "noise_model.json").write_text("{}")
    assert oracle_noise_file(str(tmp_path)) == str(tmp_path / "noise_model.json")


def test_bench_serving_quick(tiny_data: Path, tmp_path: Path) -> None:
    from denoisrec.models import ModelSpec, save_model_file
    from denoisrec.trainer.data.schema import DataSchema

    schema = DataSchema.load(str(tiny_data))
    spec = ModelSpec(
        "deepfm", [(f.name, f.num_embeddings) for f in schema.sparse], len(schema.dense), 8, params={"mlp": [8]}
    )
    save_model_file(
        str(tmp_path / "run" / "model.pt"), spec, spec.build(torch.device("cpu")).state_dict(), schema.to_dict()
    )
    out = tmp_path / "bench"
    assert (
        main(
            [
                "bench",
                "serving",
                "--run",
                str(tmp_path / "run"),
                "--data",
                str(tiny_data / "test"),
                "--out",
                str(out),
                "--quick",
            ]
        )
        == 0
    )
    d = json.loads((out / "serving.json").read_text())
    r = d["raw"]
    assert r["max_abs_diff"]["torchscript"] <= 1e-5 and r["artefacts"]["torchscript"]["bytes"] > 0
    assert set(r["rows_per_s"]) == {"1", "256"} and all(v > 0 for d in r["rows_per_s"].values() for v in d.values())
    assert d["bench"] == "serving" and d["environment"]["versions"]["torch"] and d["environment"]["cpu_model"]
    assert {row["batch_size"] for row in d["rows"]} == {1, 256}
    md = (out / "serving.md").read_text()
    assert "| torchscript |" in md and "torch " in md  # the table under the environment line
    assert (out / "serving.png").read_bytes()[:4] == b"\x89PNG"


def test_peers_view_gives_every_table_the_asked_rows(tiny_data: Path, tmp_path: Path) -> None:
    from denoisrec.trainer.bench.peers import single_valued_view
    from denoisrec.trainer.data.schema import DataSchema
    from denoisrec.trainer.datasets.synthetic import PRESETS, schema_for

    view = single_valued_view(str(tiny_data), str(tmp_path / "v"), table_rows=1000)
    assert [f.num_embeddings for f in view.sparse] == [1000] * 15
    assert DataSchema.load(str(tmp_path / "v")).sparse == view.sparse  # what denoisrec's run reads
    with pytest.raises(ValueError, match=r"--table-rows 100: fewer rows than the vocabulary of \['user_id'"):
        single_valued_view(str(tiny_data), str(tmp_path / "w"), table_rows=100)
    criteo = schema_for(PRESETS["criteo"])  # the Criteo-like shape: 26 single-valued features, 13 dense
    single = [f for f in criteo.sparse if not f.multi_hot]
    assert len(single) == 26 and len(criteo.dense) == 13
    assert max(f.num_embeddings for f in single) == 100_000

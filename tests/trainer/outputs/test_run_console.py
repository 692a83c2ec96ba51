"""A default run shows the effect of denoising (evaluations every epoch, curves.png, the clean-AUC line) on a
quiet console; ``denoisrec report`` compares runs; third-party warnings go to a file.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
from conftest import ROOT

from denoisrec.trainer.cli import main
from denoisrec.trainer.outputs.curves import auc_line, read_series
from denoisrec.trainer.outputs.runlog import RunLog
from denoisrec.trainer.outputs.warnings_file import WarningsToFile

OURS = str(ROOT / "trainer" / "outputs" / "warnings_file.py")  # a file in denoisrec's own source tree


def test_default_run_evaluates_every_epoch_and_draws_curves(
    tiny_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(tiny_data),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "1000",
        "--set",
        "run.log_every=2",
        "run.export=false",
    ]
    assert main(args) == 0
    first = capfd.readouterr()
    console = first.out + first.err
    lines = console.splitlines()
    assert lines[1] == f"output folder: {out}" and lines[-1] == f"output folder: {out}"
    # third-party warnings are in the file, counted in one line, and not on the console
    assert "WARNING" not in console and "Warning" not in console
    assert (out / "warnings.log").stat().st_size > 0 and "third-party warnings:" in console
    assert "nan" not in console  # BCE handles nothing: no truth_precision field
    assert "denoiser=bce()" in console and "sharding:" in console
    # every epoch evaluated on validation and the clean test; the line shows the curve
    s = json.loads((out / "summary.json").read_text())
    assert [e["step"] for e in s["evaluations"]] == [6]  # 6 steps/epoch; the last epoch is the final evaluation
    assert set(s["evaluations"][0]) == {"step", "valid", "test_clean"}
    series = read_series(str(out))
    assert [x for x, _ in series.clean_auc] == [1.0, 2.0] and len(series.valid_auc) == 2
    assert series.loss_noisy and series.loss_clean and series.random_precision
    assert not series.precision and not series.recall  # BCE handles nothing
    assert auc_line(series) in console and "clean-test AUC by epoch: " in console
    assert (out / "curves.png").stat().st_size > 10_000 and f"curves: {out / 'curves.png'}" in console
    # `denoisrec report` puts two runs side by side
    other = tmp_path / "other"
    other.mkdir()
    for name in ("metrics.jsonl", "summary.json"):
        text = (out / name).read_text()
        (other / name).write_text(text.replace('"name": "bce"', '"name": "tce"'))
    assert (
        main(["report", str(out), str(other), "--out", str(tmp_path / "cmp.png"), "--json", str(tmp_path / "cmp.json")])
        == 0
    )
    table = json.loads((tmp_path / "cmp.json").read_text())
    assert [t["method"] for t in table] == ["bce", "tce"]
    assert table[0]["clean_auc"] == pytest.approx(s["metrics"]["test_clean"]["auc"])
    assert table[0]["clean_by_epoch"] == [round(v, 4) for _, v in series.clean_auc]
    assert (tmp_path / "cmp.png").stat().st_size > 10_000
    # without --out: one folder per comparison beside the first run; another comparison does not overwrite it
    assert main(["report", str(out), str(other)]) == 0
    first = tmp_path / "reports" / f"{out.name}-vs-other"
    assert json.loads((first / "table.json").read_text()) == table
    assert (first / "report.png").stat().st_size > 10_000
    before = (first / "report.png").read_bytes()
    assert main(["report", str(other), str(out)]) == 0
    assert (tmp_path / "reports" / f"other-vs-{out.name}" / "report.png").is_file()
    assert (first / "report.png").read_bytes() == before


def test_report_on_a_folder_that_is_not_a_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no metrics.jsonl" in err


def test_warnings_to_file_keeps_ours_on_the_console(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with WarningsToFile(str(tmp_path), rank=0) as w:
            w.open()
            warnings.warn_explicit("planner says hi", UserWarning, "/x/site-packages/torchrec/planner.py", 3)
            warnings.warn_explicit("deprecated thing", FutureWarning, OURS, 5)
            for line in (7, 8, 9):  # ours, raised three times: one clean line, once
                warnings.warn_explicit("check your\n  optimizer", UserWarning, OURS, line)
            with WarningsToFile(None) as inner:  # nested (a bench running train()): still once
                warnings.warn_explicit("check your optimizer", UserWarning, OURS, 10)
            logging.getLogger().warning("Sharding spec not found")
            logging.getLogger("torchrec.distributed.utils").warning("caching params will be ignored")
            logging.getLogger("torch.fx").warning("is_fx_tracing")
    err = capsys.readouterr().err
    assert err == "warning: check your optimizer\n"  # not Python's file:line form
    assert inner.count == 0
    text = (tmp_path / "warnings.log").read_text()
    for words in ("planner says hi", "deprecated thing", "root: Sharding spec", "caching params", "is_fx_tracing"):
        assert words in text
    assert w.count == 5 and w.summary() == f"third-party warnings: 5 line(s) in {tmp_path / 'warnings.log'}"
    logging.getLogger().warning("after")  # handlers restored: nothing more in the file
    assert (tmp_path / "warnings.log").read_text() == text


def test_runlog_resumed_run_appends(tmp_path: Path) -> None:
    log = RunLog(str(tmp_path), True)
    log.log_dict({"loss": 1.0}, 1, "train")
    log.close()
    log = RunLog(str(tmp_path), True, append=True)
    log.log_dict({"loss": 0.5}, 2, "train")
    log.close()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2  # one stream, continued
    RunLog(str(tmp_path), True).close()  # a new run: starts afresh
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1


def test_log_line_is_short_and_leaves_out_what_a_method_did_not_do() -> None:
    from denoisrec.trainer.outputs.progress import log_fields

    bce = {
        "loss": 0.5,
        "samples/s": 12345.0,
        "lr": 0.001,
        "truth_random_precision": 0.35,
        "truth_recall": 0.0,
        "truth_loss_noisy_pos": 1.1,
        "truth_loss_clean_pos": 0.4,
        "subtask": 1.0,
    }
    assert log_fields(bce) == "loss 0.5 samples/s 12,345 lr 0.001 pos loss noisy/clean 1.1/0.4"
    tce = {**bce, "truth_precision": 0.6, "truth_recall": 0.7}
    assert "noise prec/rec 0.6/0.7 (random 0.35)" in log_fields(tce)


def test_warnings_wait_for_the_run_to_own_its_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with WarningsToFile(str(out), rank=1) as w:
            warnings.warn_explicit("early", UserWarning, "/x/site-packages/torch/a.py", 1)
            assert not out.exists()  # the run decides whether a folder may be made or reused
            out.mkdir()
            (out / "warnings.rank1.log").write_text("the previous run's\n")
            warnings.warn_explicit("late", UserWarning, "/x/site-packages/torch/a.py", 2)
            assert (out / "warnings.rank1.log").read_text() == "the previous run's\n"  # not allowed yet
            w.open()  # the out policy allowed the run
    assert w.count == 2 and (out / "warnings.rank1.log").read_text().count("UserWarning") == 2
    # a launch that is refused (never opened) leaves the file as it was and drops its lines
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with WarningsToFile(str(out), rank=1) as refused:
            warnings.warn_explicit("refused", UserWarning, "/x/site-packages/torch/a.py", 3)
    assert refused.count == 1 and "refused" not in (out / "warnings.rank1.log").read_text()
    # without an output folder (a command that has none): counted, never written
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with WarningsToFile(None) as none:
            warnings.warn_explicit("x", UserWarning, "/x/site-packages/torch/a.py", 4)
            none.open()
    assert none.count == 1 and none.summary() == "third-party warnings: 1 line(s), not shown"


class Recorder:
    """A MetricLogger that keeps every call."""

    def __init__(self) -> None:
        self.calls: list = []

    def log(self, name: str, data: object, step: int, kind: str = "train") -> None:
        self.calls.append((name, data, step, kind))

    def log_dict(self, payload: dict, step: int, kind: str = "train") -> None:
        for k, v in payload.items():
            self.log(k, v, step, kind)

    def close(self) -> None:
        pass


def test_console_lines_go_through_a_metric_logger(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from types import SimpleNamespace

    from denoisrec.trainer.outputs.console import finish_run
    from denoisrec.trainer.outputs.loggers import ConsoleLogger, MetricLogger

    # ConsoleLogger prints a message as it is (rank 0 only); scalars are not its kind
    assert isinstance(ConsoleLogger(), MetricLogger)
    ConsoleLogger().log("message", "hello run", step=3, kind="message")
    ConsoleLogger().log("loss", 0.5, step=3, kind="train")
    ConsoleLogger(enabled=False).log("message", "not rank 0", step=3, kind="message")
    assert capsys.readouterr().out == "hello run\n"
    # RunLog.print: a message to its console logger at the last step logged, never into metrics.jsonl
    log = RunLog(str(tmp_path), True)
    log.console = rec = Recorder()
    log.log_dict({"loss": 1.0}, step=7, kind="train")
    log.print("evaluated")
    log.close()
    assert rec.calls == [("message", "evaluated", 7, "message")]
    assert "evaluated" not in (tmp_path / "metrics.jsonl").read_text()
    # finish_run: the closing lines, in order, to the logger given, or printed by the default one
    cfg = SimpleNamespace(run=SimpleNamespace(out=str(tmp_path), curves=True), model=SimpleNamespace(name="dlrm"))
    quiet = SimpleNamespace(summary=lambda world_size: f"third-party warnings: none ({world_size} rank)")
    rec = Recorder()
    finish_run(cfg, {"steps": 12, "world_size": 3}, quiet, rec)  # type: ignore[arg-type]
    lines = ["third-party warnings: none (3 rank)", f"output folder: {tmp_path}"]
    assert rec.calls == [("message", line, 12, "message") for line in lines]
    finish_run(cfg, {"steps": 12, "world_size": 3}, quiet)  # type: ignore[arg-type]
    assert capsys.readouterr().out.splitlines() == lines


def test_log_lines_carry_elapsed_time_and_eta(capsys: pytest.CaptureFixture) -> None:
    from denoisrec.trainer.outputs.progress import Progress, clock

    assert (clock(75.2), clock(3725), clock(-1)) == ("1:15", "1:02:05", "0:00")
    p = Progress(total=300, initial=100, enabled=True, mode="log")
    assert p.timing(100, now=p._t0 + 5) == "elapsed 0:05"  # nothing done yet: no ETA
    assert p.timing(150, now=p._t0 + 60) == "elapsed 1:00 ETA 3:00"  # 50 steps a minute, 150 to go
    p.update(150, {"loss": 0.5}, epoch=1)
    assert capsys.readouterr().out.startswith("step    150/300 epoch 1 loss 0.5 | elapsed 0:")


def test_tensorboard_hparams_carry_the_config_and_final_metrics(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    log = RunLog(str(tmp_path), True)
    log.log_dict({"loss": 1.0}, 1)
    config = {"model": {"name": "dlrm", "dims": [8, 4]}, "data": {"batch_size": 256, "path": None}}
    log.hparams(config, {"test_clean": {"auc": 0.91, "rows": 100}, "valid": {"auc": float("nan")}, "step": 3})
    log.close()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1  # one stream per run: one HParams row
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert acc.Scalars("hparams/test_clean_auc")[0].value == pytest.approx(0.91)
    assert "hparams/valid_auc" not in acc.Tags()["scalars"]  # NaN is no metric
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    h = start.session_start_info.hparams
    assert h["model.name"].string_value == "dlrm" and h["data.batch_size"].number_value == 256
    assert h["model.dims"].string_value == "[8, 4]" and "data.path" not in h

"""``denoisrec tune`` end to end on a tiny dataset with trusted labels (2 candidates, 1 epoch): the table, the
choice by the rule, a written config that ``denoisrec train --config`` takes; and its bad inputs, each one
line before any run.
"""

import shutil
from pathlib import Path

import pytest
import yaml
from trusted_data import add_trusted

from denoisrec.trainer.cli import main
from denoisrec.trainer.tuning import Budget, offered, resolve_candidates


@pytest.fixture(scope="module")
def trusted_tiny(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    root = tmp_path_factory.mktemp("tune") / "data"
    shutil.copytree(tiny_data, root)
    add_trusted(root, fraction={"valid": 0.5}, random_split=False)
    return root


def _tune(data: Path, out: Path, *extra: str) -> list:
    return ["tune", "--data", str(data), "--out", str(out), "--epochs", "1", "--set", "data.batch_size=500", *extra]


def test_tune_chooses_on_trusted_labels_and_writes_a_config_train_takes(
    trusted_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tune"
    assert main(_tune(trusted_tiny, out, "--candidates", "bce,tce", "--budget", "2")) == 0
    text = capsys.readouterr().out
    assert "choosing on valid_trusted" in text
    table = text[text.index("tune: chose on") :]
    rows = [x for x in table.splitlines() if x.startswith("  bce ") or x.startswith("  tce ")]
    assert len(rows) == 2 and sum("<- chosen" in x for x in rows) == 1
    assert "cost: 2 run(s)" in table
    written = out / "tuned.yaml"
    assert f"wrote {written}" in text
    cfg = yaml.safe_load(written.read_text())
    chosen = next(x.split()[0] for x in rows if "<- chosen" in x)
    assert cfg["denoiser"]["name"] == chosen and cfg["eval"]["select_on"] == "trusted"
    assert cfg["run"]["out"] == str(out / "tuned") and cfg["run"]["eval_every"] == "epoch"
    assert written.read_text().startswith(f"# denoisrec tune: chose {chosen} on valid_trusted")
    # the rule, applied to the two runs' own summaries: the simpler unless the other clearly leads
    import json

    from denoisrec.trainer.evaluation.selection_rule import Candidate, choose

    sel = {n: json.loads((out / "runs" / n / "summary.json").read_text())["selection"] for n in ("bce", "tce")}
    unpaired = choose([Candidate(n, sel[n]["auc"], sel[n]["auc_se"]) for n in ("bce", "tce")])
    if unpaired.chosen == 1:  # the unpaired interval already says tce clearly leads: the paired one agrees
        assert chosen == "tce"
    # train takes it as is (one short run into its own folder)
    assert main(["train", "--config", str(written), "--steps", "2", "--set", f"run.out={tmp_path / 'again'}"]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["config"]["denoiser"]["name"] == chosen and again["selection"]["select_on"] == "trusted"
    # a second tune over the same folder reuses the finished runs
    assert main(_tune(trusted_tiny, out, "--candidates", "bce,tce", "--budget", "2")) == 0
    assert capsys.readouterr().out.count("(reused)") == 2


def test_budget_and_candidates_parse() -> None:
    assert Budget.parse("3") == Budget(runs=3) and Budget.parse("30m") == Budget(minutes=30.0)
    assert Budget.parse("1.5h") == Budget(minutes=90.0)
    assert resolve_candidates("deca_p,bce,observation") == ["bce", "observation", "deca_p"]  # simplest first
    assert resolve_candidates(None) == [
        "bce",
        "bce_no_context",
        "tce",
        "observation",
        "observation_context",
        "observation_ids",
        "observation_ids_context",
        "observation_trusted",
        "observation_ids_trusted",
        "observation_ids_context_trusted",
        "deca_p",
    ]
    assert resolve_candidates("rce,bce") == ["bce", "rce"]  # any denoiser, after the known ones


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "0"], "--budget '0': too small for one run; give at least 1 run"),
        (["--budget", "0.00001m"], "--budget 0.00001m: too small for one run (6,000 train rows x 1 epoch(s)"),
        (["--budget", "fast"], "--budget 'fast': expected a number of runs (4) or of minutes (30m, 1.5h)"),
        (["--candidates", "bce,nope"], "--candidates: unknown candidate(s) ['nope']"),
        (["--candidates", "bce"], "give at least two candidates"),
        (["--select-on", "random"], "--select-on=random: "),
    ],
)
def test_bad_inputs_are_one_line_before_any_run(
    trusted_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list, message: str
) -> None:
    assert main(_tune(trusted_tiny, tmp_path / "t", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("denoisrec tune: error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "t").exists()  # nothing trained, nothing written


def test_data_without_a_trusted_signal_is_refused_unless_observed_is_asked(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(_tune(tiny_data, tmp_path / "t", "--candidates", "bce,tce")) == 2
    err = capsys.readouterr().err.strip()
    assert "no trusted signal (no trusted labels in valid, no valid_random split), so tune will not choose" in err
    assert "--select-on observed" in err and "\n" not in err
    assert (
        main(_tune(tiny_data, tmp_path / "o", "--candidates", "bce,tce", "--budget", "1", "--select-on", "observed"))
        == 0
    )
    cap = capsys.readouterr()
    assert "warning: choosing on observed labels" in cap.err
    assert "not run (budget): tce" in cap.out and (tmp_path / "o" / "tuned.yaml").is_file()


def test_observation_trusted_is_offered_only_when_train_has_trusted_labels() -> None:
    names = resolve_candidates(None)
    kept, why = offered(names, 0, marginalised=True)
    trusted = ["observation_trusted", "observation_ids_trusted", "observation_ids_context_trusted"]
    assert kept == [n for n in names if n not in trusted] and len(kept) == len(names) - 3
    assert [w.split(":")[0] for w in why] == trusted
    assert all(": skipped" in w and "--trusted-train-rows" in w for w in why)
    assert offered(names, 5, marginalised=True) == (names, [])


def test_context_candidates_need_the_served_scoring_or_a_name() -> None:
    names = resolve_candidates(None)
    reads = ["observation_context", "observation_ids_context", "observation_ids_context_trusted"]
    kept, why = offered(names, 5)
    assert kept == [n for n in names if n not in reads]
    assert [w.split(":")[0] for w in why] == reads
    assert all("eval.marginalise=[position]" in w for w in why)
    assert offered(names, 5, named=True) == (names, [])  # --candidates named them: run as asked
    assert offered(["bce", "observation_context"], 5, marginalised=True) == (["bce", "observation_context"], [])


def test_tune_skips_observation_trusted_on_data_without_trusted_train_rows(
    trusted_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(_tune(trusted_tiny, tmp_path / "o", "--candidates", "bce,observation_trusted"))
    out = capsys.readouterr()
    assert code == 2 and "observation_trusted: skipped" in out.out
    assert "1 candidate(s) left to run" in out.err and not (tmp_path / "o").exists()


def test_context_candidates_let_f_read_the_context_and_train_it(trusted_tiny: Path, tmp_path: Path) -> None:
    """``observation_context``: the observation model with ``model.context=features``, so the exported target
    model reads the context columns (the plain ``observation`` candidate's does not).
    """
    import json

    import torch

    from denoisrec.trainer.commands.tune import base_config, selection_of
    from denoisrec.trainer.tuning import candidate_config, train_candidate

    args = _tune(trusted_tiny, tmp_path / "t", "--candidates", "bce,observation")
    from denoisrec.trainer.cli import build_parser

    a = build_parser().parse_args(args)
    base = base_config(a)
    base.run.max_steps = 3
    selection, _, _ = selection_of(base, "trusted")
    names = {}
    for name in ("observation", "observation_context"):
        cfg = candidate_config(base, name, str(tmp_path / "t"), selection)
        assert cfg.denoiser.name == "observation"
        assert cfg.model.context == ("features" if name == "observation_context" else "auto")
        r = train_candidate(cfg)
        assert r.selection["select_on"] == "trusted"
        summary = json.loads((tmp_path / "t" / "runs" / name / "summary.json").read_text())
        assert summary["config"]["model"]["context"] == cfg.model.context
        state = torch.load(tmp_path / "t" / "runs" / name / "model.pt", weights_only=False, map_location="cpu")
        names[name] = " ".join(str(k) for k in _keys(state))
    assert "position" in names["observation_context"] and "position" not in names["observation"]


def _keys(obj: object) -> list:
    if isinstance(obj, dict):
        return [k for key, v in obj.items() for k in [key, *_keys(v)]]
    if isinstance(obj, (list, tuple)):
        return [k for v in obj for k in _keys(v)]
    return []

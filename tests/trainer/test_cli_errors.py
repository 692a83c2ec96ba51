"""Every mistake a user types ends in one line naming the option, the value and what is accepted, with exit
status 2 (usage) or 1 (data), and no traceback; usage mistakes arrive before torch is imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import yaml

from denoisrec.trainer.cli import main
from denoisrec.trainer.config.tree import Config

BAD_YAML = "run:\n  epochs: [1\n"
UNKNOWN_KEY = "run:\n  epochs: 1\n  bogus: 2\n"

# (arguments after `denoisrec train`, exit status, words the one line must contain)
CASES = [
    (["--denoiser", "tce", "-p", "eps_max=abc"], 2, ["eps_max=abc", "a number in [0, 1)"]),
    (["--denoiser", "tce", "-p", "eps_max=1.5"], 2, ["eps_max=1.5", "out of range"]),
    (["--denoiser", "rce", "-p", "beta=abc"], 2, ["beta=abc", "a number"]),
    (["--denoiser", "rce", "-p", "beta=-0.5"], 2, ["beta=-0.5", "[0, inf)"]),
    (["--denoiser", "dart", "-p", "tau_m=2"], 2, ["tau_m=2", "[0, 1]"]),
    (["--set", "run.epochs=abc"], 2, ["run.epochs='abc'", "an integer"]),
    (["--set", "data.batch_size=abc"], 2, ["data.batch_size='abc'", "an integer"]),
    (["--set", "optim.lr=abc"], 2, ["optim.lr='abc'", "a number"]),
    (["--set", "optim.decay=fast"], 2, ["optim.decay='fast'", "none, linear, cosine"]),
    (["--set", "run.nonsense=1"], 2, ["run.nonsense", "unknown config key"]),
    (["--epochs", "-1"], 2, ["run.epochs=-1", "out of range"]),
    (["--steps", "-5"], 2, ["run.max_steps=-5", "out of range"]),
    (["--batch-size", "0"], 2, ["data.batch_size=0", "out of range"]),
    (["--epochs", "abc"], 2, ["--epochs", "invalid int value"]),
    (["--model", "nope"], 2, ["model.name='nope'", "dlrm"]),
    (["--denoiser", "nope"], 2, ["'nope'", "unknown denoiser", "deca_p"]),
    (["--sharding", "diagonal"], 2, ["'diagonal'", "table_wise"]),
    (["--set", "model.params.dropout=2"], 2, ["dropout", "model.params"]),
    (["-p", "novalue"], 2, ["novalue", "name=value"]),
    (["--config", "{bad_yaml}"], 2, ["not valid YAML", "line 3"]),
    (["--config", "{unknown_key}"], 2, ["unknown key(s) ['bogus']"]),
    (["--config", "{missing}"], 2, ["--config", "cannot read"]),
    (["--data", "{missing}", "--steps", "1"], 1, ["no such dataset directory"]),
]


def run_in_process(args: List[str], capsys: pytest.CaptureFixture) -> tuple:
    try:
        code = main(["train", *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path: Path) -> dict:
    (tmp_path / "bad.yaml").write_text(BAD_YAML)
    (tmp_path / "unknown.yaml").write_text(UNKNOWN_KEY)
    return {
        "bad_yaml": str(tmp_path / "bad.yaml"),
        "unknown_key": str(tmp_path / "unknown.yaml"),
        "missing": str(tmp_path / "missing"),
        "out": str(tmp_path / "out"),
    }


@pytest.mark.parametrize("args,code,words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_invocation_is_one_line(
    args: List[str], code: int, words: List[str], files: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    got, out, err = run_in_process(["--out", files["out"], *[a.format(**files) for a in args]], capsys)
    assert got == code, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err and out == "", err
    assert lines[0].startswith("denoisrec train: error: ")
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp_path / "out").exists()


def test_usage_errors_arrive_before_torch_is_imported(files: dict, tmp_path: Path) -> None:
    """A fresh interpreter meets several mistakes; torch is still not imported after them.

    (An unknown denoiser name is the exception: the registry is asked in case a newer module registered it.)
    """
    script = "; ".join(
        [
            "import sys",
            "from denoisrec.trainer.cli import main",
            *[
                f"print(main({['train', '--out', files['out'], *[a.format(**files) for a in args]]!r}))"
                for args, _, _ in CASES
                if args[:2] not in (["--epochs", "abc"], ["--denoiser", "nope"])
            ],
            "print('torch' in sys.modules)",
        ]
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.split()
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1] == "False", "torch was imported before the error"
    assert all(x in ("1", "2") for x in lines[:-1]) and len(proc.stderr.splitlines()) == len(lines) - 1


def test_cuda_without_a_gpu_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    code, out, err = run_in_process(["--out", str(tmp_path / "o"), "--device", "cuda"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "--device cuda: no CUDA device is visible" in err and "--device cpu" in err


def test_print_config_is_the_resolved_tree_and_loads_back(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "denoisrec.trainer.cli",
            "train",
            "--denoiser",
            "tce",
            "-p",
            "eps_max=0.1",
            "--set",
            "optim.lr=1",
            "--epochs",
            "2",
            "--print-config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    tree = yaml.safe_load(proc.stdout)
    cfg = Config.from_dict(tree)
    assert cfg.denoiser.params == {"eps_max": 0.1} and cfg.run.epochs == 2
    assert cfg.optim.lr == 1.0 and isinstance(tree["optim"]["lr"], float)  # normalised: an int lr is a float
    assert set(tree) == {"data", "model", "denoiser", "optim", "sharding", "run", "eval"}


def test_help_lists_choices_defaults_and_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "denoisrec.trainer.cli", "train", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for words in (
        "dlrm | dcnv2 | deepfm | fm | widedeep",
        "table_wise | column_wise | row_wise | data_parallel",
        "eps_max=0.2 [0, 1)",
        "deca_p",
        "--print-config",
    ):
        assert words in out, words
    v = subprocess.run(
        [sys.executable, "-m", "denoisrec.trainer.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert v.returncode == 0 and v.stdout.startswith("denoisrec ")


SCHEMA = {"sparse": [{"name": "user_id", "num_embeddings": 10}, {"name": "item_id", "num_embeddings": 10}]}

# (train arguments, words of the one line); {data} is a dataset folder whose schema has no dense and no context
TORCH_FREE = [
    (["--denoiser", "tce", "-p", "beta=0.2"], ["-p beta=0.2", "tce has no option 'beta'", "eps_max"]),
    (["--denoiser", "observation", "-p", "form=examinaton"], ["form=examinaton", "mixture, examination"]),
    (["--denoiser", "deca", "-p", "objective=papr"], ["objective=papr", "marginal, paper"]),
    (["--denoiser", "deca", "-p", "C1=abc"], ["C1=abc", "a number"]),
    (["--data", "{data}", "--model", "dlrm"], ["--model dlrm", "dense feature"]),
    (["--data", "{data}", "--model", "fm", "--denoiser", "observation"], ["--denoiser observation", "context"]),
]


@pytest.mark.parametrize("args,words", TORCH_FREE, ids=[" ".join(c[0]) for c in TORCH_FREE])
def test_torch_free_refusals_are_one_line_exit_2_without_torch(
    args: List[str], words: List[str], tmp_path: Path
) -> None:
    """A fresh interpreter refuses each mistake in one line, exit 2, with torch never imported."""
    import json

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "schema.json").write_text(json.dumps(SCHEMA))
    argv = ["train", "--out", str(tmp_path / "o"), *[a.format(data=tmp_path / "d") for a in args]]
    script = (
        "import sys\nfrom denoisrec.trainer.cli import main\ncode = main(%r)\n"
        "print(code, 'torch' in sys.modules)" % (argv,)
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False"], (proc.stdout, proc.stderr[-2000:])
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_global_batch_size_divisibility_is_refused_before_torch(tmp_path: Path) -> None:
    env = {**__import__("os").environ, "WORLD_SIZE": "3"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "denoisrec.trainer.cli",
            "train",
            "--out",
            str(tmp_path / "o"),
            "--set",
            "data.global_batch_size=1000",
            "--print-config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "data.global_batch_size=1000" in proc.stderr and "world size 3" in proc.stderr


def test_launch_refuses_bad_trainer_options_before_submitting(tmp_path: Path) -> None:
    """``denoisrec launch ... -- --denoiser tce -p beta=1``: one line, exit 2, torchx never started."""
    for argv, words in [
        (["-j", "1x2", "--", "--denoiser", "tce", "-p", "beta=1"], "tce has no option 'beta'"),
        (["-j", "1x3", "--", "--set", "data.global_batch_size=1000"], "world size 3"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "denoisrec.trainer.cli", "launch", "--dryrun", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("denoisrec launch: error: ") and words in proc.stderr, proc.stderr
        assert proc.stdout == ""


def test_the_command_checks_the_config_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``denoisrec train`` calls ``check_config`` once and hands ``train()`` that checked config; ``train()``
    itself checks nothing (``Config.validate`` is gone).
    """
    import denoisrec.trainer.config.check as check
    import denoisrec.trainer.train as train_module

    calls: List[Config] = []
    real = check.check_config

    def counting(cfg: Config, world_size: object = None) -> Config:
        calls.append(cfg)
        return real(cfg, world_size)  # type: ignore[arg-type]

    got: List[Config] = []
    monkeypatch.setattr(check, "check_config", counting)
    monkeypatch.setattr(train_module, "train", lambda cfg, hooks=None: got.append(cfg) or {})
    (tmp_path / "d").mkdir()
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--set", "optim.lr=1"]) == 0
    assert len(calls) == 1 and got == calls and got[0].optim.lr == 1.0 and isinstance(got[0].optim.lr, float)
    assert not hasattr(Config, "validate")

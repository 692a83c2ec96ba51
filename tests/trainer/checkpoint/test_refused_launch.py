"""A refused launch changes nothing in ``--out``: not the previous run's ``warnings.log``, logs or config.

Each refusal (a bad denoiser option, the run lock held by a live run, a finished run without
``run.overwrite``) is tried against a folder that looks like a finished run; every file's bytes are hashed
before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Dict

import pytest

from denoisrec.trainer.checkpoint.run_lock import _start_time
from denoisrec.trainer.cli import main


def tree_hash(root: Path) -> Dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def finished_run(out: Path) -> None:
    """The files a finished run leaves (no checkpoints), each with content to lose."""
    (out / "tb").mkdir(parents=True)
    (out / "warnings.log").write_text("UserWarning torchrec/planner.py:1: a warning of the previous run\n" * 90)
    (out / "warnings.rank1.log").write_text("UserWarning torch/a.py:2: rank 1 of the previous run\n" * 9)
    (out / "summary.json").write_text(json.dumps({"metrics": {"valid": {"auc": 0.9}}}))
    (out / "model.pt").write_bytes(b"previous model" * 100)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n')
    (out / "config.yaml").write_text("run:\n  epochs: 3\n")
    (out / "plan.json").write_text("{}")
    (out / "tb" / "events.out.tfevents.1").write_bytes(b"\x00events")


def refuse(args: list, capsys: pytest.CaptureFixture) -> str:
    code = main(["train", *args])
    err = capsys.readouterr().err
    assert code in (1, 2), err
    return err


@pytest.mark.parametrize("case", ["bad_option", "finished_run", "live_lock"])
def test_a_refused_launch_leaves_every_byte_of_out_unchanged(
    case: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    finished_run(out)
    args = ["--data", str(tiny_data), "--out", str(out), "--steps", "2", "--set", "run.progress=none"]
    if case == "bad_option":
        args += ["--denoiser", "tce", "-p", "beta=1"]
    if case == "live_lock":  # this test process is a live run on the same host
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()), "time": "t"}
        (out / ".lock").write_text(json.dumps(me) + "\n")
    before = tree_hash(out)
    err = refuse(args, capsys)
    assert tree_hash(out) == before, err
    if case == "finished_run":
        assert "a finished run (summary.json, model.pt)" in err and "run.overwrite=true" in err
        assert "run.resume=auto" not in err  # the launch is already at auto: it cannot continue this run
    if case == "live_lock":
        assert "in use by another run" in err
    if case == "bad_option":
        assert "beta" in err


def test_refusal_text_says_what_would_continue_the_run(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from denoisrec.trainer.checkpoint.out_policy import decide
    from denoisrec.trainer.errors import OutDirError

    out = tmp_path / "o"
    (out / "checkpoints" / "step_00000004").mkdir(parents=True)
    with pytest.raises(OutDirError) as e:
        decide(SimpleNamespace(out=str(out), resume="never", overwrite=False), None)
    assert "(run.resume=never); --resume auto (run.resume=auto) to continue it" in str(e.value)
    with pytest.raises(OutDirError) as e:
        decide(SimpleNamespace(out=str(out), resume="/elsewhere/step_1", overwrite=False), "/elsewhere/step_1")
    assert "resuming from another directory" in str(e.value) and "drop --resume" in str(e.value)

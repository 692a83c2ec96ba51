"""``denoisrec torchrun``: a real 2-rank job that fails on a user mistake shows the one line once and one summary
line from the launcher, with no traceback (torchrun's own ``ChildFailedError`` is caught); a job that
succeeds exits 0 with its outputs written; a rank that fails mid-epoch on bad input (the others wait in a
collective and lose it) gives its line, one "stopped" line for each other rank, and the summary, nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from job_probes import data_bad_on_rank_1


def torchrun(args: List[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "denoisrec.trainer.cli",
            "torchrun",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            "--",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(cwd),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_a_mistake_on_two_ranks_is_one_line_and_a_summary(tiny_data: Path, tmp_path: Path) -> None:
    proc = torchrun(["--data", str(tiny_data), "--out", str(tmp_path / "run"), "--set", "optim.decay=cosin"], tmp_path)
    err = proc.stderr
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "ChildFailedError" not in err, err
    line = "denoisrec train: error: optim.decay='cosin': expected one of none, linear, cosine"
    assert err.count(line) == 1, err
    summary = [x for x in err.splitlines() if x.startswith("denoisrec torchrun: the job failed:")]
    assert len(summary) == 1 and "(exit 2" in summary[0], err
    assert not (tmp_path / "run").exists()


def test_a_good_job_exits_zero(tiny_data: Path, tmp_path: Path) -> None:
    proc = torchrun(["--data", str(tiny_data), "--out", str(tmp_path / "run"), "--steps", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "summary.json").exists()
    assert "denoisrec torchrun: the job failed" not in proc.stderr


def test_bad_data_on_two_ranks_is_one_line_once(tiny_data: Path, tmp_path: Path) -> None:
    """Every rank reads the schema and refuses it alike (not a collective decision): still said once."""
    import json
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    schema = json.loads((data / "schema.json").read_text())
    schema["sparse"][0]["num_embeddings"] = 8.7
    (data / "schema.json").write_text(json.dumps(schema))
    proc = torchrun(["--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2"], tmp_path)
    err = proc.stderr
    assert proc.returncode in (1, 2) and "Traceback" not in err, err
    hits = [x for x in err.splitlines() if "num_embeddings=8.7" in x]
    assert len(hits) == 1 and hits[0].startswith("denoisrec train: error: ") and "schema.json" in hits[0], err
    assert err.count("denoisrec torchrun: the job failed:") == 1, err


BAD_LABEL = (
    "row group {rg}: column 'label' has 1 value(s) outside {{0, 1}} (first: 2 at row 493 of the row group (row "
    "{row} of the file)); labels must be 0 or 1"
)


@pytest.mark.parametrize(
    "nproc, part, failing, where",
    [
        (2, "part-00000.parquet", 0, (4, "2,493")),  # rank 0 hosts the process group's store, and fails
        (3, "part-00002.parquet", 2, (1, "993")),
    ],
)
def test_a_rank_that_fails_mid_epoch_stops_its_peers_with_one_line_each(
    tiny_data: Path, tmp_path: Path, nproc: int, part: str, failing: int, where: tuple
) -> None:
    """The failing rank's data error (exit 1) while the others wait in a collective: they lose their peer
    (gloo's "Connection closed by peer") or are stopped by the agent; either way each is one line naming the
    failed rank, after its line, and no rank prints a traceback.
    """
    data = data_bad_on_rank_1(tiny_data, tmp_path, part)
    args = ["--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "128"]
    proc = torchrun([*args, "--set", "data.shuffle=false"], tmp_path, nproc)
    err = proc.stderr
    assert proc.returncode == 1 and "Traceback" not in err, err
    rg, row = where
    error = f"denoisrec train: error: {data}/train/{part}: {BAD_LABEL.format(rg=rg, row=row)}"
    stopped = [
        f"denoisrec train: rank {r} stopped: its peer failed; see rank {failing}'s error above"
        for r in range(nproc)
        if r != failing
    ]
    *lines, summary = err.splitlines()
    assert lines == [error, *stopped], err
    assert summary.startswith("denoisrec torchrun: the job failed: ") and f"rank {failing} (exit 1, pid" in summary


def test_the_launcher_names_the_failure_whatever_each_rank_left() -> None:
    """The lines and the exit status from the ranks' error files: a rank stopped by the agent (SIGTERM, no
    file), one that said its peer failed without knowing which (its store went with the failed rank), one that
    named it, and one whose failure was on another node.
    """
    from denoisrec.trainer.commands.torchrun import exit_status, failure_lines
    from denoisrec.trainer.distributed.peers import AGREED_ERROR, PEER_FAILED

    def said(line: str, **extra: int) -> dict:
        return {"message": {"message": line, "extraInfo": {"py_callstack": line, "timestamp": "0", **extra}}}

    error = "denoisrec train: error: -p beta=1: tce has no option 'beta'"
    unknown = "denoisrec train: rank 0 stopped: its peer failed; see the failed rank's error above"
    failed = [
        (0, 1, said(unknown, **{PEER_FAILED: -1})),
        (1, 2, said(error)),
        (2, -15, None),
        (3, 1, said("x", **{PEER_FAILED: 1})),
    ]
    roots, lines = failure_lines(failed)
    assert roots == [1]
    assert lines == [error] + [
        f"denoisrec train: rank {r} stopped: its peer failed; see rank 1's error above" for r in (0, 2, 3)
    ]
    assert exit_status([(r, c) for r, c, _ in failed], roots) == 2  # the failure's status, not rank 0's 1
    # this node only saw its rank stopped by a failure elsewhere: that rank's line, the status 1
    roots, lines = failure_lines([(0, 1, said(unknown, **{PEER_FAILED: -1}))])
    assert (roots, lines) == ([], [unknown])
    assert exit_status([(0, 1)], roots) == 1
    # a failure killed before it said anything: the summary line says it; no "see rank N's error" for it
    roots, lines = failure_lines([(0, -15, None), (1, -9, None)], "bench")
    assert (roots, lines) == ([1], [])
    # a mistake every rank refuses alike: the rank stopped before it said so gets no "stopped" line
    roots, lines = failure_lines([(0, 2, said(error, **{AGREED_ERROR: 1})), (1, -15, None)])
    assert (roots, lines) == ([0], [error])
    roots, lines = failure_lines([(0, 1, said(unknown, **{PEER_FAILED: -1})), (1, -9, None)])
    assert (roots, lines) == ([1], ["denoisrec train: rank 0 stopped: its peer failed (rank 1: SIGKILL)"])

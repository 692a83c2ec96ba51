"""``denoisrec torchrun``: a real 2-rank job that fails on a user mistake shows the one line once and one summary
line from the launcher, with no traceback (torchrun's own ``ChildFailedError`` is caught); a job that
succeeds exits 0 with its outputs written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List


def torchrun(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "denoisrec.trainer.cli",
            "torchrun",
            "--standalone",
            "--nproc_per_node",
            "2",
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

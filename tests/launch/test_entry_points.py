"""The ecosystem entry points: the torchx components registered under ``torchx.components`` (listed by
``torchx builtins`` and run by name from any folder), and ``denoisrec.train(...)``, the Python API.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TORCHX = Path(sys.executable).parent / "torchx"


def test_torchx_builtins_lists_the_components_and_keeps_its_own(tmp_path: Path) -> None:
    proc = subprocess.run([str(TORCHX), "builtins"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {line.split(". ", 1)[1].strip() for line in proc.stdout.splitlines() if ". " in line}
    assert {"denoisrec.train", "denoisrec.bench", "denoisrec.gen_data"} <= names
    assert "dist.ddp" in names  # torchx's builtins are still there
    assert not any(n.startswith("denoisrec._") for n in names)


def test_torchx_runs_the_registered_component_from_any_folder(tmp_path: Path) -> None:
    cmd = [
        str(TORCHX),
        "run",
        "-s",
        "local_cwd",
        "denoisrec.train",
        "--python",
        sys.executable,
        "-j",
        "1x1",
        "--",
        "--preset",
        "recommended",
        "--print-config",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "name: observation" in text and "form: examination" in text and "epochs: 3" in text


def test_python_api_trains_and_returns_the_summary(tiny_data: Path, tmp_path: Path) -> None:
    code = (
        "import json, sys, denoisrec; "
        "assert 'torch' not in sys.modules; "
        "assert 'Returns:' in denoisrec.train.__doc__; "
        f"s = denoisrec.train(preset='recommended', data={str(tiny_data)!r}, out={str(tmp_path / 'run')!r}, "
        "steps=3, set=['run.progress=none', 'run.curves=false', 'run.export=false']); "
        "print(json.dumps({'steps': s['steps'], 'denoiser': s['config']['denoiser']['name'], "
        "'auc': s['metrics']['test_clean']['auc']}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["steps"] == 3 and got["denoiser"] == "observation" and 0.0 < got["auc"] < 1.0
    assert (tmp_path / "run" / "summary.json").exists()

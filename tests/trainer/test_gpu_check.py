"""``make gpu-check`` on a CPU machine: the no-CUDA line, the offline route's set-up rehearsed with stand-in
wheels (split into parts like ../shared/gpu/prepare-wheels.sh does), and the report path end to end with
``--device cpu --quick`` (denoisrec.trainer.bench.gpu_check).
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = ROOT / "launch" / "gpu_check.sh"
HAS_NVIDIA = any(Path("/dev").glob("nvidia[0-9]*"))


def sh(env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=timeout, cwd=str(ROOT), env={**os.environ, **env}
    )


def make_wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel holding the module ``name`` (stands in for fbgemm-gpu, torchrec, ...)."""
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "PROBE = 1\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.mark.skipif(HAS_NVIDIA, reason="this machine has an NVIDIA device")
def test_no_cuda_says_so_in_one_line_and_installs_nothing(tmp_path: Path) -> None:
    r = sh({"VENV": str(tmp_path / "venv"), "GPU_SITE": str(tmp_path / "site"), "WHEELS": ""}, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "gpu-check: no CUDA device on this machine (no nvidia-smi GPU, no /dev/nvidia*); nothing to check"
    ]
    assert not (tmp_path / "venv").exists() and not (tmp_path / "site").exists()


def test_offline_route_reassembles_parts_installs_and_reuses(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    big = make_wheel(tmp_path, "gpucheck_probe_big")  # split into parts, as the 465 MB fbgemm-gpu wheel is
    blob = subprocess.run(["tar", "cf", "-", big.name], cwd=str(tmp_path), capture_output=True, check=True).stdout
    for i in range(0, len(blob), 1024):
        (wheels / f"fbgemm.tar.{i // 1024:02d}").write_bytes(blob[i : i + 1024])
    assert len(list(wheels.glob("fbgemm.tar.*"))) > 1
    make_wheel(wheels, "gpucheck_probe_small")
    site = tmp_path / "site"
    env = {
        "WHEELS": str(wheels),
        "GPU_SITE": str(site),
        "PYTHON": sys.executable,
        "GPU_CHECK_DEVICE": "cpu",
        "GPU_CHECK_SETUP_ONLY": "1",
    }
    r = sh(env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installing gpucheck_probe_big-0.1-py3-none-any.whl gpucheck_probe_small-0.1-py3-none-any.whl" in r.stdout
    assert (site / "gpucheck_probe_big" / "__init__.py").exists() and (site / "gpucheck_probe_small").is_dir()
    assert (site / "denoisrec" / "trainer").resolve() == ROOT / "trainer"
    assert "gpu-check: environment ready" in r.stdout
    again = sh(env)
    assert again.returncode == 0 and "reusing" in again.stdout and "installing" not in again.stdout


def test_offline_route_names_what_the_interpreter_lacks(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "gpucheck_probe_small")
    # pip as usual, everything else with -S (no site-packages): torch, torchrec, ... missing, as on a bare image
    py = tmp_path / "bare-python"
    py.write_text(f'#!/bin/sh\n[ "$1 $2" = "-m pip" ] && exec {sys.executable} "$@"\nexec {sys.executable} -S "$@"\n')
    py.chmod(0o755)
    env = {"WHEELS": str(wheels), "GPU_SITE": str(tmp_path / "site"), "PYTHON": str(py), "GPU_CHECK_DEVICE": "cpu"}
    r = subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
        env={**os.environ, **env, "PYTHONNOUSERSITE": "1"},
    )
    assert r.returncode == 2
    line = [x for x in r.stderr.splitlines() if "missing" in x]
    assert line and "torch fbgemm-gpu torchrec tensordict numpy pyarrow" in line[0] and "add their wheels" in line[0]


def test_report_path_end_to_end_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from denoisrec.trainer.bench import gpu_check

    out = tmp_path / "report"
    rc = gpu_check.main(
        [
            "--device",
            "cpu",
            "--quick",
            "--denoisers",
            "tce",
            "--pipeline",
            "on",
            "--tests",
            "tests/trainer/test_gpu.py -k pipeline",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rep = json.loads((out / "gpu_check.json").read_text())
    assert rep["versions"]["torch"] and rep["versions"]["torchrec"] and rep["device"] == "cpu"
    assert rep["tests"]["ok"] and rep["tests"]["counts"] == {"skipped": 1}  # the GPU test, skipped without CUDA
    rows = {(r["precision"], r["method"]): r for r in rep["throughput"]["rows"]}
    assert set(rows) == {(p, m) for p in ("fp32", "bf16") for m in ("torchrec", "bce", "tce")}
    assert rep["throughput"]["info"]["pipelined"] is True
    for p in ("fp32", "bf16"):
        assert rows[(p, "bce")]["versus"] == "torchrec" and rows[(p, "bce")]["target"] == 0.90
        assert rows[(p, "tce")]["versus"] == "bce" and rows[(p, "tce")]["target"] == 0.97
        assert all(len(v) == 2 and min(v) > 0 for v in rep["throughput"]["rates"][p].values())
    md = (out / "gpu_check.md").read_text()
    assert "| precision | method | samples/s (median)" in md and "1 skipped" in md and "no GPU figure" in md
    assert (out / "gpu_check.png").stat().st_size > 10_000  # like every bench: JSON + Markdown + PNG


@pytest.mark.skipif(HAS_NVIDIA, reason="this machine has an NVIDIA device")
def test_python_entry_without_cuda_prints_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    from denoisrec.trainer.bench import gpu_check

    assert gpu_check.main(["--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip() == gpu_check.NO_CUDA
    assert not (tmp_path / "r").exists()

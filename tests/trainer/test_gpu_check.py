"""``make gpu-check`` on a CPU machine: the no-CUDA line, the offline route's set-up rehearsed with stand-in
wheels (split into parts like ../shared/gpu/prepare-wheels.sh does: a zipped wheel in tar parts, or an unpacked
site as xz parts), the device protocol of launch/gpu_device.sh, and the report path end to end with
``--device cpu --quick`` (denoisrec.trainer.bench.gpu_check).
"""

import io
import json
import lzma
import os
import random
import shutil
import subprocess
import sys
import tarfile
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


def make_site_parts(folder: Path, part_size: int = 512) -> None:
    """prepare-wheels.sh's layout: an unpacked site (here one module) as tar | xz, split, and wheels/ beside it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        files = {
            "gpucheck_probe_site/__init__.py": b"PROBE = 2\n",
            "gpucheck_probe_site/kernels.bin": random.Random(0).randbytes(2000),  # incompressible: several parts
        }
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    blob = lzma.compress(buf.getvalue(), preset=0)
    for i in range(0, len(blob), part_size):
        (folder / f"fbgemm-site.tar.xz.{i // part_size:02d}").write_bytes(blob[i : i + part_size])
    (folder / "wheels").mkdir()
    make_wheel(folder / "wheels", "gpucheck_probe_small")


def test_offline_route_unpacks_xz_site_parts(tmp_path: Path) -> None:
    parts = tmp_path / "gpuparts"
    parts.mkdir()
    make_site_parts(parts)
    assert len(list(parts.glob("fbgemm-site.tar.xz.*"))) > 1
    site = tmp_path / "site"
    env = {
        "WHEELS": str(parts),
        "GPU_SITE": str(site),
        "PYTHON": sys.executable,
        "GPU_CHECK_DEVICE": "cpu",
        "GPU_CHECK_SETUP_ONLY": "1",
    }
    r = sh(env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "unpacking fbgemm-site.tar.xz.00" in r.stdout and "installing gpucheck_probe_small" in r.stdout
    assert (site / "gpucheck_probe_site" / "__init__.py").read_text().startswith("PROBE = 2")
    assert (site / "gpucheck_probe_small" / "__init__.py").exists()
    assert "gpu-check: environment ready" in r.stdout
    # A part missing: one line naming the parts, exit 1, not a Python traceback.
    sorted(parts.glob("fbgemm-site.tar.xz.*"))[-1].unlink()
    shutil.rmtree(site)
    cut = sh(env)
    assert cut.returncode == 1 and "not one whole xz tar" in cut.stderr, cut.stdout + cut.stderr


def test_device_protocol_stashes_parts_per_call_and_checks_the_manifest(tmp_path: Path) -> None:
    """Three calls as on the lent machine: each carries one part; the last verifies all before installing."""
    source = tmp_path / "source"
    source.mkdir()
    make_site_parts(source)
    names = sorted(p.name for p in source.glob("fbgemm-site.tar.xz.*"))
    checkout = tmp_path / "checkout"
    (checkout / "launch").mkdir(parents=True)
    for f in ("gpu_device.sh", "gpu_check.sh"):
        shutil.copy(ROOT / "launch" / f, checkout / "launch" / f)
    for d in ("trainer", "models", "denoisers", "launch"):
        if d != "launch":
            (checkout / d).symlink_to(ROOT / d)
    script = checkout / "launch" / "gpu_device.sh"
    (checkout / ".gpuparts").mkdir()
    for n in names:
        shutil.copy(source / n, checkout / ".gpuparts" / n)
    shutil.copytree(source / "wheels", checkout / ".gpuparts" / "wheels")
    run = lambda *a, **env: subprocess.run(  # noqa: E731
        ["bash", str(script), *a], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert run("manifest").returncode == 0
    manifest = (checkout / ".gpuparts" / "MANIFEST").read_text()
    assert all(n in manifest for n in names) and "wheels/gpucheck_probe_small" in manifest
    stash = tmp_path / "gpuparts-there"
    env = {"PARTS": str(stash), "PYTHON": sys.executable, "GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_SETUP_ONLY": "1"}
    # Call 1 carries the first part only (the machine keeps $PARTS between calls, not the carried files).
    full = checkout / ".gpuparts"
    keep = tmp_path / "all-parts"
    shutil.copytree(full, keep)
    shutil.rmtree(full)
    full.mkdir()
    shutil.copy(keep / names[0], full / names[0])
    shutil.copy(keep / "MANIFEST", full / "MANIFEST")
    r1 = run("stash", **env)
    assert r1.returncode == 0 and names[0] in r1.stdout
    # A check before the other parts arrived names what is missing and installs nothing.
    early = run("check", **env, OUT=str(tmp_path / "out0"))
    assert early.returncode == 2 and "lacks or has damaged parts" in early.stderr
    assert not (tmp_path / "out0").exists()
    # The last call carries the remaining parts and the wheels, then installs from all of them.
    shutil.rmtree(full)
    shutil.copytree(keep, full, ignore=shutil.ignore_patterns(names[0]))
    out = tmp_path / "out"
    r = run("check", **env, OUT=str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "gpu-check: environment ready" in r.stdout
        and "gpu-check: environment ready" in (out / "gpu_check.log").read_text()
    )


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
        assert rows[(p, "tce")]["meets_target"] is None  # --quick is a smoke test: targets shown, not graded
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

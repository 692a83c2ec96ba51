"""``launch/slurm_local.py`` without daemons: what it needs, the slurm.conf it writes, and how the Slurm tests
skip where it cannot come up (the jobs themselves are in ``tests/launch/test_launch_slurm.py``).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from denoisrec.launch import slurm_local
from denoisrec.launch.slurm_local import TOOLS, LocalSlurm, SlurmUnavailable, missing_tools

ROOT = Path(__file__).resolve().parents[2]


def _fake_bin(tmp: Path, names) -> Path:
    d = tmp / "bin"
    d.mkdir()
    for n in names:
        (d / n).write_text("#!/bin/sh\nexit 0\n")
        (d / n).chmod(0o755)
    return d


def test_missing_programs_are_named_and_up_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _fake_bin(tmp_path, [t for t in TOOLS if t != "slurmctld"])
    assert missing_tools(str(bin_dir)) == ["slurmctld"]
    monkeypatch.setenv(slurm_local.SEARCH_PATH_ENV, str(tmp_path / "nowhere"))
    assert missing_tools() == list(TOOLS)
    cluster = LocalSlurm(tmp_path / "cluster")
    with pytest.raises(SlurmUnavailable, match=r"not installed: munged, .*slurmctld.* \(apt-get install slurmctld "):
        cluster.up()
    assert not (tmp_path / "cluster").exists()  # nothing started, nothing written
    assert cluster.down() == [] and cluster.running() == []


def test_generated_slurm_conf_has_no_cgroups_two_nodes_and_accounting(tmp_path: Path) -> None:
    cluster = LocalSlurm(tmp_path)
    cluster.node_names = ["myhost", "localhost"]
    ports = {"slurmctld": 1001, "slurmdbd": 1002, "mariadb": 1003, "myhost": 1004, "localhost": 1005}
    cluster._write_slurm_conf(ports, "CPUs=2 RealMemory=4000")
    conf = dict(
        line.split("=", 1)
        for line in cluster.conf.read_text().splitlines()
        if line and not line.startswith(("#", "NodeName", "PartitionName"))
    )
    assert conf["ProctrackType"] == "proctrack/linuxproc" and conf["TaskPlugin"] == "task/none"
    assert conf["SlurmctldHost"] == "myhost(127.0.0.1)" and conf["SlurmctldPort"] == "1001"
    assert conf["AccountingStorageType"] == "accounting_storage/slurmdbd" and conf["AccountingStoragePort"] == "1002"
    assert conf["AuthInfo"] == f"socket={tmp_path}/run/munge.sock" == "socket=" + conf["AccountingStoragePass"]
    assert conf["SlurmdPidFile"] == f"{tmp_path}/run/slurmd-%n.pid"  # one per node
    assert all(str(tmp_path) in conf[k] for k in ("StateSaveLocation", "SlurmctldLogFile", "SlurmdSpoolDir"))
    nodes = [line for line in cluster.conf.read_text().splitlines() if line.startswith("NodeName=")]
    assert nodes == [
        "NodeName=myhost NodeHostname=myhost NodeAddr=127.0.0.1 Port=1004 CPUs=2 RealMemory=4000 State=UNKNOWN",
        "NodeName=localhost NodeHostname=myhost NodeAddr=127.0.0.1 Port=1005 CPUs=2 RealMemory=4000 State=UNKNOWN",
    ]
    assert "PartitionName=debug Nodes=myhost,localhost Default=YES" in cluster.conf.read_text()


def test_slurm_tests_skip_with_the_reason_where_slurm_is_absent(tmp_path: Path) -> None:
    env = dict(os.environ, **{slurm_local.SEARCH_PATH_ENV: str(tmp_path)})  # as if slurmctld & co. were absent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/launch/test_launch_slurm.py"],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 skipped" in proc.stdout and "passed" not in proc.stdout and "failed" not in proc.stdout
    assert "no local Slurm cluster: not installed: munged, mariadb-install-db" in proc.stdout
    assert "slurmctld" in proc.stdout


def test_node_names_must_resolve_to_this_host() -> None:
    from denoisrec.launch.slurm_local import _is_this_host

    assert _is_this_host("localhost") and _is_this_host("127.0.0.1")
    assert not _is_this_host("192.0.2.1")  # TEST-NET-1: never an address of this host
    assert not _is_this_host("no-such-host.invalid")

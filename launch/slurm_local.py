"""A one-host Slurm cluster in a folder: munge, MariaDB + slurmdbd, slurmctld and two slurmd, for tests and trials.

It lets ``torchx run -s slurm launch/components.py:train …`` run for real on a laptop or a CI machine.
Everything (configuration, keys, sockets, state, the accounting database, logs) lives under one folder;
the daemons listen on free ports of 127.0.0.1 only and never read ``/etc/slurm`` or ``/etc/munge``.
A client reaches the cluster through one variable, ``SLURM_CONF=<folder>/slurm.conf``::

    python -m denoisrec.launch.slurm_local up --dir /tmp/denoisrec-slurm     # or: make slurm-up
    export SLURM_CONF=/tmp/denoisrec-slurm/slurm.conf
    sinfo -N                                                                # <host> and localhost, idle
    python -m denoisrec.launch.slurm_local down --dir /tmp/denoisrec-slurm   # or: make slurm-down

The generated ``slurm.conf`` describes this host as ``slurmd -C`` reports it (name, CPUs, memory) and
uses no cgroups (``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``): a job's CPU and memory
requests are bookkeeping, not limits.

Two nodes, one host: torchx submits ``-j NxM`` as a heterogeneous job of N one-node groups, and Slurm
plans heterogeneous jobs in its backfill scheduler, which reserves whole nodes: two groups never share a
node, so ``-j 2x1`` would pend forever on a one-node cluster. The cluster therefore runs two slurmd on
this host, named after the host and ``localhost`` (both must resolve to this host, as the rendezvous needs:
``$SLURM_JOB_NODELIST_HET_GROUP_0`` is a node name), each describing the whole host. The daemons talk over
127.0.0.1 whatever the names resolve to.

Why MariaDB and slurmdbd: torchx 0.7's Slurm scheduler reads job states with ``sacct --parsable2 -j ID``
(``torchx status``, ``torchx run --wait``, ``torchx log``), and ``sacct`` answers only from slurmdbd. With
``AccountingStorageType=accounting_storage/none`` it prints "Slurm accounting storage is disabled" and
exits 1, and torchx raises; ``JobCompType=jobcomp/filetxt`` serves only ``sacct -c`` (completion records,
finished jobs), which torchx never calls. slurmdbd in turn stores only into MySQL/MariaDB.

Debian packages: ``slurmctld slurmd slurm-client slurmdbd munge mariadb-server`` (``.ci/install-slurm``).
The daemons run as the current user; the jobs then run as that user too (root in CI).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

TOOLS = (
    "munged",
    "mariadb-install-db",
    "mariadbd",
    "mariadb",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "squeue",
    "sacct",
    "scontrol",
    "scancel",
    "sinfo",
)
"""Programs the cluster needs, in the order they are started or first used."""

APT_PACKAGES = "slurmctld slurmd slurm-client slurmdbd munge mariadb-server"
"""The Debian/Ubuntu packages that provide :data:`TOOLS`."""

SEARCH_PATH_ENV = "DENOISREC_SLURM_PATH"
"""If set, the only directories searched for :data:`TOOLS` (``DENOISREC_SLURM_PATH=/nonexistent`` simulates
a machine without Slurm). Otherwise ``$PATH`` and the sbin folders, where Debian puts the daemons."""

# Daemons in start order, then one slurmd per node; ``down`` stops them in reverse. Each writes its pid to
# <dir>/run/<name>.pid (slurmd-<node>.pid for the node's slurmd).
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld")

SACCT_FIELDS = "JobID,JobName,NodeList,State,ExitCode,Submit,Start,End,Elapsed,TotalCPU,MaxRSS"
"""The columns ``down`` saves to ``<dir>/log/sacct.txt``."""

SECOND_NODE = "localhost"
"""The second node's name: any name other than the host's that resolves to this host."""


class SlurmUnavailable(RuntimeError):
    """The cluster cannot come up here: a program is missing or a daemon did not start (the message says
    which, with the tail of its log).
    """


def search_path() -> str:
    """The directories searched for the Slurm, munge and MariaDB programs (see :data:`SEARCH_PATH_ENV`)."""
    if os.environ.get(SEARCH_PATH_ENV) is not None:
        return os.environ[SEARCH_PATH_ENV]
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def missing_tools(path: Optional[str] = None) -> List[str]:
    """The programs of :data:`TOOLS` not found on ``path`` (default :func:`search_path`)."""
    path = search_path() if path is None else path
    return [t for t in TOOLS if shutil.which(t, path=path) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} was not written)"
    return "\n".join(lines[-n:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


class LocalSlurm:
    """A one-host Slurm cluster whose files all live under ``root``.

    Args:
        root: the cluster's folder (created if missing). Its path must be short (a unix socket lives in
            it) and every parent folder must be world-executable, because munged refuses a socket that
            other users cannot reach.

    Example::

        cluster = LocalSlurm(Path(tempfile.mkdtemp(prefix="slurm-")))
        cluster.up()                                     # ~10 s; raises SlurmUnavailable with the reason
        subprocess.run(["sinfo"], env={**os.environ, **cluster.env()})
        cluster.down()                                   # cancels the jobs, stops every daemon
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.conf = self.root / "slurm.conf"
        self.run_dir = self.root / "run"
        self.log_dir = self.root / "log"
        self._path = search_path()
        self.node_names: List[str] = []
        self._mariadbd: Optional[subprocess.Popen] = None  # our child when up() ran in this process

    # --- what a client needs -------------------------------------------------------------------------
    def env(self) -> Dict[str, str]:
        """Variables that point Slurm's commands (and torchx, which calls them) at this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _tool(self, name: str) -> str:
        found = shutil.which(name, path=self._path)
        if found is None:
            raise SlurmUnavailable(f"{name} not found (install: apt-get install {APT_PACKAGES})")
        return found

    def _run(self, *argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self._tool(argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env()},
        )
        if check and proc.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        return proc

    def _wait(self, what: str, ready, log: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.1)
        raise SlurmUnavailable(f"{what} not ready after {timeout:.0f}s; {log}:\n{_tail(log)}")

    def _pid(self, daemon: str) -> Optional[int]:
        try:
            return int((self.run_dir / f"{daemon}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _pidfile_names(self) -> List[str]:
        """Every daemon's pid-file name, in start order (one slurmd per node, whatever ``up`` wrote)."""
        slurmds = sorted(p.stem for p in self.run_dir.glob("slurmd-*.pid"))
        return [*DAEMONS, *slurmds]

    def running(self) -> List[str]:
        """The daemons of this cluster whose process is alive."""
        return [d for d in self._pidfile_names() if (pid := self._pid(d)) is not None and _pid_alive(pid)]

    # --- up ------------------------------------------------------------------------------------------
    def up(self, timeout: float = 60) -> None:
        """Start munged, MariaDB, slurmdbd, slurmctld and two slurmd; return once both nodes are idle.

        On any failure every daemon already started is stopped again and :class:`SlurmUnavailable` says
        which step failed, with the tail of that daemon's log.
        """
        missing = missing_tools(self._path)
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (apt-get install {APT_PACKAGES})")
        if self.running():
            raise SlurmUnavailable(f"{self.root}: a cluster is already running here ({', '.join(self.running())})")
        for d in (self.root, self.run_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)  # munged checks that every user can reach its socket
        for name in ("munge", "state", "spool", "db"):
            (self.root / name).mkdir(mode=0o700, exist_ok=True)
        host, hardware = self._hardware()
        self.node_names = [host, SECOND_NODE]
        if host == SECOND_NODE or not all(_is_this_host(n) for n in self.node_names):
            raise SlurmUnavailable(f"need two node names that resolve to this host: {self.node_names} (/etc/hosts)")
        ports = {k: _free_port() for k in ("slurmctld", "slurmdbd", "mariadb", *self.node_names)}
        try:
            self._start_munge()
            self._start_mariadb(ports["mariadb"], timeout)
            self._start_slurmdbd(ports, hardware, timeout)
            self._start_slurm(timeout)
        except BaseException:
            self.down()
            raise

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
            key.chmod(0o600)
        self._run(
            "munged",
            f"--socket={self.run_dir / 'munge.sock'}",
            f"--key-file={key}",
            f"--pid-file={self.run_dir / 'munged.pid'}",
            f"--log-file={self.log_dir / 'munged.log'}",
            f"--seed-file={self.root / 'munge' / 'seed'}",
        )

    def _mariadb_args(self) -> List[str]:
        # A small server (16 MB buffer pool, 4 MB redo log): the accounting tables of a few test jobs.
        return [
            "--no-defaults",
            f"--datadir={self.root / 'db'}",
            f"--user={_user()}",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=4M",
        ]

    def _start_mariadb(self, port: int, timeout: float) -> None:
        db = self.root / "db"
        if not (db / "mysql").exists():
            proc = self._run(
                "mariadb-install-db",
                *self._mariadb_args(),
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
                timeout=120,
                check=False,
            )
            if proc.returncode != 0:
                raise SlurmUnavailable(f"mariadb-install-db failed: {(proc.stdout + proc.stderr)[-2000:]}")
        with open(self.log_dir / "mariadbd.out", "w") as out:
            # Loopback only, no binary log; mariadbd does not fork, so it runs in its own session.
            server = [
                *self._mariadb_args(),
                "--skip-log-bin",
                f"--socket={self.run_dir / 'mysqld.sock'}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.run_dir / 'mariadbd.pid'}",
                f"--log-error={self.log_dir / 'mariadb.log'}",
            ]
            self._mariadbd = subprocess.Popen(
                [self._tool("mariadbd"), *server],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        sock = self.run_dir / "mysqld.sock"
        self._wait(
            "mariadbd",
            lambda: sock.exists() and self._pid("mariadbd") is not None,
            self.log_dir / "mariadb.log",
            timeout,
        )
        # slurmdbd logs in over TCP as its own database user; the socket login works for the OS user only.
        sql = (
            "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        )
        self._run("mariadb", f"--socket={sock}", "-u", _user(), "-e", sql)

    def _start_slurmdbd(self, ports: Dict[str, int], hardware: str, timeout: float) -> None:
        conf = self.root / "slurmdbd.conf"
        conf.write_text(
            "\n".join(
                [
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={self.run_dir / 'munge.sock'}",
                    "DbdHost=localhost",
                    "DbdAddr=127.0.0.1",
                    f"DbdPort={ports['slurmdbd']}",
                    f"SlurmUser={_user()}",
                    f"LogFile={self.log_dir / 'slurmdbd.log'}",
                    f"PidFile={self.run_dir / 'slurmdbd.pid'}",
                    "StorageType=accounting_storage/mysql",
                    "StorageHost=127.0.0.1",
                    f"StoragePort={ports['mariadb']}",
                    "StorageUser=slurm",
                    "StoragePass=slurm",
                    "StorageLoc=slurm_acct_db",
                    "",
                ]
            )
        )
        conf.chmod(0o600)  # slurmdbd refuses a world-readable configuration (it holds the database password)
        self._write_slurm_conf(ports, hardware)  # slurmdbd finds slurmdbd.conf beside $SLURM_CONF
        self._run("slurmdbd")
        self._wait("slurmdbd", lambda: _port_open(ports["slurmdbd"]), self.log_dir / "slurmdbd.log", timeout)

    def _write_slurm_conf(self, ports: Dict[str, int], hardware: str) -> None:
        names = self.node_names
        host = names[0]
        sock = self.run_dir / "munge.sock"
        nodes = [
            f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={ports[n]} {hardware} State=UNKNOWN"
            for n in names
        ]
        self.conf.write_text(
            "\n".join(
                [
                    "# Generated by denoisrec.launch.slurm_local: a one-host cluster, all state under this folder.",
                    "ClusterName=denoisrec",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={ports['slurmctld']}",
                    f"SlurmUser={_user()}",
                    f"SlurmdUser={_user()}",
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={sock}",
                    "CredType=cred/munge",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmctldPidFile={self.run_dir / 'slurmctld.pid'}",
                    f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
                    # Two slurmd on one host: %n (the node name) keeps their files apart.
                    f"SlurmdSpoolDir={self.root / 'spool' / '%n'}",
                    f"SlurmdPidFile={self.run_dir / 'slurmd-%n.pid'}",
                    f"SlurmdLogFile={self.log_dir / 'slurmd-%n.log'}",
                    # No cgroups: processes are tracked through /proc, tasks are not bound to CPUs.
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    # Heterogeneous jobs (torchx's -j NxM, N > 1) start only from the backfill scheduler: every second.
                    "SchedulerType=sched/backfill",
                    "SchedulerParameters=bf_interval=1",
                    "MpiDefault=none",
                    "MailProg=/bin/true",
                    # Job accounting through slurmdbd, which torchx's `sacct -j` needs; the munge socket for it.
                    "AccountingStorageType=accounting_storage/slurmdbd",
                    "AccountingStorageHost=127.0.0.1",
                    f"AccountingStoragePort={ports['slurmdbd']}",
                    f"AccountingStoragePass={sock}",
                    # CPU time and memory of each job step in sacct, read from /proc when the step ends (no polling).
                    "JobAcctGatherType=jobacct_gather/linux",
                    "JobAcctGatherFrequency=task=0",
                    "JobCompType=jobcomp/none",
                    "ReturnToService=2",
                    "SlurmdTimeout=30",
                    "InactiveLimit=0",
                    "KillWait=5",
                    "MinJobAge=300",
                    *nodes,
                    f"PartitionName=debug Nodes={','.join(names)} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _hardware(self) -> Tuple[str, str]:
        """This host's name and ``CPUs=… RealMemory=…``, as slurmd itself detects them (``slurmd -C``)."""
        out = self._run("slurmd", "-C").stdout
        line = next((x for x in out.splitlines() if x.startswith("NodeName=")), None)
        if line is None:
            raise SlurmUnavailable(f"slurmd -C printed no NodeName line: {out!r}")
        name, _, hardware = line.strip().partition(" ")
        return name.split("=", 1)[1], hardware

    def _start_slurm(self, timeout: float) -> None:
        self._run("slurmctld", "-f", str(self.conf))
        self._wait(
            "slurmctld",
            lambda: self._run("scontrol", "ping", check=False).returncode == 0,
            self.log_dir / "slurmctld.log",
            timeout,
        )
        for n in self.node_names:
            self._run("slurmd", "-f", str(self.conf), "-N", n)

        def idle() -> bool:
            states = self._run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
            return states == ["idle"] * len(self.node_names)

        self._wait(
            f"nodes {', '.join(self.node_names)}", idle, self.log_dir / f"slurmd-{self.node_names[-1]}.log", timeout
        )

    # --- down ----------------------------------------------------------------------------------------
    def down(self, timeout: float = 30) -> List[str]:
        """Cancel every job, save the accounting records to ``log/sacct.txt``, stop every daemon of this
        cluster (by the pids they recorded) and return the names of any that had to be killed with SIGKILL.
        The folder itself is kept (logs, for a post-mortem).
        """
        if "slurmctld" in self.running():
            jobs = self._run("squeue", "-h", "-o", "%A", check=False).stdout.split()
            if jobs:
                self._run("scancel", *jobs, check=False)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and self._run("squeue", "-h", "-o", "%A", check=False).stdout.strip():
                    time.sleep(0.2)
            if "slurmdbd" in self.running():  # every job's accounting record, for a post-mortem
                acct = self._run("sacct", "-a", "-P", "-S", "2000-01-01", "-o", SACCT_FIELDS, check=False)
                (self.log_dir / "sacct.txt").write_text(acct.stdout + acct.stderr)
        killed = []
        for daemon in reversed(self._pidfile_names()):
            pid = self._pid(daemon)
            if pid is None or not _pid_alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(daemon)
        if self._mariadbd is not None:
            self._mariadbd.wait()  # reap it (the other daemons fork away from us)
        return killed


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _is_this_host(name: str) -> bool:
    """Whether ``name`` resolves to an address of this host (one a socket can bind to)."""
    try:
        with socket.socket() as s:
            s.bind((socket.gethostbyname(name), 0))
        return True
    except OSError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m denoisrec.launch.slurm_local",
        description="Start or stop a one-host Slurm cluster whose files live in --dir.",
        allow_abbrev=False,
    )
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument(
        "--dir",
        default=os.path.join(tempfile.gettempdir(), f"denoisrec-slurm-{os.getuid()}"),
        help="the cluster's folder (default: %(default)s)",
    )
    args = p.parse_args(argv)
    cluster = LocalSlurm(Path(args.dir))
    if args.action == "up":
        t0 = time.monotonic()
        try:
            cluster.up()
        except SlurmUnavailable as e:
            print(f"slurm_local: error: {e}", file=sys.stderr)
            return 1
        print(f"slurm_local: cluster up in {time.monotonic() - t0:.1f}s; logs in {cluster.log_dir}")
        print(f"export SLURM_CONF={cluster.conf}")
    elif args.action == "down":
        killed = cluster.down()
        print(
            f"slurm_local: stopped{' (SIGKILL: ' + ', '.join(killed) + ')' if killed else ''}; "
            f"files kept in {cluster.root}"
        )
    else:
        running = cluster.running()
        print(f"slurm_local: {', '.join(running) if running else 'no daemon'} running in {cluster.root}")
        return 0 if running else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

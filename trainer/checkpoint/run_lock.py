"""One run per output directory: a lock file ``<out>/.lock`` held by rank 0 for the run's life.

The lock is created with ``O_CREAT | O_EXCL`` (atomic on local and NFS filesystems) and holds one JSON line
naming its holder: ``{"pid", "host", "start", "time"}``, where ``start`` is the process start time from
``/proc/<pid>/stat`` (so a recycled pid is not mistaken for the holder). A second run on the same ``--out``
refuses with a one-line :class:`RunLockError` naming the holder. A lock is **stale**, and taken over with a
note, when its host is this host and its pid is no longer alive (or is alive with another start time: the
pid was reused), or when the file is empty or unreadable and older than a minute (a holder killed while
writing it). A lock held on another host is never taken over: the message says to delete the file once
that run is known to be dead.

Under torchrun only rank 0 takes the lock, and every rank learns the outcome (:func:`acquire_for_run`
broadcasts it), so a refused launch stops on every rank at once. Killing only the torchrun launcher leaves
its workers running (torchelastic does not reap them); their rank 0 still holds the lock, so a relaunch on
the same ``--out`` is refused instead of training beside them (docs/checkpoints.md).

Example::

    lock = RunLock("/tmp/run")
    lock.acquire()          # RunLockError when another live process holds it
    ...
    lock.release()
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Dict, Optional

from denoisrec.trainer.errors import RunLockError

LOCK_FILE = ".lock"
UNREADABLE_GRACE_S = 60.0


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (field 22 of ``/proc/<pid>/stat``), or ``None``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def holder_is_alive(holder: Dict[str, Any]) -> bool:
    """Whether the process a lock names still runs (only decidable on its own host: else assumed alive)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", -1))
    if pid <= 0 or not _alive(pid):
        return False
    start = holder.get("start")
    return start is None or _start_time(pid) in (None, start)


class RunLock:
    """The lock on one output directory (see the module docstring).

    Args:
        out: the run's output directory (created if missing).
    """

    def __init__(self, out: str) -> None:
        self.out = out
        self.path = os.path.join(out, LOCK_FILE)
        self.held = False
        self.took_over: Optional[Dict[str, Any]] = None

    def _read(self) -> Optional[Dict[str, Any]]:
        """The holder the lock names; ``None`` while it is empty or partly written; :class:`RunLockError` for a
        lock that is no lock this module writes (a directory, JSON of another shape, a pid that is no number).
        """
        if os.path.isdir(self.path):
            raise RunLockError(
                f"{self.path}: a directory, not a run lock file; remove it (rmdir) if no run uses this --out"
            )
        try:
            with open(self.path) as f:
                holder = json.loads(f.read())
        except FileNotFoundError:
            raise
        except (OSError, ValueError):
            return None
        pid = holder.get("pid") if isinstance(holder, dict) else None
        if isinstance(pid, bool) or not isinstance(pid, int):
            what = f'"pid": {pid!r}' if isinstance(holder, dict) else f"a JSON {type(holder).__name__}"
            raise RunLockError(
                f'{self.path}: not a denoisrec run lock ({what}; expected {{"pid": <integer>, "host": ...}}); '
                "delete the file if no run uses this --out"
            )
        return holder

    def acquire(self) -> None:
        """Take the lock (taking over a stale one); :class:`RunLockError` when another live run holds it."""
        os.makedirs(self.out, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": _start_time(os.getpid()),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = self._read()
                    age = time.time() - os.path.getmtime(self.path)
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                if holder is None and age < UNREADABLE_GRACE_S:
                    raise RunLockError(
                        f"{self.path}: another run is starting on this --out (lock file being "
                        "written); use another --out or wait for it"
                    ) from None
                if holder is not None and holder_is_alive(holder):
                    raise RunLockError(
                        f"{self.path}: --out is in use by another run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('time')}); use another --out, or delete the lock "
                        "file if that run is dead"
                    ) from None
                self.took_over = holder or {}
                try:
                    os.remove(self.path)  # stale: its holder is gone
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return
        raise RunLockError(f"{self.path}: could not take the run lock (other runs keep taking it)")

    def release(self) -> None:
        """Give the lock back, if this process holds it; a second call does nothing."""
        if not self.held:
            return
        self.held = False
        try:
            with open(self.path) as f:
                mine = json.loads(f.read()).get("pid") == os.getpid()
        except (OSError, ValueError):
            mine = False
        if mine:
            os.remove(self.path)


def acquire_for_run(out: str, is_main: bool, broadcast: Any) -> RunLock:
    """Rank 0 takes the lock; every rank raises the same :class:`RunLockError` when it is refused.

    ``broadcast(obj)`` sends rank 0's ``obj`` to every rank (a collective).
    """
    lock = RunLock(out)
    error: Optional[str] = None
    if is_main:
        try:
            lock.acquire()
        except RunLockError as e:
            error = str(e)
    error = broadcast(error)
    if error:
        raise RunLockError(error)
    return lock

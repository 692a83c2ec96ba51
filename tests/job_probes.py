"""What the launch tests (torchx ``local_cwd`` and Slurm) read from a running job: a free port, the live
worker processes of a tagged job, and the last training step rank 0 logged.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Dict


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_pids(tag: str) -> Dict[int, int]:
    """``{global rank: pid}`` of the live worker processes whose environment holds ``DENOISREC_TEST_TAG=tag``
    (the agents have no ``RANK``).
    """
    found: Dict[int, int] = {}
    marker = f"DENOISREC_TEST_TAG={tag}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in env:
            rank = [e[5:] for e in env if e.startswith(b"RANK=")]
            if rank:
                found[int(rank[0])] = int(pid)
    return found


def logged_step(out: Path) -> int:
    """The last training step rank 0 wrote to ``metrics.jsonl`` (0 before the first)."""
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(x)["step"] for x in lines if x.strip().endswith("}") and '"kind": "train"' in x]
    return max(steps, default=0)

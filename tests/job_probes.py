"""What the launch tests (torchx ``local_cwd`` and Slurm) read from a running job: a free port, the live
worker processes of a tagged job, and the last training step rank 0 logged; and the bad-input data both feed
to a 2-rank job.
"""

from __future__ import annotations

import json
import os
import shutil
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


def data_bad_on_rank_1(tiny_data: Path, tmp_path: Path, part: str = "part-00002.parquet") -> Path:
    """A copy of ``tiny_data`` whose last train row group, read only by rank 1 of 2 when the order is not
    shuffled, holds a label 2 (its row 493): rank 1 fails mid-epoch while rank 0 waits in a collective.
    With ``part="part-00000.parquet"`` the row group is rank 0's; with 3 ranks, part-00002's is rank 2's.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    part_file = data / "train" / part
    t = pq.read_table(part_file)
    labels = t.column("label").to_numpy().copy()
    labels[-7] = 2
    i = t.schema.get_field_index("label")
    pq.write_table(
        t.set_column(i, t.schema.field(i), pa.array(labels, t.schema.field(i).type)), part_file, row_group_size=500
    )
    return data

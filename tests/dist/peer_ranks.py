"""Driver for tests/trainer/distributed/test_peers.py: on a real gloo group, rank 1 fails with its own error
(noted in the store), then every rank is told its peer is gone and reads which rank failed.
"""

from __future__ import annotations

import os
from typing import Optional

import torch.distributed as dist

from denoisrec.trainer.distributed.peers import PeerFailed, as_peer_failure


def noted() -> Optional[int]:
    """The failed rank this rank reads from the store after rank 1 noted its own error."""
    dist.init_process_group("gloo")
    rank = int(os.environ["RANK"])
    try:
        if rank == 1:  # rank 1's own error: left in the store, and raised as it is
            own = ValueError("bad label")
            assert as_peer_failure(own, rank) is own
        dist.barrier()
        lost = as_peer_failure(RuntimeError("Connection closed by peer"), rank)
        assert isinstance(lost, PeerFailed) and lost.rank == rank
        return lost.failed
    finally:
        dist.destroy_process_group()

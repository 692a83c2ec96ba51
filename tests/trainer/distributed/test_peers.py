"""A peer's loss told apart from a rank's own error, and the failed rank named to its peers through the store
(a real 2-rank gloo group: rank 1 notes its failure, both read it).
"""

from __future__ import annotations

import torch.distributed as dist
from conftest import launch
from peer_ranks import noted

from denoisrec.trainer.distributed.peers import is_peer_loss, peer_line


def test_the_backends_words_for_a_lost_peer_and_nothing_else() -> None:
    gloo = RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:36536")
    assert is_peer_loss(gloo) and is_peer_loss(dist.DistBackendError("NCCL communicator was aborted"))
    assert not is_peer_loss(RuntimeError("CUDA out of memory")) and not is_peer_loss(ValueError("bad label"))
    assert peer_line(0, 1) == "rank 0 stopped: its peer failed; see rank 1's error above"
    assert peer_line(2, None) == "rank 2 stopped: its peer failed; see the failed rank's error above"
    assert peer_line(0, 1, "SIGKILL") == "rank 0 stopped: its peer failed (rank 1: SIGKILL)"


def test_a_failed_rank_is_named_to_its_peers_through_the_store() -> None:
    assert launch(noted, 2) == [1, 1]

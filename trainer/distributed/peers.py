"""A rank stopped by its peer's failure: told apart from the failure itself, and said in one line.

When one rank of a gloo job fails (bad input, a mistake only it sees) and exits, every rank waiting in a
collective with it gets a backend error (``torch.distributed.DistBackendError``, or gloo's ``RuntimeError``
"Connection closed by peer"). That error is not the job's problem, only its echo, so the rank says
``rank R stopped: its peer failed; see rank N's error above`` instead of its traceback. The failing rank
leaves its rank in the process group's store (:func:`note_failure`, before it closes its connections), so
its peers can name it; where the store is gone with it (it hosted the store), the line says "the failed
rank" and ``denoisrec torchrun``, which sees every rank of its node, names it (:func:`peer_line`).

Example::

    try:
        train(cfg)
    except Exception as e:
        raise as_peer_failure(e, rank) from e  # PeerFailed for an echo; ``e`` itself (noted) otherwise
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Optional

FAILED_KEY = "denoisrec/failed_rank"
"""The store key where the first failing rank leaves its rank."""

PEER_LOST = ("Connection closed by peer", "Connection reset by peer")
"""gloo's words for a peer whose process ended (its error is a plain ``RuntimeError``)."""

PEER_FAILED = "denoisrecPeerFailed"
"""The torchelastic error file's ``extraInfo`` key of a rank stopped by a peer's failure: the failed rank, -1 when
not known (``denoisrec torchrun`` names it from the ranks it sees, and prints these lines after the failures')."""

AGREED_ERROR = "denoisrecAgreed"
"""The error file's ``extraInfo`` key of an error that every rank raises alike (a usage mistake, the run lock):
a rank the agent stopped before it said it was not stopped by that failure, it shared it."""

STORE_WAIT = timedelta(seconds=2)
"""How long a store call may take here: a store that went with its host must not hold the rank 600 s."""


class PeerFailed(RuntimeError):
    """This rank stopped because a peer failed (``failed``: its rank, ``None`` where the store lost it)."""

    def __init__(self, rank: int, failed: Optional[int]) -> None:
        self.rank, self.failed = rank, failed
        super().__init__(peer_line(rank, failed))


def peer_line(rank: int, failed: Optional[int], how: Optional[str] = None) -> str:
    """The one line of a rank stopped by a peer's failure.

    Args:
        rank: the stopped rank.
        failed: the rank whose failure stopped it, ``None`` when not known.
        how: how the failed rank ended where it left no line of its own (``SIGKILL``), else ``None``.

    Returns:
        ``rank 0 stopped: its peer failed; see rank 1's error above`` (``the failed rank's`` when unknown;
        ``rank 0 stopped: its peer failed (rank 1: SIGKILL)`` with ``how``).
    """
    if how is not None and failed is not None:
        return f"rank {rank} stopped: its peer failed (rank {failed}: {how})"
    whose = f"rank {failed}'s" if failed is not None else "the failed rank's"
    return f"rank {rank} stopped: its peer failed; see {whose} error above"


def is_peer_loss(e: BaseException) -> bool:
    """Whether ``e`` is the process-group backend's report of a peer gone (not an error of this rank's own)."""
    import torch.distributed as dist

    return isinstance(e, dist.DistBackendError) or (
        isinstance(e, RuntimeError) and any(words in str(e) for words in PEER_LOST)
    )


def as_peer_failure(e: BaseException, rank: int) -> BaseException:
    """``e`` as this rank should report it: a :class:`PeerFailed` when it echoes a peer's failure (the peer's
    rank read from the store); otherwise ``e`` itself, after leaving this rank in the store as the failed one.
    Call it before the process group is destroyed (the store goes with it).

    Args:
        e: what this rank's work raised.
        rank: this rank.

    Returns:
        The exception to raise (``from e``).
    """
    if isinstance(e, PeerFailed):
        return e
    if is_peer_loss(e):
        return PeerFailed(rank, failed_rank())
    if isinstance(e, Exception):
        note_failure(rank)
    return e


def note_failure(rank: int) -> None:
    """Leave ``rank`` in the store as the failed rank, unless a rank is there already (best effort)."""
    store = _store()
    if store is not None:
        try:
            store.compare_set(FAILED_KEY, "", str(rank))
        except Exception:  # the store's host is gone: the peers' lines say "the failed rank"
            pass


def failed_rank() -> Optional[int]:
    """The rank that :func:`note_failure` left in the store, ``None`` when there is none or no store."""
    store = _store()
    try:
        return int(store.get(FAILED_KEY)) if store is not None and store.check([FAILED_KEY]) else None
    except Exception:  # the store went with its host (the failed rank hosted it)
        return None


def _store() -> Optional[Any]:
    """The default process group's store with a short timeout, ``None`` outside a multi-rank group."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(STORE_WAIT)
        return store
    except Exception:
        return None


__all__ = [
    "AGREED_ERROR",
    "PEER_FAILED",
    "PeerFailed",
    "as_peer_failure",
    "failed_rank",
    "is_peer_loss",
    "note_failure",
    "peer_line",
]

"""Run an iterator on a background thread, keeping a bounded number of items ready.

The reader chains two of these: a *decode* thread (Parquet → checked :class:`Block`; pyarrow decodes the
columns in parallel on its own CPU pool and releases the GIL) and a *batch* thread (shuffle buffer →
:class:`Batch`, pinned when training on CUDA), so the training loop only dequeues ready batches.

- Order is the source's order, so results do not depend on thread timing.
- An exception in the source is re-raised in the consumer, after the items that preceded it.
- :meth:`Background.close` (also called when the consuming generator is closed or garbage-collected) stops
  the thread and closes the source, so breaking out of an epoch early leaks nothing.

Example::

    it = Background(iter(range(5)), depth=2, name="demo")
    assert list(it) == [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")

_END = object()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Background(Generic[T]):
    """Iterate ``source`` on a daemon thread with at most ``depth`` items waiting (``depth >= 1``)."""

    def __init__(self, source: Iterator[T], depth: int, name: str = "prefetch") -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth={depth}: must be >= 1")
        self._source = source
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name=f"denoisrec-{name}", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    break
            else:
                self._put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(_Raised(e))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> "Background[T]":
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            self._thread.join()
            raise StopIteration
        if isinstance(item, _Raised):
            self._done = True
            self._thread.join()
            raise item.exc
        return item  # type: ignore[no-any-return]

    def close(self, timeout: Optional[float] = 10.0) -> None:
        """Stop the thread (dropping what it prepared) and close the source."""
        self._done = True
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)

    def __del__(self) -> None:
        if not self._done:
            self._stop.set()

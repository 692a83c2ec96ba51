"""A pool of threads that maps a function over an iterator and yields the results in the source's order.

The reader assembles batches with it (``data.workers``): numpy's gathers and copies release the GIL, so
``workers`` threads assemble ``workers`` batches at once. Results never depend on the number of threads
or on their timing:

- results come out in the order of the source;
- an exception (from the source or from ``fn``) reaches the consumer after every result before it;
- at most ``2 * workers`` items are in flight (bounded memory);
- closing the generator (``break``, an error) cancels what is queued and joins the threads.

Example::

    assert list(ordered_map(lambda x: x * x, iter(range(5)), workers=2)) == [0, 1, 4, 9, 16]
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Iterator, TypeVar

S = TypeVar("S")
T = TypeVar("T")


def ordered_map(fn: Callable[[S], T], source: Iterator[S], workers: int, name: str = "worker") -> Iterator[T]:
    """``fn(x)`` for each ``x`` of ``source``, in order, computed on ``workers`` threads.

    Args:
        fn: the work per item; must not depend on the other items' work.
        source: the items (read by the consumer's thread).
        workers: threads (>= 1).
        name: thread-name prefix (``denoisrec-<name>``).

    Returns:
        an iterator of the results in ``source``'s order.
    """
    if workers < 1:
        raise ValueError(f"workers={workers}: must be >= 1")
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"denoisrec-{name}")
    pending: Deque["Future[T]"] = deque()
    try:
        failed: BaseException | None = None
        while True:
            try:
                item = next(source)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001 - re-raised after the results before it
                failed = e
                break
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        if failed is not None:
            raise failed
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)

"""Linear assignments of many null draws, solved side by side.

Every null draw ends in a Hungarian assignment on the CPU (scipy's ``linear_sum_assignment``,
which releases the GIL), while its similarity matrix comes from the device. On a GPU host the
assignments are what is left: at hidden size 4096 the 25 alignment draws of one pairing spend
~37 s in them, one after another, while 15 cores idle. ``ordered_map`` produces the matrices
lazily in the calling thread (device work stays on one thread, in order) and solves up to
``workers`` of them at once in threads; results come back in input order, so a report does
not depend on the number of threads.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: environment variable capping the solver threads (1: solve in the calling thread)
THREADS_ENV = "LINEAGE_SOLVER_THREADS"
#: more threads would hold more d x d matrices in memory for little gain
MAX_THREADS = 8


def usable_cores() -> int:
    """The cores this process may use, at most ``MAX_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def default_workers() -> int:
    """Solver threads: the usable cores (at most ``MAX_THREADS``), or the value of
    ``LINEAGE_SOLVER_THREADS``."""
    env = os.environ.get(THREADS_ENV)
    if env:
        return max(1, int(env))
    return usable_cores()


def ordered_map(fn: Callable[[T], R], items: Iterable[T],
                workers: int | None = None) -> Iterator[R]:
    """``map(fn, items)`` with up to ``workers`` calls of ``fn`` running at once in threads and
    at most ``workers`` more items produced ahead (each may be a ``d x d`` matrix)."""
    workers = workers or default_workers()
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lineage-solve") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


__all__ = ["MAX_THREADS", "THREADS_ENV", "default_workers", "ordered_map", "usable_cores"]

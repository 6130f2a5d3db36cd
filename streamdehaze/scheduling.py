"""Threads' scheduling kept as it was across a call that changes it.

SVT-AV1 (``--codec libsvtav1``), run as root (as in most containers), switches the thread that opens it to
real-time priority, SCHED_FIFO 99, and the threads it starts then inherit it. On a few cores those threads starve
every other thread of the process (the model's, the reader's, an embedding application's own) and a spinning one
can stall it for good. Nothing in the encoder turns this off, so its opening is wrapped in ``realtime_undone``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

_TASKS = "/proc/self/task"
_REALTIME = {getattr(os, "SCHED_FIFO", None), getattr(os, "SCHED_RR", None)} - {None}
_RESET_ON_FORK = getattr(os, "SCHED_RESET_ON_FORK", 0)  # (a flag the kernel adds to the policy it reports)


def _policies() -> dict[int, tuple[int, int]]:
    """Each thread of this process (by its id) with its scheduling (policy, priority)."""
    found = {}
    for name in os.listdir(_TASKS):
        with contextlib.suppress(OSError):  # (a thread that ended meanwhile)
            tid = int(name)
            found[tid] = os.sched_getscheduler(tid) & ~_RESET_ON_FORK, os.sched_getparam(tid).sched_priority
    return found


@contextlib.contextmanager
def realtime_undone() -> Iterator[None]:
    """Put back, after the block, each thread of this process that the block made real-time: one that was there
    before as it was, a new one as the calling thread was (whose scheduling new threads inherit). Threads the
    block left alone, real-time or not, are not touched. Linux only; elsewhere a no-op."""
    if not _REALTIME or not os.path.isdir(_TASKS):
        yield
        return
    before = _policies()
    inherited = before.get(threading.get_native_id(), (os.SCHED_OTHER, 0))
    try:
        yield
    finally:
        for tid, now in _policies().items():
            if now[0] in _REALTIME and now != before.get(tid, inherited):
                policy, priority = before.get(tid, inherited)
                with contextlib.suppress(OSError):  # (ended meanwhile)
                    os.sched_setscheduler(tid, policy, os.sched_param(priority))

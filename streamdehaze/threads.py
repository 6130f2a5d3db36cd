"""Bounded hand-offs between pipeline threads, with backpressure and error propagation.

``Prefetch`` runs a producer (demux + decode) in its own thread; ``Worker`` runs a consumer (encode + mux) in
its own thread. Either side's exception is re-raised in the thread that talks to it, so the pipeline fails
in one place with one message. Both can ``notify`` a waiting scheduler (``pipeline.py``) when an item arrives or
is done, so that one thread can serve many of them without blocking on any.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()
_POLL_S = 0.1
EMPTY = object()  # ``Prefetch.poll``: nothing is waiting yet


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetch(Generic[T]):
    """Iterate ``iterable`` in a background thread, holding at most ``maxsize`` items ahead.

    When full, the producer waits (backpressure: files never lose a frame), or with ``on_drop`` set it discards
    the oldest waiting item and reports it (live sources: latency stays bounded when processing is slower); then
    ``max_bytes`` bounds the waiting items' memory too (``size(item)`` bytes each), whatever their sizes: the
    oldest are discarded until a new one fits. Items ``kept(item)`` says are never discarded (a camera's sound:
    only its pictures fall behind), and do not count.
    """

    def __init__(self, iterable: Iterable[T], maxsize: int, name: str = "prefetch",
                 on_drop: Callable[[T], None] | None = None, notify: Callable[[], None] | None = None,
                 kept: Callable[[T], bool] = lambda item: False, max_bytes: float = math.inf,
                 size: Callable[[T], int] = lambda item: 0, leave_after: float | None = None) -> None:
        """``leave_after``: ``close`` waits that long at most for the producer, then leaves it to end on its own."""
        self._leave_after = leave_after
        self._queue: queue.Queue = queue.Queue()  # (bounded here: ``_put`` and ``_put_dropping`` count)
        self._maxsize, self._on_drop, self._kept = maxsize, on_drop, kept
        self._max_bytes, self._size = max_bytes, size
        self._notify = notify or (lambda: None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iterable,), name=name, daemon=True)
        self._thread.start()

    def _run(self, iterable: Iterable[T]) -> None:
        iterator = iter(iterable)
        try:
            for item in iterator:
                if not (self._put_dropping(item) if self._on_drop else self._put(item)):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which decides what it means
            self._put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _put(self, item: object) -> bool:
        q = self._queue
        with q.not_full:  # (queue.Queue's own condition, notified by every get; it holds the queue's lock)
            while len(q.queue) >= self._maxsize:
                if self._stop.is_set():
                    return False
                q.not_full.wait(_POLL_S)
        q.put(item)
        self._notify()
        return True

    def _put_dropping(self, item: T) -> bool:
        q = self._queue
        dropped = []
        with q.mutex:  # (queue.Queue's own lock: the oldest items that may go are taken from among the others)
            if not self._kept(item):
                counted = self._counted()
                held = sum(self._size(q.queue[k]) for k in counted) + self._size(item)
                gone = 0
                # (by bytes too: a camera back at a larger size must not hold as many of its larger frames)
                while gone < len(counted) and (len(counted) - gone >= self._maxsize or held > self._max_bytes):
                    held -= self._size(q.queue[counted[gone]])
                    gone += 1
                dropped = [q.queue[k] for k in counted[:gone]]
                for k in reversed(counted[:gone]):
                    del q.queue[k]
        for old in dropped:
            self._on_drop(old)  # type: ignore[misc]
        q.put(item)
        self._notify()
        return not self._stop.is_set()

    def _counted(self) -> list[int]:
        """Where the waiting items that count against ``maxsize`` are (a camera's pictures, not its sound); called
        with the queue's lock held."""
        return [k for k, item in enumerate(self._queue.queue)
                if item is not _END and not isinstance(item, _Failure) and not self._kept(item)]

    def qsize(self) -> int:
        with self._queue.mutex:
            return len(self._counted())

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        return self._unwrap(self._queue.get())

    def poll(self) -> T | object:
        """The next item if one is waiting, else ``EMPTY``; like ``next()`` at the end or on the producer's error."""
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return EMPTY
        return self._unwrap(item)

    def _unwrap(self, item: object) -> T:
        if item is _END:
            self._queue.put(_END)  # stay exhausted
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.exc
        return item

    def close(self) -> None:
        """Stop the producer and wait for it (it closes its iterator), or ``leave_after`` seconds of it."""
        self._stop.set()
        self._thread.join(self._leave_after)


class Worker(Generic[T]):
    """Call ``fn(item)`` for each item put, in order, in a background thread; ``put`` blocks when full."""

    def __init__(self, fn: Callable[[T], None], maxsize: int, name: str = "worker",
                 notify: Callable[[], None] | None = None) -> None:
        self._fn = fn
        self._notify = notify or (lambda: None)
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._failure: BaseException | None = None
        self._cancelled = False
        self._ending = False  # the end is queued
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                # (``fn`` is often a method of the owner, which holds this worker: a reference cycle that kept the
                # owner, its codecs and frames, until the next full garbage collection)
                self._fn = self._notify = None
                return
            if self._failure is None and not self._cancelled:
                try:
                    self._fn(item)
                except BaseException as exc:
                    self._failure = exc  # keep draining so producers never block forever
            self._notify()

    def put(self, item: T) -> None:
        while True:
            self._raise_failure()
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def pending(self) -> int:
        """Items put and not yet handled (about: the one in hand is not counted)."""
        return self._queue.qsize()

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def finish(self, poll: Callable[[], None] = lambda: None) -> None:
        """Wait until every item put so far is handled; re-raise the worker's error if it failed. ``poll()`` is
        called every 0.1 s meanwhile; what it raises leaves the worker at work (``finish`` or ``cancel`` after it)."""
        while not self._ending:
            poll()
            try:
                self._queue.put(_END, timeout=_POLL_S)
                self._ending = True
            except queue.Full:
                continue
        while self._thread.is_alive():
            poll()
            self._thread.join(_POLL_S)
        self._raise_failure()

    def skip(self) -> None:
        """Drop the items still queued (the one in hand is finished); ``finish`` then returns once it is."""
        self._cancelled = True

    def cancel(self) -> None:
        """Drop whatever is still queued and wait for the thread to end; never raises. (Call it, like ``finish``,
        where no signal handler can raise inside the wait: Python 3.11 takes a thread whose ``join`` was
        interrupted for ended, and the caller would go on while it still works.)"""
        self._cancelled = True
        if not self._ending:
            self._ending = True
            self._queue.put(_END)  # (a cancelled worker empties its queue at once)
        self._thread.join()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

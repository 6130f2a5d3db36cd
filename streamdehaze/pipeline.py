"""source -> engine -> sink, for one stream or many sharing an engine.

Each ``Stream`` has its own reader thread (demux + decode ahead into a bounded queue), its own writer thread
(encode + mux) and its own state: temporal smoothing, latency bound, counters. A ``Scheduler`` serves all the
streams of one engine from one thread: it takes what each stream has ready without ever waiting for one, puts the
frames of all of them through the engine together (frames of one inference shape share a model call), and hands
each stream its results. So a camera that stalls, dies or sends slowly holds back no other.

Files never lose a frame: a full reader queue blocks its reader (backpressure), and a stream is only served while
its writer has room. Live streams bound their latency: a full reader queue drops its oldest frame, frames older
than ``max_latency`` are skipped, and both are counted. When the engine is slower than the cameras together, every
round serves each stream that has a frame, in turn, so the drops are spread over the cameras and none starves.
On a GPU up to ``engine.depth`` more calls are in flight behind the oldest; finished ones go out at once.
Copy-stream packets (audio, subtitles) skip the engine and reach the writer in demux order.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import av

from .engine import Batch, Engine, Request
from .stats import RunStats
from .temporal import TemporalSmoother
from .threads import EMPTY, Prefetch, Worker

_IDLE_WAIT_S = 0.1  # the scheduler's longest sleep when nothing is ready (it is woken as soon as something is)


@dataclass
class RunResult:
    frames: int
    seconds: float
    interrupted: bool = False
    dropped: int = 0
    reconnects: int = 0
    corrupt: int = 0  # input packets skipped as corrupt
    output: str | None = None  # where the frames went, when that is not the target (an interrupted file run)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Stream:
    """One stream's reader, writer and state, served by a ``Scheduler``.

    ``batch_size``: frames of this stream per engine call (a file waits until it has that many; a live stream
    sends what it has). ``temporal``: this stream's smoother (state carried from frame to frame).
    """

    def __init__(self, source: Iterable, sink, *, name: str = "", batch_size: int = 1, queue_frames: int = 8,
                 live: bool = False, max_latency: float | None = None, stats: RunStats | None = None,
                 temporal: TemporalSmoother | None = None, on_frames: Callable[[int], None] | None = None) -> None:
        self.source, self.sink, self.name = source, sink, name
        self.batch_size, self.queue_frames, self.live, self.max_latency = batch_size, queue_frames, live, max_latency
        self.stats = stats or RunStats()
        self.temporal, self.on_frames = temporal, on_frames
        self.frames = 0  # dehazed frames handed to the writer
        self.error: BaseException | None = None
        self.drained = threading.Event()  # nothing of this stream is left in the engine
        self._arrival = getattr(source, "arrival", lambda pts: None)  # live sources know when each frame came in
        self._pending: list[av.VideoFrame] = []  # taken, waiting for a full batch
        self._in_engine = 0
        self._ended = False  # no more frames will be taken: the source ended, failed or was stopped
        self.stopped = False  # stopped before its source ended
        self._start = time.perf_counter()
        self.reader: Prefetch | None = None
        self.writer: Worker | None = None
        # Sinks that show the source frame (callbacks) get it on each dehazed frame, as ``frame.opaque``.
        self._originals: deque[av.VideoFrame] | None = deque() if getattr(sink, "wants_originals", False) else None

    def start(self, wake: Callable[[], None], depth: int) -> None:
        """Start the reader and writer threads; ``wake`` is called whenever one of them has something new."""
        stats = self.stats
        self.reader = Prefetch(self.source, maxsize=max(2, self.batch_size) if self.live else self.queue_frames,
                               name=f"decode {self.name}".strip(), notify=wake,
                               on_drop=(lambda _: stats.drop()) if self.live else None)
        # The scheduler never puts more than this: a full writer holds back its own stream, never the scheduler.
        self._capacity = self.queue_frames + self.batch_size * (depth + 2)
        self.writer = Worker(self._write, maxsize=self._capacity + 1, name=f"encode {self.name}".strip(), notify=wake)
        stats.queue_depth = self.reader.qsize
        stats.reconnects = lambda: getattr(self.source, "reconnects", 0)
        stats.received = lambda: getattr(self.source, "received", stats.frames)
        stats.corrupt = lambda: getattr(self.source, "corrupt", 0)

    def _write(self, item: av.VideoFrame | av.Packet) -> None:
        self.sink.write(item)
        if isinstance(item, av.VideoFrame):
            self.stats.frame_done(self._arrival(item.pts))

    # The scheduler's side (its thread only).

    def take(self) -> list[av.VideoFrame]:
        """The frames to dehaze now, without waiting: a full batch (fewer at the end, or what a live stream has),
        else none. Packets go straight to the writer; frames too old to be worth showing are dropped."""
        if self._ended:
            return []
        room = self._capacity - self.writer.pending() - self._in_engine - len(self._pending)
        while len(self._pending) < self.batch_size and room > 0:
            try:
                item = self.reader.poll()
            except StopIteration:
                self._ended = True
                break
            if item is EMPTY:
                break
            room -= 1
            if isinstance(item, av.Packet):
                self.writer.put(item)
                continue
            came = self._arrival(item.pts)
            if self.max_latency is not None and came is not None and time.monotonic() - came > self.max_latency:
                self.stats.drop()
                continue
            self._pending.append(item)
        if len(self._pending) >= self.batch_size or (self._pending and (self.live or self._ended)):
            frames, self._pending = self._pending, []
            self._in_engine += len(frames)
            if self._originals is not None:
                self._originals.extend(frames)
            return frames
        return []

    def request(self, frames: list[av.VideoFrame]) -> Request:
        return Request(frames, self.sink.yuv_format, self.sink.pix_fmt, self.temporal)

    def deliver(self, frames: list[av.VideoFrame]) -> None:
        self._in_engine -= len(frames)
        if self._originals is not None:  # results come back in the order the frames were taken
            for frame in frames:
                frame.opaque = self._originals.popleft()
        if self.error is not None:
            return
        for frame in frames:
            self.writer.put(frame)
        self.frames += len(frames)
        if self.on_frames is not None:
            self.on_frames(len(frames))

    @property
    def ended(self) -> bool:
        return self._ended

    def fail(self, exc: BaseException) -> None:
        """This stream failed (its source, its writer, or the engine on its frames); the others go on."""
        if self.error is None:
            self.error = exc
        self.stop()

    # Anyone's side.

    def stop(self) -> None:
        """Take no more frames (those already in the engine are still written); the reader is asked to finish."""
        self.stopped = self.stopped or not self._ended
        self._ended = True
        self._pending = []
        stop = getattr(self.source, "stop", None)
        if stop is not None:
            stop()

    # The owner's side, once ``drained`` is set.

    def finish(self, interrupted: bool = False) -> RunResult:
        """Close the reader, write everything handed to the writer and close the sink (the file is complete), or,
        after a failure, keep what was written as far as it can be (``sink.abort``) and raise the failure."""
        try:
            self.reader.close()
            if self.error is not None:
                raise self.error
            self.writer.finish()
            self.sink.close()
        except BaseException:
            self.writer.cancel()
            self.sink.abort()
            raise
        return self.result(interrupted)

    def result(self, interrupted: bool = False) -> RunResult:
        return RunResult(frames=self.frames, seconds=time.perf_counter() - self._start, interrupted=interrupted,
                         dropped=self.stats.dropped, reconnects=getattr(self.source, "reconnects", 0),
                         corrupt=getattr(self.source, "corrupt", 0))


class Scheduler:
    """Serves the streams of one engine from one thread (``run``, or ``step`` by step)."""

    def __init__(self, engine: Engine, max_frames: int = 64) -> None:
        """``max_frames``: the most frames of all streams together in one engine call."""
        self.engine, self.max_frames = engine, max_frames
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._streams: list[Stream] = []
        self._in_flight: deque[list[tuple[Stream, Batch]]] = deque()  # engine calls, oldest first
        self._turn = itertools.count()
        self._closing = False

    def add(self, stream: Stream) -> None:
        """Start serving ``stream`` (thread-safe); its reader and writer start now."""
        stream.start(self._wake.set, self.engine.depth)
        with self._lock:
            self._streams.append(stream)
        self._wake.set()

    def close(self) -> None:
        """``run`` returns once every stream is drained (thread-safe)."""
        self._closing = True
        self._wake.set()

    def run(self) -> None:
        """Serve until ``close()`` and every stream is drained."""
        while True:
            with self._lock:
                if self._closing and not self._streams:
                    return
                streams = list(self._streams)
            try:
                self.step()
            except Exception as exc:  # a bug: its streams fail (each says why) rather than wait for ever
                for stream in streams:
                    stream.fail(exc)
                self.abandon()

    def step(self) -> None:
        """One round: submit what the streams have ready, collect what the engine has done, or wait for either."""
        self._wake.clear()  # anything that arrives from here on wakes the wait below
        with self._lock:
            streams = list(self._streams)
        if streams:  # a different stream goes first each round: when calls are full, no stream always misses out
            first = next(self._turn) % len(streams)
            streams = streams[first:] + streams[:first]
        picked: list[tuple[Stream, list[av.VideoFrame]]] = []
        total = 0
        for stream in streams:
            if total >= self.max_frames:
                break
            try:
                frames = stream.take()
            except Exception as exc:  # its source failed
                stream.fail(exc)
                continue
            if frames:
                picked.append((stream, frames))
                total += len(frames)
        if picked:
            try:
                batches = self.engine.submit_many([stream.request(frames) for stream, frames in picked])
            except Exception as exc:
                for stream, _ in picked:
                    stream.fail(exc)
            else:
                self._in_flight.append([(stream, batch) for (stream, _), batch in zip(picked, batches)])
            while self._in_flight and (len(self._in_flight) > self.engine.depth or self._in_flight[0][0][1].ready()):
                self._collect()
        elif self._in_flight:
            self._collect()  # nothing new: finish the oldest call
        else:
            self._wake.wait(_IDLE_WAIT_S)
        self._retire()

    def abandon(self) -> None:
        """Forget the calls in flight (a second Ctrl-C: their frames are not written)."""
        for call in self._in_flight:
            for stream, batch in call:
                stream._in_engine -= len(batch)
        self._in_flight.clear()
        self._retire()

    def _collect(self) -> None:
        call = self._in_flight.popleft()
        for stream, batch in call:
            try:
                frames = batch.frames()
            except Exception as exc:  # the engine failed on this call
                stream._in_engine -= len(batch)
                stream.fail(exc)
                continue
            try:
                stream.deliver(frames)
            except Exception as exc:  # its writer failed
                stream.fail(exc)

    def _retire(self) -> None:
        busy = {id(stream) for call in self._in_flight for stream, _ in call}
        with self._lock:
            done = [s for s in self._streams if s.ended and id(s) not in busy]
            self._streams = [s for s in self._streams if s not in done]
        for stream in done:
            stream.drained.set()


def run_video(source: Iterable, engine: Engine, sink, *, batch_size: int = 1, queue_frames: int = 8,
              live: bool = False, max_latency: float | None = None, stats: RunStats | None = None,
              on_frames: Callable[[int], None] | None = None, temporal: TemporalSmoother | None = None) -> RunResult:
    """Process every frame of ``source`` into ``sink`` and close the sink (see ``drive``)."""
    stream = Stream(source, sink, batch_size=batch_size, queue_frames=queue_frames, live=live,
                    max_latency=max_latency, stats=stats, temporal=temporal, on_frames=on_frames)
    return stream.finish(drive(stream, engine))


def drive(stream: Stream, engine: Engine) -> bool:
    """Run one stream through ``engine`` with the scheduler in the calling thread, until nothing of it is left in
    the engine; the caller then finishes it (``Stream.finish``). Returns whether it was interrupted.

    Ctrl-C (KeyboardInterrupt) stops reading and lets the frames already in the engine through, so the output is
    complete and playable up to there; a second Ctrl-C skips those too. Any other failure stops the stream, keeps
    what was written as far as it can be (``sink.abort``) and is raised.
    """
    scheduler = Scheduler(engine)
    scheduler.add(stream)
    interrupted = False
    try:
        with deferred_signals() as run_handlers:
            while not stream.drained.is_set():
                try:
                    run_handlers()  # a signal's handler (KeyboardInterrupt) runs here, between two steps (0.1 s apart
                    # at most when idle)
                    scheduler.step()
                except KeyboardInterrupt:
                    if interrupted:
                        scheduler.abandon()
                    interrupted = True
                    stream.stop()
    except BaseException:
        stream.stop()
        stream.reader.close()
        stream.writer.cancel()
        stream.sink.abort()
        raise
    return interrupted


_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def deferred_signals() -> Iterator[Callable[[], None]]:
    """Inside, the Python handlers of SIGINT, SIGTERM and SIGHUP run only when the yielded function is called; a
    signal only records itself (taking no lock: the thread it interrupts may hold it). Outside the main thread this
    changes nothing.

    Why: a KeyboardInterrupt raised at an arbitrary point can land inside a queue's condition variable (between
    waking a waiter and forgetting it), and the writer thread then misses the wake-up that ends it: the run hangs
    at its end. The handlers are put back on leaving, and any signal still pending then is handled there.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    pending: list[tuple[int, object]] = []
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    previous = {sig: handler for sig, handler in previous.items() if callable(handler)}

    def record(signum: int, frame: object) -> None:
        pending.append((signum, frame))

    def run_handlers() -> None:
        while pending:
            signum, frame = pending.pop(0)
            previous[signum](signum, frame)

    for sig in previous:
        signal.signal(sig, record)
    try:
        yield run_handlers
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    run_handlers()

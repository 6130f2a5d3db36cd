"""source -> engine -> sink, for one stream or many sharing an engine.

Each ``Stream`` has its own reader thread (demux + decode ahead into a bounded queue), its own writer thread
(encode + mux) and its own state: temporal smoothing, latency bound, counters. A ``Scheduler`` serves all the
streams of one engine: it takes what each stream has ready without ever waiting for one, puts the frames of all of
them through the engine together (frames of one inference shape share a model call), and hands each stream its
results, which on a CPU its writer finishes at full resolution. So a camera that stalls, dies or sends slowly
holds back no other. One thread runs it on a GPU; on a CPU ``serve`` runs it in two, each making its own calls.

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
import logging
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av

from .engine import Batch, Engine, Request
from .sources import packet_start
from .stats import RunStats
from .temporal import TemporalSmoother
from .threads import EMPTY, Prefetch, Worker

# A live stream's reader holds the frames that come within its latency allowance, and at least this long (a
# connection's first second or so comes at once: the packets FFmpeg read to probe the stream), within a memory budget.
_LIVE_HOLD_S = 1.5
_LIVE_QUEUE_BYTES = 256 << 20
_IDLE_WAIT_S = 0.1  # the scheduler's longest sleep when nothing is ready (it is woken as soon as something is)
# A camera's reader may be dialling when its stream stops, which nothing interrupts (up to twice the connect timeout):
# the stream waits this long for it, then leaves it to end on its own (a source that ``closes_while_read``).
_READER_LEFT_S = 1.0
_READ_ON_WAIT_S = 2.0  # a file cut by Ctrl-C is waited on for its sound this long at most (``Stream._read_on``)
# A camera faster than the model loses frames: said once, when a tenth of them have been dropped after this long
# (the statistics count them; the log said nothing until the summary, and a recording was thinned unseen).
_SAY_DROPS_AFTER_S = 4.0
_SAY_DROPS_SHARE = 0.1

log = logging.getLogger("streamdehaze")


@dataclass
class RunResult:
    frames: int
    seconds: float
    interrupted: bool = False
    dropped: int = 0
    reconnects: int = 0
    corrupt: int = 0  # input packets skipped as corrupt
    unpublished: int = 0  # frames that came while the server published to was down
    output_reconnects: int = 0  # reconnections to that server
    output: str | None = None  # where the frames went, when not the target (an interrupted file run, segments)
    settings: dict[str, object] = field(default_factory=dict)  # what ran, "auto" resolved (``Job.settings``)

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
        self.written = 0  # and written (fewer only where Ctrl-C twice dropped some)
        self.error: BaseException | None = None
        # The source's failure (a camera out of reconnects): the frames it gave before are still written, then the
        # run fails with it.
        self.source_error: BaseException | None = None
        self.drained = threading.Event()  # nothing of this stream is left in the engine
        self._arrival = getattr(source, "arrival", lambda pts: None)  # live sources know when each frame came in
        self._pending: list[av.VideoFrame] = []  # taken, waiting for a full batch
        self._last_taken: av.VideoFrame | None = None  # the last frame handed to the engine
        self._cut_at: Fraction | None = None  # stopped there: the sound up to it is still read (``stop``)
        self._in_engine = 0
        self._ended = False  # no more frames will be taken: the source ended, failed or was stopped
        self.stopped = False  # cut short: stopped before its source ended, or frames taken were dropped (Ctrl-C twice)
        self._start = time.perf_counter()
        self._said_drops = False  # (``_say_drops``)
        self.reader: Prefetch | None = None
        self.writer: Worker | None = None
        # Sinks that show the source frame (callbacks) get it on each dehazed frame, as ``frame.opaque``.
        self._originals: deque[av.VideoFrame] | None = deque() if getattr(sink, "wants_originals", False) else None

    def start(self, wake: Callable[[], None], depth: int) -> None:
        """Start the reader and writer threads; ``wake`` is called whenever one of them has something new."""
        stats = self.stats
        # The scheduler never puts more than this: a full writer holds back its own stream, never the scheduler.
        self._capacity = self.queue_frames + self.batch_size * (depth + 2)
        self.writer = Worker(self._write, maxsize=self._capacity + 1, name=f"encode {self.name}".strip(), notify=wake)
        self.reader = Prefetch(self.source, maxsize=self._live_queue() if self.live else self.queue_frames,
                               name=f"decode {self.name}".strip(), notify=wake,
                               on_drop=(lambda _: stats.drop()) if self.live else None,
                               kept=lambda item: isinstance(item, av.Packet),  # (a camera's sound is never dropped)
                               max_bytes=_LIVE_QUEUE_BYTES, size=_frame_bytes,
                               leave_after=_READER_LEFT_S if getattr(self.source, "closes_while_read", False) else None)
        # (read from the source, not through this stream: the statistics would hold it in a reference cycle, its
        # decoder, encoder and frames kept until the next full garbage collection)
        source = self.source
        stats.queue_depth = self.reader.qsize
        stats.reconnects = lambda: getattr(source, "reconnects", 0)
        stats.received = lambda: getattr(source, "received", None)  # (None: a file's, all it wrote)
        stats.corrupt = lambda: getattr(source, "corrupt", 0)

    def _live_queue(self) -> int:
        """How many frames a live stream's reader may hold before it drops the oldest (a hiccup of the engine or a
        connection's first burst is ridden out; a model slower than the camera for long meets ``max_latency``), as
        far as their bytes stay within ``_LIVE_QUEUE_BYTES``: the reader counts those as they come, since a camera
        may come back from an outage at a larger size than it began with."""
        least = max(2, self.batch_size)
        info = getattr(self.source, "info", None)
        if info is None or not info.rate:
            return least
        return max(least, math.ceil(info.rate * max(self.max_latency or 0.0, _LIVE_HOLD_S)))

    def _write(self, item: tuple[Batch, int, av.VideoFrame | None] | av.Packet) -> None:
        if isinstance(item, av.Packet):
            self.sink.write(item)
            return
        batch, k, original = item
        frame = batch.frames()[k]  # the first frame of a batch does the batch's work (on CPU, see ``Batch``)
        if original is not None:
            frame.opaque = original
        pts = frame.pts  # (a segment's sink writes it shifted to the segment's start)
        self.sink.write(frame)
        self.written += 1
        self.stats.frame_done(self._arrival(pts))
        if self.live and not self._said_drops:
            self._say_drops()

    def _say_drops(self) -> None:
        seconds, received = time.perf_counter() - self._start, self.stats.received()
        if seconds >= _SAY_DROPS_AFTER_S and received and self.stats.dropped >= _SAY_DROPS_SHARE * received:
            self._said_drops = True
            log.warning("the model keeps up with %.1f of the camera's %.1f frames a second: the others are dropped "
                        "(%d so far; a smaller inference size, a lighter model or a GPU keeps up)",
                        self.written / seconds, received / seconds, self.stats.dropped)

    # The scheduler's side (one of its threads at a time).

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
            except Exception as exc:  # (the frames already taken were lost with it, one in four runs of a test)
                self.source_error, self._ended = exc, True
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
            frames = self._pending
            self._last_taken = frames[-1]  # (before they leave ``_pending``: a stop from another thread cuts later)
            self._pending = []
            self._in_engine += len(frames)
            if self._originals is not None:
                self._originals.extend(frames)
            return frames
        return []

    def request(self, frames: list[av.VideoFrame]) -> Request:
        return Request(frames, self.sink.yuv_format, self.sink.pix_fmt, self.temporal)

    def deliver(self, batch: Batch) -> None:
        """Hand a batch's frames to the writer, one item each (so the writer's queue counts frames)."""
        self._in_engine -= len(batch)
        # Results come back in the order the frames were taken.
        originals = [self._originals.popleft() if self._originals is not None else None for _ in range(len(batch))]
        if self.error is not None:
            if self.live:  # (a camera's frames that the failure left unwritten: received = written + dropped)
                self.stats.drop(len(batch))
            return
        for k, original in enumerate(originals):
            try:
                self.writer.put((batch, k, original))
            except BaseException:  # its writer failed: the rest of the batch is never written
                if self.live:
                    self.stats.drop(len(batch) - k)
                raise
            self.frames += 1
        if self.on_frames is not None:
            self.on_frames(len(batch))

    @property
    def ended(self) -> bool:
        return self._ended

    def fail(self, exc: BaseException) -> None:
        """This stream failed (its source, its writer, or the engine on its frames); the others go on."""
        if self.error is None:
            self.error = exc
        self.stop()

    # Anyone's side.

    def stop(self, cut: bool = False) -> None:
        """Take no more frames (those already in the engine are still written); the reader is asked to finish.
        ``cut`` (Ctrl-C on a file on disk): the file's sound up to the end of the last frame taken is still read and
        written (``finish``): a file stores its sound up to a second or more after its picture, which a partial
        lacked. (From another thread than the scheduler's, which takes the frames, a batch taken meanwhile may end
        after the cut.)"""
        if cut and not self._ended and not self.live and self._last_taken is not None:
            cut_after = getattr(self.source, "cut_after", None)
            self._cut_at = cut_after(self._last_taken) if cut_after is not None else None
        self.stopped = self.stopped or not self._ended
        self._ended = True
        if self.live:  # (a camera's frames never dehazed are dropped frames: received = written + dropped)
            self.stats.drop(len(self._pending))
        self._pending = []
        stop = getattr(self.source, "stop", None)
        if stop is not None:
            stop()

    def _read_on(self, run_handlers: Callable[[], None]) -> None:
        """After a cut: what the reader still gives, its sound before the cut written. Reading a file on disk on
        (``VideoFileSource.cut_after``) takes milliseconds; it is waited on ``_READ_ON_WAIT_S`` at most, and Ctrl-C
        again ends the wait as it ends the writer's work (``finish``)."""
        end, deadline = self._cut_at, time.monotonic() + _READ_ON_WAIT_S
        try:
            while time.monotonic() < deadline:
                run_handlers()
                item = self.reader.poll()
                if item is EMPTY:
                    time.sleep(0.01)
                elif isinstance(item, av.Packet) and (start := packet_start(item)) is not None and start < end:
                    self.writer.put(item)
        except StopIteration:
            pass
        except KeyboardInterrupt:
            self.drop_unwritten()
        except Exception as exc:  # (the file read on is damaged there: the partial keeps what came before)
            log.debug("%s: reading on for the sound: %s", self.name or "input", exc)

    def drop_unwritten(self) -> None:
        """A second Ctrl-C: the frames handed to the writer and not yet begun are not written, nor is the sound read
        on after a cut."""
        self.stopped, self._cut_at = True, None
        self.writer.skip()

    # The owner's side, once ``drained`` is set.

    def finish(self, interrupted: bool = False, run_handlers: Callable[[], None] = lambda: None) -> RunResult:
        """Close the reader, write everything handed to the writer and close the sink (the file is complete), or,
        after a failure, keep what was written as far as it can be (``sink.abort``) and raise the failure.

        ``run_handlers``: ``deferred_signals``' (call this inside it), run while the writer works. A Ctrl-C then
        (its KeyboardInterrupt) is taken as in ``drive``: the first lets the writer finish what it was handed, one
        after another drops what it has not begun; either way the sink is closed, playable, once the writer is done
        with it (never two threads on one encoder), and the result says ``interrupted``."""
        unwritten_counted = False
        try:
            if self._cut_at is not None and self.error is None:
                self._read_on(run_handlers)
            self.reader.close()
            if self.live:
                self.stats.drop(self.reader.qsize())  # (the frames still waiting for the engine)
            if self.error is not None:
                raise self.error
            while True:
                try:
                    self.writer.finish(run_handlers)
                    break
                except KeyboardInterrupt:
                    if self.writer.failure is not None:  # an on_frame callback raised it (a "stop" key): the writer
                        interrupted = True  # wrote its last, and raises it again at every wait (it looped for ever)
                        break
                    if interrupted:
                        self.drop_unwritten()
                    interrupted = True
            if self.live:  # (those a second Ctrl-C dropped: received = written + dropped)
                self.stats.drop(self.frames - self.written)
                unwritten_counted = True
            self.sink.close()
        except BaseException:
            self.writer.cancel()
            if self.live and not unwritten_counted:  # (those a failure left unwritten: dropped too)
                self.stats.drop(self.frames - self.written)
            self.sink.abort()
            raise
        if self.source_error is not None:
            raise self.source_error
        return self.result(interrupted)

    def result(self, interrupted: bool = False) -> RunResult:
        return RunResult(frames=self.written, seconds=time.perf_counter() - self._start, interrupted=interrupted,
                         dropped=self.stats.dropped, reconnects=getattr(self.source, "reconnects", 0),
                         corrupt=getattr(self.source, "corrupt", 0))


def _frame_bytes(item: av.VideoFrame | av.Packet) -> int:
    """The memory a waiting frame holds (a packet of sound: nothing that counts)."""
    return sum(plane.buffer_size for plane in item.planes) if isinstance(item, av.VideoFrame) else 0


class Scheduler:
    """Serves the streams of one engine (``run`` in one thread or several, or ``step`` by step).

    On a GPU one thread keeps up to ``engine.depth`` calls in flight. On a CPU the engine works on return, and
    several threads may run ``run`` at once, each making its own model calls (the model's operators use one core
    each, which smaller batches on two threads use better than one thread with two cores); a stream is in one
    call at a time, so its frames still go through in order, and its temporal state with them.
    """

    def __init__(self, engine: Engine, max_frames: int = 64, threads: int = 1) -> None:
        """``max_frames``: the most frames of all streams together in one engine call; ``threads``: how many run
        it (each call then takes at most its share of the streams, so that the others' calls overlap it)."""
        self.engine, self.max_frames, self.threads = engine, max_frames, threads
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._streams: list[Stream] = []
        self._in_flight: deque[list[tuple[Stream, Batch]]] = deque()  # GPU engine calls, oldest first
        self._busy: set[int] = set()  # CPU: the streams in a call being made by one of the threads
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
        picked = self._pick()
        if picked:
            try:
                batches = self.engine.submit_many([stream.request(frames) for stream, frames in picked])
                call = [(stream, batch) for (stream, _), batch in zip(picked, batches)]
                if self.engine.depth == 0:
                    self._deliver(call)  # done on return: its frames go to the writers from this thread
                else:
                    self._in_flight.append(call)
            except Exception as exc:
                for stream, _ in picked:
                    stream.fail(exc)
            finally:
                with self._lock:
                    self._busy.difference_update(id(stream) for stream, _ in picked)
            while self._in_flight and (len(self._in_flight) > self.engine.depth or self._in_flight[0][0][1].ready()):
                self._deliver(self._in_flight.popleft())
        elif self._in_flight:
            self._deliver(self._in_flight.popleft())  # nothing new: finish the oldest call
        else:
            self._wake.wait(_IDLE_WAIT_S)
        self._retire()

    def _pick(self) -> list[tuple[Stream, list[av.VideoFrame]]]:
        """What the streams not in another thread's call have ready, up to ``max_frames`` together."""
        picked: list[tuple[Stream, list[av.VideoFrame]]] = []
        with self._lock:
            streams = [s for s in self._streams if id(s) not in self._busy]
            if streams:  # a different stream goes first each round: when calls are full, none always misses out
                first = next(self._turn) % len(streams)
                streams = streams[first:] + streams[:first]
            total, share = 0, -(-len(self._streams) // self.threads)
            for stream in streams:
                if total >= self.max_frames or len(picked) >= share:
                    break
                try:
                    frames = stream.take()
                except Exception as exc:  # its source failed
                    stream.fail(exc)
                    continue
                if frames:
                    picked.append((stream, frames))
                    total += len(frames)
            if self.engine.depth == 0:
                self._busy.update(id(stream) for stream, _ in picked)
        return picked

    def abandon(self) -> None:
        """Forget the calls in flight (a second Ctrl-C: their frames are not written)."""
        for call in self._in_flight:
            for stream, batch in call:
                stream._in_engine -= len(batch)
                stream.stopped = True
        self._in_flight.clear()
        self._retire()

    def _deliver(self, call: list[tuple[Stream, Batch]]) -> None:
        for stream, batch in call:
            try:
                batch.wait()
            except Exception as exc:  # the engine failed on this call
                stream._in_engine -= len(batch)
                stream.fail(exc)
                continue
            try:
                stream.deliver(batch)
            except Exception as exc:  # its writer failed
                stream.fail(exc)

    def _retire(self) -> None:
        with self._lock:
            busy = self._busy | {id(stream) for call in self._in_flight for stream, _ in call}
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
    with deferred_signals() as run_handlers:
        return stream.finish(drive(stream, engine, run_handlers), run_handlers)


def drive(stream: Stream, engine: Engine, run_handlers: Callable[[], None]) -> bool:
    """Run one stream through ``engine`` with the scheduler in the calling thread, until nothing of it is left in
    the engine; the caller then finishes it (``Stream.finish``, with the same ``run_handlers``). Returns whether it
    was interrupted. Call both inside one ``deferred_signals()``, whose ``run_handlers`` this is: a Ctrl-C from the
    first frame to the output's last byte is then taken only where one of them handles it.

    Ctrl-C (KeyboardInterrupt) stops reading and lets the frames already in the engine through, so the output is
    complete and playable up to there; a second Ctrl-C skips those too, and those the writer has not begun. Any
    other failure stops the stream, keeps what was written as far as it can be (``sink.abort``) and is raised.
    """
    scheduler = Scheduler(engine)
    scheduler.add(stream)
    interrupted = False
    try:
        while not stream.drained.is_set():
            try:
                run_handlers()  # a signal's handler (KeyboardInterrupt) runs here, between two steps (0.1 s apart at
                # most when idle)
                scheduler.step()
            except KeyboardInterrupt:
                if interrupted or stream.writer.failure is not None:  # (a second Ctrl-C; a callback's: see finish)
                    scheduler.abandon()
                    stream.drop_unwritten()
                interrupted = True
                stream.stop(cut=True)
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
        # (also after a failure: one while a signal waits is most likely its doing, since Ctrl-C, timeout(1) and
        # service managers signal the whole process group, and a child, torch.compile's C++ compiler, dies of it
        # first. It ends as the signal.)
        run_handlers()


@contextlib.contextmanager
def stopping() -> Iterator[None]:
    """Where a run, stopped, finishes (a fleet's streams their outputs, a batch its summary): a second Ctrl-C or
    SIGTERM (pressed twice, a service manager's repeat) lets it finish. It ended the stop half-way, as
    "interrupted" (exit 130), with no summary and no last statistics line. (SIGKILL still ends it. The handler does
    nothing: the thread it interrupts may hold any lock.) Outside the main thread this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # (a handler set outside Python reads as None, and cannot be put back: it is left alone, as an ignored one is)
    taken = [sig for sig, handler in previous.items() if handler not in (signal.SIG_IGN, None)]
    for sig in taken:
        signal.signal(sig, lambda signum, frame: None)
    try:
        yield
    finally:
        for sig in taken:
            signal.signal(sig, previous[sig])

"""Publishing to a server (RTSP, RTMP, SRT, UDP, ...) that may restart, hang, or not be up yet.

A server that goes away ("Broken pipe", "Connection refused") or takes no data for ``WRITE_TIMEOUT`` s (hung, or a
network that drops everything: FFmpeg's muxers would wait for it for ever, through every signal) is dialled again
with backoff (0.5 s doubling to 10 s; ``attempts`` for each outage, the camera's ``--reconnect``) while the run goes
on: a live run keeps reading its camera, and the other streams of a fleet are not held. Frames that come during an
outage are not published (they would be late); publishing resumes with a keyframe, each connection having a muxer
and an encoder of its own, on the same timeline. A server that is not up yet at the start is waited for the same way.

Every FFmpeg call on a connection runs in that connection's own thread and is waited for at most ``WRITE_TIMEOUT``
s, so a hung server does not hold the run. A connection whose write is stuck is waited for as a dial is, and no new
dial starts until its call returns (so one stuck connection at most); if it returns having written (a server that
was paused), that connection goes on, and the outage ends with its next write that succeeds (a hung server that is
killed lets the stuck write return, and fails the next: one outage, not two). A paused server's kernel may take a
little more now and then, letting a stuck write return before the server runs again: a next write stuck in turn is
the same stall, waited for on the same connection as the same attempt. The exception is the dial itself: PyAV holds
the GIL while FFmpeg dials, so the whole process waits for it. The RTSP dial is bounded by its socket timeout
(``DIAL_TIMEOUT``, 5 s); RTMP's has none, so an RTMP server that accepts connections but never answers holds the
process. A file is published with no reconnection (``attempts`` 0): its frames are never dropped, so a file run
fails, with one line, when its server goes away or hangs.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import av

from .colour import YUVFormat
from .errors import MediaError, StreamDehazeError, UsageError
from .sinks import WRITE_TIMEOUT, VideoSink

log = logging.getLogger("streamdehaze")

BACKOFF_START, BACKOFF_MAX = 0.5, 10.0


class _Hung(Exception):
    """A call on a connection did not return within its time."""


class _Call:
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn, self.value, self.error = fn, None, None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as exc:  # handed to the caller
            self.error = exc
        finally:
            self.fn = None  # (it may hold its connection: no cycle keeps a dropped one's encoder alive)
            self.done.set()

    def result(self, timeout: float) -> Any:
        if not self.done.wait(timeout):
            raise _Hung
        if self.error is not None:
            raise self.error
        return self.value


class _Connection:
    """One connection to the server: its sink, opened and dialled on the connection's own thread (``ready``, named
    ``thread``), and every later call on it made there, in order."""

    def __init__(self, open_sink: Callable[[], VideoSink], thread: str) -> None:
        self.sink: VideoSink | None = None
        self.started = time.monotonic()
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, name=thread, daemon=True).start()
        self.ready = self.submit(lambda: self._open(open_sink))

    def _open(self, open_sink: Callable[[], VideoSink]) -> None:
        self.sink = open_sink()
        try:
            self.sink.connect()
        except BaseException:
            self.sink.abort()
            raise

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            call.run()

    def submit(self, fn: Callable[[], Any]) -> _Call:
        call = _Call(fn)
        self._calls.put(call)
        return call

    def call(self, fn: Callable[[], Any]) -> Any:
        return self.submit(fn).result(WRITE_TIMEOUT)

    def drop(self) -> None:
        """Finish what it sent as far as the server still takes it, then ``end``."""
        self.submit(lambda: self.sink is not None and self.sink.abort())
        self.end()

    def end(self) -> None:
        """End its thread once the calls made are done (a stuck one first returns, or never)."""
        self._calls.put(None)


class _Outage:
    def __init__(self, reason: str, unsent: int, first: bool = False) -> None:
        self.reason, self.first, self.since = reason, first, time.monotonic()
        self.unsent_before = unsent  # the sink's count when it began
        self.attempts, self.delay, self.next_try = 0, 0.0, self.since
        self.dial: _Connection | None = None
        self.dial_timed_out = False
        self.stuck = False  # its dial is a connection whose write got stuck, not a new one


class PublishedSink:
    """A ``VideoSink`` on a server's URL, dialled again when it is lost (see the module's notes). ``open_sink()``
    makes a new, unconnected sink for each connection. ``stream``: the name of the stream it publishes, which
    its connections' threads are named after (``publish NAME``: a fleet labels their log lines with it)."""

    def __init__(self, open_sink: Callable[[], VideoSink], name: str, pix_fmt: str, yuv_format: YUVFormat,
                 attempts: float = math.inf, stream: str = "") -> None:
        self.name, self.pix_fmt, self.yuv_format, self.attempts = name, pix_fmt, yuv_format, attempts
        self._open_sink = open_sink
        self._thread = f"publish {stream}".strip()
        self.unsent = 0  # frames that came while it was down
        self.reconnects = 0
        self._conn: _Connection | None = None
        self._outage: _Outage | None = _Outage("", 0, first=True)  # the first connection: dialled as a reconnection is

    def write(self, item: av.VideoFrame | av.Packet) -> None:
        if self._conn is None:
            outage = self._outage
            if outage.first and not outage.reason and not outage.dial_timed_out:
                # The first dial, from the writer (where a signal finds the run in its loop); no frame is lost to it.
                if outage.dial is None:
                    outage.dial = _Connection(self._open_sink, self._thread)
                outage.dial.ready.done.wait(WRITE_TIMEOUT)
            self._redial()
        conn = self._conn
        if conn is None:
            self.unsent += isinstance(item, av.VideoFrame)
            return
        call = conn.submit(lambda: conn.sink.write(item))
        try:
            call.result(WRITE_TIMEOUT)
        except _Hung:
            self._hung(conn, call)
        except StreamDehazeError as exc:
            self._lose(_reason(exc), str(exc))
        else:
            if self._outage is not None:  # a connection taken back after a stuck write: this write confirms it
                self._resumed(self._outage)
            return
        self.unsent += isinstance(item, av.VideoFrame)

    def _hung(self, conn: _Connection, call: _Call) -> None:
        """A write not back within WRITE_TIMEOUT. The connection is then waited for as a dial is (a server that was
        paused takes data again), and no other is dialled until it returns: one stuck connection at most."""
        self._conn = None
        reason = f"has taken no data for {WRITE_TIMEOUT:g} s"
        if self.attempts <= 0:
            conn.drop()
            raise MediaError(f"{self.name} {reason}: gave up on it")
        conn.ready = call
        if self._outage is not None:
            # Taken back after a stuck write, and stuck again before any write got through: the same stall. A
            # paused server's kernel may take a little more now and then (the sender's buffer grows), which lets a
            # stuck write return with the server still paused. The same connection is waited for again, as the
            # same attempt and from when it first got stuck: nothing dialled, no attempt counted, nothing said.
            self._outage.dial, self._outage.stuck = conn, True
            return
        outage = self._outage = _Outage(reason, self.unsent)
        outage.attempts = 1
        outage.dial, outage.stuck = conn, True
        conn.started = time.monotonic()
        log.warning("%s: %s; reconnecting (attempt 1)", self.name, reason)

    def _lose(self, reason: str, message: str) -> None:
        """The connection failed (``message``: the error when no reconnection is allowed)."""
        conn, self._conn = self._conn, None
        conn.drop()
        if self.attempts <= 0:
            raise MediaError(message)
        if self._outage is None:
            self._outage = _Outage(reason, self.unsent)
        else:  # taken back after a stuck write, and lost at once (a hung server killed): the same outage goes on
            self._outage.stuck = False
            self._failed(self._outage, reason, time.monotonic())
        self._redial()

    def _redial(self) -> None:
        """Move the outage on: take up a dial that answered, note one that failed or hangs, start the next on time."""
        outage, now = self._outage, time.monotonic()
        dial = outage.dial
        if dial is not None:
            if not dial.ready.done.is_set():
                if not outage.dial_timed_out and now - dial.started >= WRITE_TIMEOUT:
                    outage.dial_timed_out = True  # a failed attempt; the next waits until this one returns
                    self._failed(outage, f"no answer for {WRITE_TIMEOUT:g} s", now)
                return
            try:
                dial.ready.result(0)
            except UsageError:  # (no retry mends it: a protocol this FFmpeg lacks)
                dial.drop()
                raise
            except StreamDehazeError as exc:
                dial.drop()
                outage.dial = None
                if not outage.dial_timed_out:
                    self._failed(outage, _reason(exc), now)
                outage.dial_timed_out = False
                return
            self._conn, outage.dial = dial, None
            if not outage.stuck:
                self._resumed(outage)
            # A stuck write that returned: the server was paused, or is going away (killed as it hung). The outage
            # ends with the next write that succeeds.
            return
        if now < outage.next_try:
            return
        outage.attempts += 1
        log.warning("%s: %s; reconnecting (attempt %d)", self.name, outage.reason, outage.attempts)
        # (a new dial: whether the one before, a stuck connection taken back and lost, timed out is no matter)
        outage.dial, outage.stuck, outage.dial_timed_out = _Connection(self._open_sink, self._thread), False, False

    def _resumed(self, outage: _Outage) -> None:
        self._outage = None
        unsent, took = self.unsent - outage.unsent_before, time.monotonic() - outage.since
        if outage.first:
            if outage.reason:  # (one that answered at once needs no message)
                log.warning("%s: publishing after %.1f s waiting for the server (%d frames not published)",
                            self.name, took, unsent)
        else:
            self.reconnects += 1
            log.warning("%s: publishing again after %.1f s (%d frames not published; reconnect %d)", self.name,
                        took, unsent, self.reconnects)

    def _failed(self, outage: _Outage, reason: str, now: float) -> None:
        if outage.first and self.attempts <= 0:  # no reconnects allowed
            raise MediaError(f"cannot write {self.name}: {reason}")
        outage.reason = reason
        outage.delay = min(max(2 * outage.delay, BACKOFF_START), BACKOFF_MAX)
        outage.next_try = now + outage.delay
        if outage.attempts >= self.attempts:
            raise MediaError(f"cannot write {self.name}: {reason}; no reconnects left" if outage.first
                             else f"{self.name} lost ({reason}); no reconnects left")

    def close(self) -> None:
        """Flush and end the stream on the server. A camera's run that ends during an outage, or as its server goes,
        ends without it (said in the log); a file's fails."""
        if self._conn is None:
            if self._outage.dial is not None:
                self._outage.dial.drop()
            if self._outage.reason or self.unsent:
                log.warning("%s was down at the end (%d frames not published)", self.name, self.unsent)
            return
        conn, self._conn = self._conn, None
        try:
            conn.call(conn.sink.close)
            if self._outage is not None:  # taken back after a stuck write, and the server took the rest
                self._resumed(self._outage)
        except (_Hung, StreamDehazeError) as exc:
            hung = isinstance(exc, _Hung)
            if self.attempts <= 0:
                raise MediaError(f"{self.name} has taken no data for {WRITE_TIMEOUT:g} s: gave up on it" if hung
                                 else str(exc)) from None
            log.warning("%s was lost at the end (%s)", self.name,
                        f"no data taken for {WRITE_TIMEOUT:g} s" if hung else _reason(exc))
        finally:
            conn.end()

    def abort(self) -> None:
        for conn in (self._conn, self._outage and self._outage.dial):
            if conn is not None:
                conn.drop()
        self._conn = None


def _reason(exc: BaseException) -> str:
    """The reason a sink's error gives, without its ``writing X failed:`` framing."""
    message = str(exc)
    return message.rsplit(": ", 1)[-1] if ": " in message else message

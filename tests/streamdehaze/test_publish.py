"""Publishing's outages with a server of our own (``PublishedSink`` on fake connections, its time limit shortened):
what the live RTSP tests show with a real server, where the kernel decides when a paused server takes data."""

from __future__ import annotations

import threading
import time

import av
import pytest

from streamdehaze import publish
from streamdehaze.errors import MediaError

WRITE_TIMEOUT = 0.3  # (10 s in use)


class Server:
    """A server to publish to: ``running`` takes every write; paused, a write waits until it runs again, or until
    ``dribble`` lets that one write through (a paused server's kernel that takes a little more, now and then)."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.running.set()
        self._dribbles = threading.Semaphore(0)
        self.connections: list[Connection] = []
        self.written = threading.Semaphore(0)  # one release for each write that returned

    def dribble(self) -> None:
        self._dribbles.release()

    def sink(self) -> Connection:
        self.connections.append(Connection(self))
        return self.connections[-1]


class Connection:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.lost = False  # its writes fail from now on (the server went away)

    def connect(self) -> None:
        if not self.server.running.is_set():
            raise MediaError("cannot write srv: Connection refused")

    def write(self, item: av.VideoFrame) -> None:
        if self.lost:
            raise MediaError("writing srv failed: Broken pipe")
        while not self.server.running.is_set() and not self.server._dribbles.acquire(timeout=0.005):
            continue
        self.server.written.release()

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(publish, "WRITE_TIMEOUT", WRITE_TIMEOUT)
    monkeypatch.setattr(publish, "BACKOFF_START", 0.05)
    return Server()


def _frame() -> av.VideoFrame:
    return av.VideoFrame(16, 16, "yuv420p")


def _write_for(sink: publish.PublishedSink, seconds: float) -> None:
    """A camera's frames, every 10 ms, for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sink.write(_frame())
        time.sleep(0.01)


def _published(server: Server, attempts: float = float("inf")) -> publish.PublishedSink:
    """A sink that has published its first frame, to a server then paused."""
    sink = publish.PublishedSink(server.sink, "srv", "yuv420p", None, attempts=attempts)
    sink.write(_frame())
    assert server.written.acquire(timeout=5)
    server.running.clear()
    return sink


def _resumed(sink: publish.PublishedSink) -> None:
    """Frames until the outage ends (5 s at most)."""
    deadline = time.monotonic() + 5
    while sink.reconnects == 0 and time.monotonic() < deadline:
        sink.write(_frame())
        time.sleep(0.01)


def test_a_paused_server_whose_kernel_takes_a_little_is_one_attempt_on_one_connection(server, caplog):
    """A paused server may take a little more now and then (its kernel's buffers), letting a stuck write return
    before it runs again: the next write that gets stuck is the same stall, waited for on the same connection as
    the same attempt: nothing dialled, no attempt counted (``--reconnect 2`` is not used up), nothing more said."""
    sink = _published(server, attempts=2)
    sink.write(_frame())  # stuck: waited for as a dial is
    assert "srv: has taken no data for 0.3 s; reconnecting (attempt 1)" in caplog.text
    for _ in range(3):  # taken back after what got through, and stuck again each time
        server.dribble()
        assert server.written.acquire(timeout=5)
        _write_for(sink, 2.5 * WRITE_TIMEOUT)  # (long enough for the next write to get stuck, and a dial to be due)
    assert len(server.connections) == 1 and "attempt 2" not in caplog.text, caplog.text
    server.running.set()  # and runs again
    _resumed(sink)
    assert sink.reconnects == 1 and len(server.connections) == 1, caplog.text
    assert "attempt 2" not in caplog.text and caplog.text.count("publishing again after") == 1, caplog.text
    sink.close()


def test_a_server_lost_after_its_stuck_write_returned_is_dialled_again(server, caplog):
    """A stuck write that returns, and the next write fails (a hung server killed): the same outage, and a new
    connection is dialled."""
    sink = _published(server)
    sink.write(_frame())  # stuck
    server.connections[0].lost = True
    server.dribble()
    assert server.written.acquire(timeout=5)
    server.running.set()  # (a new connection is answered)
    _resumed(sink)
    assert sink.reconnects == 1 and len(server.connections) == 2, caplog.text
    assert "srv: Broken pipe; reconnecting (attempt 2)" in caplog.text, caplog.text
    sink.close()


def test_a_dial_after_a_stuck_connection_is_counted(server, caplog):
    """The stuck connection's attempt timed out, came back and was lost: the new dial that fails is an attempt of
    its own, counted against ``--reconnect`` (and backed off from)."""
    sink = _published(server, attempts=2)
    sink.write(_frame())  # stuck: attempt 1
    _write_for(sink, 1.5 * WRITE_TIMEOUT)  # (and noted as timed out)
    server.connections[0].lost = True
    server.dribble()  # it comes back, and fails the next write; the server refuses the new dial
    assert server.written.acquire(timeout=5)
    with pytest.raises(MediaError, match="srv lost .*; no reconnects left"):
        _write_for(sink, 5)
    assert "attempt 3" not in caplog.text, caplog.text

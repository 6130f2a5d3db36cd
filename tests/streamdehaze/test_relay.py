"""The relay that hands standard input or a named pipe to FFmpeg (``relay.py``)."""

from __future__ import annotations

import os
import threading
import time

from streamdehaze.relay import PipeRelay


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def test_what_the_pipe_gives_is_passed_on_whole_then_its_end():
    read, write = os.pipe()
    relay = PipeRelay(read)
    data = os.urandom(3 << 20)  # (more than the pipes hold: the relay waits for its reader)
    feeder = threading.Thread(target=lambda: (os.write(write, data), os.close(write)))
    feeder.start()
    try:
        assert _read_all(int(relay.url.removeprefix("pipe:"))) == data
    finally:
        feeder.join(10)
        relay.close()
        os.close(read)


def test_a_stop_ends_the_input_of_a_silent_pipe_and_leaves_the_caller_s_event_alone():
    # (the event is the caller's: a serve stream's own stop, which the relay's end set, read as "stopped")
    read, write = os.pipe()
    os.write(write, b"first bytes")
    caller, untouched = threading.Event(), threading.Event()
    relay = PipeRelay(read, untouched)
    out = int(relay.url.removeprefix("pipe:"))
    try:
        assert os.read(out, 100) == b"first bytes"
        began = time.monotonic()
        relay.end()  # the writer keeps its end open and sends nothing
        assert os.read(out, 100) == b"" and time.monotonic() - began < 1
        stopped = PipeRelay(read, caller)
        caller.set()
        assert os.read(int(stopped.url.removeprefix("pipe:")), 100) == b""  # (the caller's event stops it too)
        stopped.close()
        relay.close()
        relay.close()  # (twice: nothing more)
        assert not untouched.is_set()
    finally:
        os.close(write)
        os.close(read)

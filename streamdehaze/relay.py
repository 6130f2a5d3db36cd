"""Standard input, or a named pipe, handed to FFmpeg through a pipe of our own, so that a run reading it can always
be stopped.

FFmpeg's read of a pipe cannot be interrupted. Where the program writing it keeps it open and sends nothing (a
feeder stalled on a frozen camera, outside the process group that Ctrl-C reaches), a run waited for it for ever, at
start-up or as it ended, and a service manager's kill then lost its whole output. A relay thread waits on the pipe
a little at a time and passes on what comes; stopping it gives FFmpeg the end of its input at once, whatever the
writer does.
"""

from __future__ import annotations

import os
import select
import stat
import threading

_WAIT_S = 0.1  # the relay's longest wait before it looks whether it is stopped
_CHUNK = 1 << 20


def is_pipe(name: str | os.PathLike) -> bool:
    """Whether ``name`` is a named pipe (mkfifo)."""
    try:
        return stat.S_ISFIFO(os.stat(name).st_mode)
    except (OSError, ValueError):
        return False


class PipeRelay:
    """What ``source`` gives (standard input's file descriptor, or a named pipe's name: opened here, without
    waiting for its writer, and closed when the relay ends), passed on to ``url``, FFmpeg's name for the relay's
    own pipe, until ``source`` ends or ``stop`` is set (or ``end()``); then ``url``'s reader meets the end of its
    input once it has read what was passed on (within ``_WAIT_S`` seconds where it waits for more). A closed
    ``source`` is an ``OSError``. POSIX only (``select`` on a pipe)."""

    def __init__(self, source: int | os.PathLike, stop: threading.Event | None = None) -> None:
        # (a named pipe opened without O_NONBLOCK waits for a writer, where nothing could stop it; until one comes,
        # select finds nothing to read, and after it goes, the end)
        self._owned = not isinstance(source, int)
        if not self._owned:
            os.fstat(source)  # (closed, its number would go to the pipe below: the relay would read its own output)
        self._source = source if isinstance(source, int) else os.open(source, os.O_RDONLY | os.O_NONBLOCK)
        self._ended, self._stop, self._closed = threading.Event(), stop, False  # (``stop`` is the caller's: only read)
        self._out, self._into = os.pipe()
        self.url = f"pipe:{self._out}"
        self._thread = threading.Thread(target=self._run, name="pipe relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping():
                if not select.select([self._source], [], [], _WAIT_S)[0] or self._stopping():
                    continue
                data = os.read(self._source, _CHUNK)
                if not data:
                    return
                rest = memoryview(data)
                while rest and not self._stopping():  # (waits while the reader is busy: backpressure)
                    rest = rest[os.write(self._into, rest):]
        except OSError:  # (the reader let go of its end; the source failed: an end too)
            pass
        finally:
            os.close(self._into)
            if self._owned:
                os.close(self._source)

    def _stopping(self) -> bool:
        return self._ended.is_set() or self._stop is not None and self._stop.is_set()

    def end(self) -> None:
        """Pass on nothing more: the reader meets the end of its input (what it had not read yet is dropped)."""
        self._ended.set()

    def close(self) -> None:
        """Once the reader is done with ``url``: ends the relay, closes the relay's pipe, and waits for its thread
        to end (a second at most), after which it reads nothing more of ``source``."""
        if self._closed:
            return
        self._closed = True
        self.end()
        os.close(self._out)  # (a write the relay was blocked in fails: it ends)
        self._thread.join(10 * _WAIT_S)

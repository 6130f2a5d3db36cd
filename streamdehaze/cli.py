"""``streamdehaze INPUT OUTPUT``: dehaze a video, an image or a folder of images.

Exit codes: 0 done, 1 runtime failure (corrupt input, write failure), 2 usage error, 130 interrupted. This module
is the entry point and stays light: torch and PyAV load inside ``main()`` (``command.py``), so that Ctrl-C,
SIGTERM or SIGHUP at any moment, start-up included, ends with one line and 130, never a traceback. While they
load, an interrupt ends the process at once: a library loading may swallow a KeyboardInterrupt (or turn it into
an exit by signal), and nothing has been written yet. To ``serve``, SIGHUP is a reload instead, from the start.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
import warnings
from typing import TextIO

from .credentials import mask
from .errors import StreamDehazeError
from .options import parse_command

log = logging.getLogger("streamdehaze")

# Ctrl-C, a kill, a closed terminal: each stops a run the same way (one ignored at start, as under nohup, stays so).
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main(argv: list[str] | None = None, *, leave: object = None) -> int:
    """The command line; ``leave``: the handler Ctrl-C, SIGTERM and SIGHUP have once it returns (None: those it
    found, as a program that embeds it expects)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    stderr = sys.stderr
    if stderr is None:  # started with standard error closed (2>&-, some service managers)
        _fill_closed_descriptors()
    sys.stderr = _Messages(stderr)
    previous = {sig: signal.getsignal(sig) for sig in _INTERRUPTS}  # restored: main() may be embedded
    shown = warnings.showwarning
    warnings.showwarning = _warning_line
    serving = argv[:1] == ["serve"]
    # Log lines on standard error, unless the program that embeds main() has its own handlers; as found on return.
    root, masking, ours = logging.getLogger(), _MaskCredentials(argv), None
    level, own_level = root.level, logging.getLogger("streamdehaze").level  # (--quiet sets the latter)
    reloads: list[int] = []  # SIGHUPs that reached `serve` while it loaded: it applies them once its streams run
    try:
        _on_interrupt(_exit_now)
        if serving:  # (a service manager may reload right after starting it)
            _on_interrupt(lambda signum, frame: reloads.append(signum), (signal.SIGHUP,))
        if not root.handlers:
            ours = logging.StreamHandler()
            ours.setFormatter(logging.Formatter("streamdehaze: %(message)s"))
            root.addHandler(ours)
            root.setLevel(logging.INFO)
        for handler in root.handlers:
            handler.addFilter(masking)
        if "torch" not in sys.modules:  # this is the command line's own process: see tuning.py
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 (--codec libsvtav1) prints 20 lines of banner otherwise
        which, args = parse_command(argv)  # before the heavy imports: --help and usage errors answer at once
        from .command import run  # torch, PyAV, OpenCV: seconds
        _on_interrupt(_raise_interrupt, (signal.SIGINT, signal.SIGTERM) if serving else _INTERRUPTS)
        return run(which, args, reloads)
    except StreamDehazeError as exc:
        print(f"streamdehaze: error: {mask(str(exc), *argv)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("streamdehaze: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, with a way to see the traceback
        if os.environ.get("STREAMDEHAZE_DEBUG"):
            raise
        lines = str(exc).strip().splitlines() or [""]  # (torch.compile's: the compiler's command and all it printed)
        said = lines[0] + (f" ... ({len(lines) - 1} more lines)" if len(lines) > 1 else "")
        print(f"streamdehaze: internal error: {type(exc).__name__}: {mask(said, *argv)} "
              "(set STREAMDEHAZE_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
    finally:
        for handler in root.handlers:
            handler.removeFilter(masking)
        if ours is not None:
            root.removeHandler(ours)
            root.setLevel(level)
        logging.getLogger("streamdehaze").setLevel(own_level)
        warnings.showwarning = shown
        for sig, handler in previous.items():
            if leave is not None or handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler if leave is None else leave)
        sys.stderr = stderr


def entry() -> None:
    """The console script (and ``python -m streamdehaze``): ``main()``, then the process ends with its status. The
    interpreter takes most of a second to shut down after a run (its threads, torch), and puts the default
    handlers back early in it: a second Ctrl-C or SIGTERM then (pressed twice, a service manager's reload during
    a stop) killed the process with 129-143. The run is over: they are ignored from here on (SIGKILL still ends
    it), and the process ends with the run's status.

    A camera still being dialled when the run ends (a silent one: FFmpeg waits out its connect timeout, and cannot
    be stopped from outside) leaves a thread inside FFmpeg, which the interpreter's shutdown pulls out mid-call: the
    process could end by a segmentation fault after the run had ended well. With such a thread left, the process
    ends at once, its messages written, without that shutdown."""
    code = main(leave=signal.SIG_IGN)  # (with no moment of the default handlers between the run and its end)
    if any(t.daemon and t.is_alive() for t in threading.enumerate()):
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # (closed, a pipe whose reader is gone)
                stream.flush()
        os._exit(code)
    sys.exit(code)


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """A library's warning as one line of the run's messages, not its source file and line of code. Pillow's
    decompression-bomb warning is no one's business here: a photo of 90 to 180 megapixels is read as any other."""
    if category.__name__ != "DecompressionBombWarning":
        print(f"streamdehaze: warning: {message}", file=file or sys.stderr)


def _fill_closed_descriptors() -> None:
    """Open the null device on standard input, output or error where it is closed: otherwise the next file opened
    (the output) takes its number, and whatever FFmpeg or x264 writes to standard error lands in the video."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            if os.open(os.devnull, os.O_RDWR) != fd:
                raise RuntimeError(f"file descriptor {fd} is closed and could not be reopened")


class _Messages(io.TextIOBase):
    """Standard error for the run's messages. Where it is closed, or its reader has gone (``2>&1 | head -1``), the
    messages are lost and the run goes on: it ended as an internal error (exit 1, its output whole)."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        if self._stream is not None:
            try:
                self._stream.write(text)
            except (BrokenPipeError, ValueError):  # (ValueError: a file closed)
                self._stream = None
        return len(text)

    def flush(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                self._stream = None

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    def fileno(self) -> int:
        if self._stream is None:
            raise io.UnsupportedOperation("standard error is closed")
        return self._stream.fileno()


class _MaskCredentials(logging.Filter):
    """No log line shows a URL's user:password, whatever characters the password holds."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__()
        self.urls = urls

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask(record.getMessage(), *self.urls), None
        return True


def _on_interrupt(handler: object, signals: tuple[int, ...] = _INTERRUPTS) -> None:
    for sig in signals:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)


def _exit_now(signum: int, frame: object) -> None:
    print("streamdehaze: interrupted", file=sys.stderr, flush=True)
    os._exit(130)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

"""Errors a user can cause, each with the exit code the CLI returns for it."""

from __future__ import annotations


class StreamDehazeError(Exception):
    """A failure explained in one line, shown without a traceback."""

    exit_code = 1


class UsageError(StreamDehazeError):
    """Bad arguments or unusable paths, found before any work starts (exit 2). ``key``: the option at fault, where
    known (``config.keyed``), so that a configuration's error can name it."""

    exit_code = 2
    key: str | None = None


class MediaError(StreamDehazeError):
    """The input could not be read or decoded, or the output could not be written (exit 1)."""

    exit_code = 1


class Truncated(MediaError):
    """An input that ends early: its output is written, and holds the ``frames`` decoded before the cut (exit 1)."""

    def __init__(self, message: str, frames: int) -> None:
        super().__init__(message)
        self.frames = frames

"""Errors a user can cause, each with the exit code the CLI returns for it."""

from __future__ import annotations


class StreamDehazeError(Exception):
    """A failure explained in one line, shown without a traceback."""

    exit_code = 1


class UsageError(StreamDehazeError):
    """Bad arguments or unusable paths, found before any work starts (exit 2)."""

    exit_code = 2


class MediaError(StreamDehazeError):
    """The input could not be read or decoded, or the output could not be written (exit 1)."""

    exit_code = 1

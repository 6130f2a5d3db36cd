"""Shared command-line plumbing: one clear line on stderr and a non-zero exit for bad input, never a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["UsageError", "run_main", "atomic_path"]


class UsageError(Exception):
    """Bad input from the user (missing file, bad key, bad value): reported as one line, exit status 2."""


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` and turn user errors into one stderr line and an exit status."""
    try:
        return main(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # the training diverged: a setting to change, not a bug
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # unreadable/unwritable paths: name the path, not the stack
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def atomic_path(path: Path) -> Path:
    """A temporary sibling of ``path`` (same folder and suffix) to write to before ``os.replace``."""
    return path.with_name(f"{path.stem}.tmp.{os.getpid()}{path.suffix}")

"""Outputs are written under a temporary name in the target folder and renamed into place when complete."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError


def check_output(target: Path, inputs: Path | None = None) -> None:
    """Refuse an output that would overwrite the input or cannot be created."""
    if inputs is not None and inputs.exists():
        if target.resolve() == inputs.resolve() or (target.exists() and os.path.samefile(target, inputs)):
            raise UsageError(f"output {target} is the input: refusing to overwrite it")
    if target.is_dir():
        raise UsageError(f"output {target} is a folder; give a file name")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"output folder does not exist: {parent}")


@contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it to ``target`` on success, delete it on failure."""
    tmp = target.with_name(f".{target.stem}.partial-{os.getpid()}{target.suffix}")
    try:
        tmp.touch()
    except OSError as exc:
        raise UsageError(f"cannot write to {target.parent or '.'}: {exc.strerror}") from None
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)

"""Where outputs go, so that a failure or a kill never costs a good file.

File runs are all or nothing. The output is written to an anonymous file in the target's folder (Linux
``O_TMPFILE``: if the process is killed or the power fails, the kernel frees it and nothing is left) and linked to
the target name only once complete. An interrupted run links what it finished as ``NAME.partial.EXT`` (an earlier
one's moved aside to ``NAME.partial.N.EXT``, as recordings are) and leaves the target as it was. Where the
filesystem has no anonymous files, the output is a hidden ``.NAME.partial-PID.EXT`` locked by its writer; the next
run to the same output removes those whose writer is gone, and says so.

Live recordings are written straight to their target as they come (``sinks.py``), held under a lock, and never
replace an earlier recording: a file already at the target is moved aside to ``NAME.N.EXT`` (N one more than the
highest there), unless another run is recording it (then the run is refused); segments continue after the highest
number already in the folder, and are created exclusively, so two runs recording to the same names take turns.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import io
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from .errors import MediaError, UsageError
from .formats import timed_segments

log = logging.getLogger("streamdehaze")

# Filesystems without anonymous files answer O_TMPFILE with one of these (EISDIR: kernels before 3.11).
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
T = TypeVar("T")


def check_output(target: Path, inputs: Path | None = None) -> None:
    """Refuse an output that would overwrite the input or cannot be created."""
    longest, most = len(os.fsencode(_hidden_partial(target).name)), _name_max(target.parent)
    if longest > most:  # (found now, not when the finished file is named)
        raise UsageError(f"output name too long: a run writes {target.name} as .NAME.partial-PID.EXT until it is "
                         f"complete, and this folder takes names of at most {most} bytes: "
                         f"shorten it by {longest - most}")
    if inputs is not None and inputs.exists():
        if _same_file(target, inputs):
            raise UsageError(f"output {target} is the input: refusing to overwrite it")
        # a run to the target removes its partials when complete, or writes one (moving the last aside) when interrupted
        if any(_same_file(partial, inputs) for partial in [partial_name(target), *_partials(target)]):
            raise UsageError(f"input {inputs} is where a run to {target.name} would keep its frames if interrupted "
                             f"(and which a complete one removes): name the output otherwise")
    if target.is_dir():
        raise UsageError(f"output {target} is a folder; give a file name")
    if target.exists() and not target.is_file():  # (a file is written whole, then named: it would replace a pipe)
        raise UsageError(f"output {target} is a named pipe or a device, not a file; to write into a pipe, give - "
                         "and redirect standard output")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"output folder does not exist: {parent}")


def remove_empty_folders(root: Path) -> None:
    """Remove the folders under ``root``, and ``root``, that hold nothing, deepest first (a run that made them)."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()),
                         key=lambda p: len(p.parts), reverse=True) + [root]:
        with contextlib.suppress(OSError):  # (not empty: kept)
            folder.rmdir()


def check_statistics_file(path: Path, shown: str) -> None:
    """A ``UsageError`` where ``path`` holds something other than statistics (a video, a photo, notes), which
    statistics written there would destroy: a file already there must be JSON (a run before wrote it) or empty."""
    try:
        with open(path, "rb") as file:
            head = file.read(64).lstrip()
    except IsADirectoryError:
        raise UsageError(f"{shown} is a folder; give a file name") from None
    except OSError:  # (not there yet; or unreadable: said where it is written)
        return
    if head and not head.startswith(b"{"):
        raise UsageError(f"{shown} holds something other than statistics: name the statistics file otherwise")


def check_statistics_among(path: Path, files: Iterable[tuple[str, str | Path, str | Path]], shown: str,
                           run: str) -> None:
    """A ``UsageError`` where the statistics file ``path`` is one of a run's inputs or outputs (``files``: each
    one's name, input and output): written whole at the end, it would take a finished output's place."""
    stats = path.resolve()
    for name, source, target in files:
        for what, file in (("an input", source), ("an output", target)):
            if Path(file).resolve() == stats:
                raise UsageError(f"{shown} is {what} of {run} ({name}): name the statistics file otherwise")


def _name_max(folder: Path) -> int:
    """The longest file name ``folder``'s filesystem takes, in bytes (255 on most; 255 where it cannot be asked)."""
    try:
        return os.pathconf(folder if folder.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _same_file(path: Path, existing: Path) -> bool:
    """Whether ``path`` names the file ``existing`` (another spelling, a link, a hard link)."""
    return path.resolve() == existing.resolve() or (path.exists() and os.path.samefile(path, existing))


def check_writable(folder: Path) -> None:
    """A file can be created in ``folder``: tried, since permissions alone do not say (root, a read-only
    filesystem). Nothing is left behind."""
    if not folder.is_dir():
        raise UsageError(f"folder does not exist: {folder}")
    try:
        fd = _anonymous_file(folder)
        if fd is None:
            probe = folder / f".streamdehaze-probe-{os.getpid()}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.unlink(probe)
        os.close(fd)
    except OSError as exc:
        raise UsageError(f"cannot write to {folder}: {exc.strerror}") from None


def partial_name(target: Path) -> Path:
    """Where an interrupted run leaves the frames it finished: ``out.mp4`` -> ``out.partial.mp4``."""
    return target.with_name(f"{target.stem}.partial{target.suffix}")


def is_partial(path: Path) -> bool:
    """Whether ``path`` is named as an interrupted run's frames: ``NAME.partial.EXT``, or an earlier one's moved
    aside, ``NAME.partial.N.EXT``."""
    return re.fullmatch(r".+\.partial(\.\d+)?\.[^.]+", path.name) is not None


def _partials(target: Path) -> list[Path]:
    """The interrupted runs' frames kept for ``target``: ``NAME.partial.EXT`` and ``NAME.partial.N.EXT``."""
    if not target.parent.is_dir():
        return []
    named = re.compile(re.escape(f"{target.stem}.partial") + r"(\.\d+)?" + re.escape(target.suffix))
    return sorted(p for p in target.parent.iterdir() if named.fullmatch(p.name))


class OutputFile:
    """The file a run writes for ``target``. Writers open ``path``; then ``commit()`` (it becomes the target),
    ``keep_partial()`` (it becomes ``NAME.partial.EXT``) or ``discard()``."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.moved_aside: Path | None = None  # where ``keep_partial`` moved an earlier run's partial
        self._named: Path | None = None
        try:
            self._fd = _anonymous_file(target.parent)
            if self._fd is None:
                self._named, self._fd = _at_hidden_partial(target, lambda name: os.open(
                    name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))
        except OSError as exc:
            raise UsageError(f"cannot write to {target.parent}: {exc.strerror}") from None
        self.path = self._named or Path(f"/proc/self/fd/{self._fd}")
        hold(self._fd)

    def commit(self, ends_partial: bool = False) -> Path:
        """Put the finished file in place of the target. ``ends_partial``: this is a run that, interrupted, keeps a
        partial (a video's): those of earlier interrupted runs go. (For others, a file of that name is the user's.)"""
        self._link(self.target)
        for earlier in _partials(self.target) if ends_partial else []:
            earlier.unlink()
            log.warning("removed %s, left by an interrupted run: %s is complete now", earlier.name, self.target.name)
        return self.target

    def keep_partial(self) -> Path:
        """Keep the (finished, playable) file of an interrupted run as ``NAME.partial.EXT``; an earlier run's there
        is moved aside (``move_aside``), never replaced."""
        partial = partial_name(self.target)
        try:
            self.moved_aside = move_aside(partial, "the frames of an interrupted run")
        except OSError as exc:
            self.discard()
            raise MediaError(f"cannot move {partial} aside: {exc.strerror}") from None
        self._link(partial)
        return partial

    def discard(self) -> None:
        if self._named is not None:
            self._named.unlink(missing_ok=True)
        self._close()

    def _link(self, dest: Path) -> None:
        try:
            os.fsync(self._fd)  # the data before the name: a power cut never leaves a named, empty file
            if self._named is None:
                # An anonymous file gets a name by linkat(); it cannot replace a file, so: a hidden name, then rename.
                folder = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:  # a folder fd makes Python call linkat(), which follows /proc's link to the file
                    self._named, _ = _at_hidden_partial(self.target, lambda name: os.link(
                        self.path, name.name, dst_dir_fd=folder, follow_symlinks=True))
                finally:
                    os.close(folder)
            taken = _held(dest)  # (a live recording begun there since this run began: never replaced)
            kept = _numbered(dest) if taken else dest
            os.replace(self._named, kept)
            self._named = None
            _sync_folder(dest.parent)
        except OSError as exc:
            self.discard()
            raise MediaError(f"cannot write {dest}: {exc.strerror}") from None
        self._close()
        if taken:
            raise MediaError(f"{dest} is being recorded by another run, begun since this one: this one's output is "
                             f"{kept.name}")

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _anonymous_file(folder: Path) -> int | None:
    """An unnamed file in ``folder`` (Linux ``O_TMPFILE``; writers reach it as /proc/self/fd/N), or None where the
    platform or the filesystem has none."""
    if not hasattr(os, "O_TMPFILE") or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o666)
    except OSError as exc:
        if exc.errno in _NO_TMPFILE:
            return None
        raise


def _hidden_partial(target: Path, n: int = 0) -> Path:
    number = f"{os.getpid()}-{n}" if n else os.getpid()
    return target.with_name(f".{target.stem}.partial-{number}{target.suffix}")


def _at_hidden_partial(target: Path, create: Callable[[Path], T]) -> tuple[Path, T]:
    """``create(name)`` at the first free one of ``target``'s hidden partial names (``.NAME.partial-PID.EXT``, then
    ``.NAME.partial-PID-N.EXT``); it fails with ``FileExistsError`` where the name is taken, as an exclusive open
    and link() do, so that nothing found there (a link planted in a folder others write to) is followed or
    replaced. Returns the name and what ``create`` returned."""
    for n in range(100):
        name = _hidden_partial(target, n)
        try:
            return name, create(name)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "every name for its unfinished file is taken", str(target))


@contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield the path to write ``target``'s content to; it becomes ``target`` on success and is gone on failure."""
    out = OutputFile(target)
    try:
        yield out.path
    except BaseException:
        out.discard()
        raise
    out.commit()


def remove_stale_partials(folder: Path, name: str | None = None) -> None:
    """Remove the unfinished outputs (``.NAME.partial-PID.EXT``) that runs which died left in ``folder`` for the
    file ``name`` (every file when None): those whose writer no longer holds their lock."""
    stem, suffix = ("*", "") if name is None else (glob.escape(Path(name).stem), glob.escape(Path(name).suffix))
    for path in sorted(folder.glob(f".{stem}.partial-*{suffix}")):
        if _held(path) is not False:  # its writer is still at work (or it cannot be told)
            continue
        path.unlink(missing_ok=True)
        log.warning("removed %s, left unfinished by a run that was killed", path.name)


def hold(fd: int) -> None:
    """Lock the file being written through ``fd`` until it is closed: the mark of a living writer (``_held``)."""
    fcntl.flock(fd, fcntl.LOCK_EX)  # (waits, at most, for another process's look: ``_held``)


def _held(path: Path) -> bool | None:
    """Whether a living writer holds ``path`` (``hold``); None where it cannot be opened to see, or is no regular
    file, which no run writes (opening a named pipe waits for a writer for ever, a device's open may act)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # (replaced since: still never waits)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def check_not_recording(target: Path) -> None:
    """A ``UsageError`` where another run is recording ``target`` now: it cannot be moved aside under it."""
    if _held(target):
        raise UsageError(f"{target} is being recorded by another run: give this one another name")


def move_aside(target: Path, held: str = "a recording") -> Path | None:
    """A live recording (or an interrupted run's partial) never replaces an earlier file: move one at ``target`` to
    ``NAME.N.EXT``, N one more than the highest already there (``check_not_recording`` first); ``held``: what it
    is, for the warning. Returns where it went, or None when there was nothing to move."""
    if not target.exists():
        return None
    check_not_recording(target)
    aside = _numbered(target)
    os.rename(target, aside)
    log.warning("%s already held %s: moved it to %s", target.name, held, aside.name)
    return aside


def _numbered(target: Path) -> Path:
    """``NAME.N.EXT`` beside ``target``, N one more than the highest there."""
    numbered = re.compile(re.escape(target.stem) + r"\.(\d+)" + re.escape(target.suffix))
    taken = [int(m.group(1)) for p in target.parent.iterdir() if (m := numbered.fullmatch(p.name))]
    return target.with_name(f"{target.stem}.{max(taken, default=0) + 1}{target.suffix}")


def segments(pattern: Path) -> list[tuple[int, Path]]:
    """The existing files of a segment pattern (``cam_%05d.mp4``), with their numbers, lowest first; none for a
    pattern that names them by time."""
    if timed_segments(pattern):
        return []
    head, tail = re.split(r"%0?\d*d", pattern.name, maxsplit=1)
    numbered = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail))
    found = [(int(m.group(1)), p) for p in pattern.parent.iterdir() if (m := numbered.fullmatch(p.name))]
    return sorted(found)


def next_segment(pattern: Path) -> int:
    """The number a new run's first segment gets: one after the highest already there, so none is replaced."""
    found = segments(pattern)
    return found[-1][0] + 1 if found else 0


class RecordingDeleted(MediaError):
    """The file a recording was writing was deleted (or its folder) while it ran: what it held is gone."""


class WholeWrites(io.FileIO):
    """A file that a muxer writes through Python (``av.open(WholeWrites(path, "wb"), "w", ...)``), so that no write
    error is lost: FFmpeg writing by name loses a full disk's refusal of a fragmented MP4's last fragment (the MOV
    muxer's trailer returns a size, which hides the error, and PyAV drops ``avio_closep``'s result), and takes a
    short write (a disk filling up) as whole. ``error``: the first failure, raised again by ``check()``."""

    error: OSError | None = None

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += super().write(view[done:])
        except OSError as exc:
            self.error = self.error or exc
            raise
        return done

    def check(self) -> None:
        if self.error is not None:
            raise self.error


class Syncer:
    """``fsync()`` the file a recording is writing about once a second: the muxer hands every fragment to the
    kernel at once (a killed process loses nothing), and this bounds what a power cut loses. A file that has lost
    its name (deleted, or its folder) is a ``RecordingDeleted``: the muxer would go on writing into a file that no
    one can see, filling the disk, while the run said it recorded."""

    def __init__(self, file: io.FileIO, path: Path, interval: float = 1.0) -> None:
        """``file``: the recording, open for writing at ``path``."""
        self.file, self.path, self.interval = file, path, interval
        self._last = time.monotonic()  # when it was opened or last synced
        self._named = False  # whether its folder was synced: a new file's name must survive too

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        if os.fstat(self.file.fileno()).st_nlink == 0:
            how = "replaced by another file" if self.path.exists() else "deleted"
            where = "" if self.path.exists() else " (the file, or its folder)"
            raise RecordingDeleted(f"{self.path} was {how} while it was being recorded{where}: nothing written to "
                                   "it can be seen any more")
        os.fsync(self.file.fileno())
        if not self._named:
            _sync_folder(self.path.parent)
            self._named = True
        self._last = now


class FolderWatch:
    """Whether the folder a file run's output is to be named in is still there, looked at about once a second: a
    folder deleted (or replaced) under a run was found only when the finished output could not be named in it,
    after hours of work on a long file. ``MediaError`` then, naming ``target``."""

    def __init__(self, target: Path, interval: float = 1.0) -> None:
        self.target, self.interval = target, interval
        self._id = self._folder()
        self._last = time.monotonic()

    def _folder(self) -> tuple[int, int] | None:
        try:
            found = os.stat(self.target.parent)
        except OSError:
            return None
        return found.st_dev, found.st_ino

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        if self._folder() != self._id:
            raise MediaError(f"{self.target.parent} was deleted while the run wrote {self.target.name} for it: "
                             "the output cannot be put there")


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

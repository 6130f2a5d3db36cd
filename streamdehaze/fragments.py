"""A fragmented MP4/MOV recording whose last fragment a full disk cut short, made whole again.

A live recording is written as fragments (``moof`` then its ``mdat``). When the disk fills up in the middle of
one, the file ends inside that fragment's ``mdat``: its last sample is cut, and FFmpeg's demuxer says "Invalid data"
there. ``trim_cut_fragment`` cuts the file at the end of the last whole sample and makes the fragment's boxes say
so (the ``mdat``'s size, each ``trun``'s sample count), so that the file ends cleanly after its last whole frame.
``video_samples`` counts the frames a recording holds, from its fragments' headers alone.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

__all__ = ["trim_cut_fragment", "unread_rest", "video_samples"]

# trun flags: the fields each sample entry holds
_DATA_OFFSET, _FIRST_FLAGS = 0x1, 0x4
_SAMPLE_FIELDS = (0x100, 0x200, 0x400, 0x800)  # duration, size, flags, composition offset
_SIZE = 0x200
_BASE_OFFSET, _DEFAULT_SIZE = 0x1, 0x10  # tfhd: base-data-offset, default-sample-size present
_CUT = {b"mdat": "media", b"moof": "media", b"moov": "index"}  # what a box cut short loses, as users know it


def _header(head: bytes, at: int, end: int) -> tuple[bytes, int, int] | None:
    """``(type, size, header size)`` of the box whose first bytes (up to 16) are ``head``, found at ``at`` of data
    ending at ``end``; None where it cannot be a box."""
    size, kind = struct.unpack(">I4s", head[:8])
    length = 8
    if size == 1 and len(head) >= 16:
        size, length = struct.unpack(">Q", head[8:16])[0], 16
    elif size == 0:  # (to the end of the file)
        size = end - at
    return None if size < length else (kind, size, length)


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """``(type, offset, size, header size)`` of the boxes in ``data[start:end]``; a box's size may run past
    ``end`` (a cut file): it is the last one given."""
    at = start
    while at + 8 <= end and (box := _header(data[at:min(at + 16, end)], at, end)) is not None:
        kind, size, length = box
        yield kind, at, size, length
        at += size


def _top(path: Path) -> tuple[list[tuple[bytes, int, int, int]], int]:
    """The top-level boxes of the file, read by their headers only (an ``mdat`` is skipped over), and its size."""
    size = path.stat().st_size
    found = []
    with open(path, "rb") as f:
        at = 0
        while at + 8 <= size:
            f.seek(at)
            box = _header(f.read(16), at, size)
            if box is None:
                break
            kind, box_size, header = box
            found.append((kind, at, box_size, header))
            at += box_size
    return found, size


def _runs(moof: bytes, moof_at: int) -> Iterator[tuple[int, int, int, int, list[int] | None]]:
    """For each ``trun`` of a ``moof`` (read whole, found at ``moof_at`` in the file): its track ID, its offset in
    the file, where its samples' data starts in the file, how many samples it has, and their sizes (None where
    neither the run nor its ``tfhd`` gives them: the track's defaults, in the ``moov``)."""
    for kind, at, size, head in _boxes(moof, 8, len(moof)):
        if kind != b"traf":
            continue
        base, track, default = moof_at, None, None
        for inner, i, isize, ihead in _boxes(moof, at + head, at + size):
            if inner == b"tfhd":
                flags = int.from_bytes(moof[i + 9:i + 12], "big")
                track = struct.unpack(">I", moof[i + 12:i + 16])[0]
                field = i + 16
                if flags & _BASE_OFFSET:
                    base = struct.unpack(">Q", moof[field:field + 8])[0]
                    field += 8
                field += 4 * sum(1 for f in (0x2, 0x8) if flags & f)  # sample description, duration
                if flags & _DEFAULT_SIZE:
                    default = struct.unpack(">I", moof[field:field + 4])[0]
            elif inner == b"trun" and track is not None:
                flags = int.from_bytes(moof[i + 9:i + 12], "big")
                count = struct.unpack(">I", moof[i + 12:i + 16])[0]
                field = i + 16
                offset = 0
                if flags & _DATA_OFFSET:
                    offset = struct.unpack(">i", moof[field:field + 4])[0]
                    field += 4
                if flags & _FIRST_FLAGS:
                    field += 4
                sizes = None if default is None else [default] * count
                if flags & _SIZE:
                    entry = 4 * sum(1 for f in _SAMPLE_FIELDS if flags & f)
                    at_size = field + (4 if flags & 0x100 else 0)
                    sizes = [struct.unpack(">I", moof[at_size + n * entry:at_size + n * entry + 4])[0]
                             for n in range(count) if at_size + n * entry + 4 <= i + isize]
                yield track, moof_at + i, base + offset, count, sizes


def trim_cut_fragment(path: str | os.PathLike) -> bool:
    """Where the last fragment of the recording at ``path`` is cut short, end the file after its last whole sample
    (the fragment's ``mdat`` and ``trun`` boxes saying so), or at the fragment's start where its own header is cut.
    True if the file was changed."""
    path = Path(path)
    top, size = _top(path)
    moofs = [n for n, box in enumerate(top) if box[0] == b"moof"]
    if not moofs:
        return False
    n = moofs[-1]
    _, moof_at, moof_size, _ = top[n]
    if moof_at + moof_size > size or n + 1 == len(top):  # (its header cut, or no data after it)
        os.truncate(path, moof_at)
        return True
    if top[n + 1][0] != b"mdat":
        return False
    _, mdat_at, mdat_size, mdat_head = top[n + 1]
    if mdat_at + mdat_size <= size:
        return False  # whole
    with open(path, "r+b") as f:
        f.seek(moof_at)
        runs = []  # (trun's offset, its whole samples, where they end)
        for _, trun_at, start, _, sizes in _runs(f.read(moof_size), moof_at):
            if sizes is None:  # (the track's default sizes: left as it is)
                return False
            whole, at = 0, start
            while whole < len(sizes) and at + sizes[whole] <= size:
                at += sizes[whole]
                whole += 1
            runs.append((trun_at, whole, at, whole < len(sizes)))
        if not runs:
            return False
        # the file ends after the whole samples of the run the disk cut (the runs after it have none whole)
        cut = min((at for _, _, at, short in runs if short), default=max(at for _, _, at, _ in runs))
        for trun_at, whole, _, _ in runs:
            f.seek(trun_at + 12)
            f.write(struct.pack(">I", whole))
        f.seek(mdat_at + 8 if mdat_head == 16 else mdat_at)
        f.write(struct.pack(">Q" if mdat_head == 16 else ">I", cut - mdat_at))
        f.truncate(cut)
    return True


def unread_rest(path: str | os.PathLike) -> str | None:
    """What of the MP4/MOV file at ``path`` FFmpeg cannot have read, where its boxes end before the file does: at
    a box of no type (a bad card's zeroed block, which FFmpeg reads no further than), or inside a last box of media
    or index that runs past the file's end (a cut fragment: the rest of its sound, the fragments after it; an index
    at the end: the tracks it describes last). None where its boxes fill it (zeros after the last one, a recorder's
    padding, included), or where what is cut short is neither (a fragments' index, which FFmpeg does without)."""
    path = Path(path)
    top, size = _top(path)
    if not top:
        return None
    kind, at, box_size, _ = top[-1]
    if all(32 <= c < 127 for c in kind):
        if at + box_size > size:
            missing = at + box_size - size
            return f"is truncated: the last {missing} bytes of its {_CUT[kind]} are missing" if kind in _CUT else None
        if at + box_size >= size - 8:  # (what no box header fits in)
            return None
        at += box_size  # (a box header that makes no sense: ``_top`` stopped before it)
    with open(path, "rb") as f:
        f.seek(at)
        while chunk := f.read(1 << 20):
            if chunk.count(0) < len(chunk):
                return f"is damaged at byte {at} of {size}: nothing after it can be read"
    return None


def video_samples(path: str | os.PathLike, track: int = 1) -> int:
    """The samples of ``track`` (a recording's video is its first track) in the fragments of the file at ``path``,
    read from their headers."""
    path = Path(path)
    top, _ = _top(path)
    total = 0
    with open(path, "rb") as f:
        for kind, at, size, _ in top:
            if kind == b"moof":
                f.seek(at)
                total += sum(count for t, _, _, count, _ in _runs(f.read(size), at) if t == track)
    return total

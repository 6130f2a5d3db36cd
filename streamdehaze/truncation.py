"""Image files whose data ends before their picture does. Decoders do not all say so: libjpeg pads a cut JPEG with
grey and libheif decodes a cut HEIC's missing tiles into noise, both as if the file were whole."""

from __future__ import annotations

import re

__all__ = ["is_heif", "truncated", "jpeg_truncated", "png_truncated", "heif_truncated"]

# The brands of an ISO base media file whose pictures are HEVC: a HEIC/HEIF photo, whatever its name says.
_HEVC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"}

# A JPEG marker: 0xFF then a byte that is neither 0x00 (an escaped 0xFF in entropy-coded data) nor a restart.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def truncated(data: bytes) -> bool:
    """Whether ``data`` is a JPEG, PNG or HEIC/HEIF image that ends before its picture does."""
    return jpeg_truncated(data) or png_truncated(data) or heif_truncated(data)


def is_heif(data: bytes) -> bool:
    """Whether ``data`` is a HEIC/HEIF photo: an ISO base media file (its first box ``ftyp``) of an HEVC brand."""
    size = int.from_bytes(data[:4], "big")
    if data[4:8] != b"ftyp" or not 16 <= size <= len(data):
        return False
    brands = {data[8:12], *(data[i:i + 4] for i in range(16, size - 3, 4))}
    return bool(brands & _HEVC_BRANDS)


def jpeg_truncated(data: bytes) -> bool:
    """Whether ``data`` is a JPEG that ends before its end-of-image marker: libjpeg then warns "Premature end of
    JPEG file" and fills the missing part with grey, so a decoder returns it as if it were whole."""
    if data[:2] != b"\xff\xd8":
        return False
    at = 2
    while True:
        marker = _JPEG_MARKER.search(data, at)
        if marker is None:
            return True
        kind, at = data[marker.start() + 1], marker.start() + 2
        if kind == 0xD9:  # end of image
            return False
        if kind != 0x01 and at + 2 <= len(data):  # segments other than TEM carry their length
            at += int.from_bytes(data[at:at + 2], "big")  # skipped whole: their payload may hold any bytes
        if at > len(data):
            return True


def png_truncated(data: bytes) -> bool:
    """Whether ``data`` is a PNG that ends before its closing IEND chunk (libpng would fail with a message of its
    own). Its chunks are walked by their lengths: bytes after IEND (a camera's or an editor's trailer) are no harm."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    at = 8
    while at + 8 <= len(data):
        length, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        at += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return at > len(data)
    return True


def heif_truncated(data: bytes) -> bool:
    """Whether ``data`` is a HEIC/HEIF photo that ends before its last box does: libheif decodes the tiles whose data
    is missing into noise, without a word. Its top-level boxes are walked by their sizes."""
    if not is_heif(data):
        return False
    at = 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        if size == 1:  # (a 64-bit size follows the type)
            size = int.from_bytes(data[at + 8:at + 16], "big")
        if size == 0:  # (the last box, to the end of the file, whatever that is)
            return False
        if size < 8:
            return True  # (no box is that small: cut inside a size)
        at += size
    return at > len(data)

"""Image mode: one image in, one image out; a folder in, a folder out with the same file names. Outputs keep the
input's EXIF and colour profile (JPEG, PNG and WebP).

A folder run goes on past images that cannot be read (not an image, corrupt, or truncated: a JPEG whose data ends
before its end marker, which libjpeg would pad with grey, or a PNG without its end chunk), names each on its own
line, writes every good one, and fails at the end with the counts.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from PIL import ExifTags
from torch import nn

from .engine import Engine
from .errors import MediaError, UsageError
from .models import PredictsCoefficients
from .models.kanet_model import MAX_UPSCALE
from .outputs import atomic_output, check_output, remove_stale_partials

log = logging.getLogger("streamdehaze")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# Outputs that carry the input's EXIF (capture time, camera, GPS) and colour profile (how the pixel values are to be
# shown: a wide-gamut phone photo without its profile shows duller colours). OpenCV writes neither into TIFF.
KEEPS_METADATA = {".png", ".jpg", ".jpeg", ".webp"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


# A JPEG marker: 0xFF then a byte that is neither 0x00 (an escaped 0xFF in entropy-coded data) nor a restart.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def read_image(path: Path) -> np.ndarray:
    """RGB ``[H,W,3]`` uint8 or uint16, upright (EXIF orientation applied)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MediaError(f"cannot read image {path}: {exc.strerror}") from None
    if jpeg_truncated(data) or png_truncated(data):
        raise MediaError(f"cannot read image {path}: truncated (its data ends before the picture does)")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if bgr is not None:
        return bgr[..., ::-1]
    try:  # OpenCV (4.13, 5.1) reads no TIFF whose orientation tag turns it; Pillow does
        with PIL.Image.open(path) as image:
            if image.format == "TIFF" and image.mode in ("RGB", "RGBA", "L", "P", "CMYK"):
                return np.array(PIL.ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, SyntaxError, ValueError):
        pass
    raise MediaError(f"cannot read image {path}: not an image, or corrupt")


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
    """Whether ``data`` is a PNG without its closing IEND chunk (libpng would fail with a message of its own)."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND\xaeB`\x82" not in data[-4096:]


def read_metadata(path: Path) -> dict[int, bytes]:
    """The EXIF block and ICC profile of an image, as far as it has them, keyed by OpenCV's metadata types; the EXIF
    without its orientation tag, since ``read_image`` returns the picture upright."""
    try:
        with PIL.Image.open(path) as image:
            exif, icc = image.getexif(), image.info.get("icc_profile")
            exif.pop(ExifTags.Base.Orientation, None)
            # (a TIFF's "EXIF" is its own file structure: strip offsets and the like, which mean nothing elsewhere)
            blob = exif.tobytes() if len(exif) and image.format in ("JPEG", "MPO", "PNG", "WEBP") else b""
    except (OSError, SyntaxError, ValueError):  # Pillow cannot read it: the pixels, which OpenCV read, still go
        return {}
    found = {cv2.IMAGE_METADATA_EXIF: blob.removeprefix(b"Exif\x00\x00"), cv2.IMAGE_METADATA_ICCP: icc}
    return {kind: data for kind, data in found.items() if data}


def write_image(path: Path, rgb: np.ndarray, metadata: dict[int, bytes] | None = None) -> None:
    """Write RGB ``[H,W,3]`` (uint8 or uint16) with ``metadata`` (``read_metadata``) where the format carries it."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if metadata and path.suffix.lower() in KEEPS_METADATA:
        ok, encoded = cv2.imencodeWithMetadata(path.suffix, bgr, list(metadata),
                                               [np.frombuffer(data, np.uint8) for data in metadata.values()])
    else:
        ok, encoded = cv2.imencode(path.suffix, bgr)
    if not ok:
        raise MediaError(f"cannot write image {path}")
    try:
        with atomic_output(path) as tmp:
            tmp.write_bytes(encoded.tobytes())
    except OSError as exc:  # a full disk, a folder taken away: nothing is left half-written
        raise MediaError(f"writing {path} failed: {exc.strerror or exc}") from None


def image_engine(model: nn.Module, device: str | torch.device,
                 infer_size: int | str | None = "auto", strength: float = 1.0,
                 noise_floor: float | str = "auto") -> Engine:
    """An engine for photos. ``auto``: a model that predicts its colour transform takes the video path, at the
    model's inference size, raised for large photos so that the transform is never stretched more than 4x (the
    range it was trained for; a 12-megapixel photo runs at a short side of 750). Other models (``dcp``) run at
    native resolution: a photo has no frame rate to keep, and a transform fitted at a small size carries over
    less of their haze removal (FADE on real hazy photos, dcp: 0.621 at 192, 0.558 native)."""
    if infer_size == "auto" and not isinstance(model, PredictsCoefficients):
        infer_size = None
    return Engine(model, device, infer_size, max_upscale=MAX_UPSCALE, strength=strength, noise_floor=noise_floor)


def dehaze_image_file(engine: Engine, src: Path, dst: Path) -> None:
    write_image(dst, engine.process_array(read_image(src)[None])[0], read_metadata(src))


def dehaze_images(engine: Engine, src: Path, dst: Path,
                  on_image: Callable[[int], None] | None = None) -> int:
    """Dehaze an image file or every image in a folder; returns the number of images written."""
    if src.is_dir():
        names = sorted(p.name for p in src.iterdir() if p.is_file() and is_image(p))
        if not names:
            raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {src}")
        if dst.exists() and not dst.is_dir():
            raise UsageError(f"input is a folder, so the output must be a folder too: {dst}")
        if dst.resolve() == src.resolve():
            raise UsageError(f"output folder {dst} is the input folder: refusing to overwrite the inputs")
        if not dst.parent.is_dir():
            raise UsageError(f"output folder's parent does not exist: {dst.parent}")
        dst.mkdir(exist_ok=True)
        if not os.access(dst, os.W_OK):
            raise UsageError(f"cannot write to {dst}")
        remove_stale_partials(dst)
        bad = 0
        for name in names:
            try:
                rgb = read_image(src / name)
            except MediaError as exc:  # the others still get done
                log.error("%s; skipped", exc)
                bad += 1
            else:
                write_image(dst / name, engine.process_array(rgb[None])[0], read_metadata(src / name))
            if on_image is not None:
                on_image(1)
        if bad:
            raise MediaError(f"{bad} of {len(names)} images could not be read and were skipped (named above); "
                             f"the other {len(names) - bad} are in {dst}")
        return len(names)
    if not is_image(dst):
        raise UsageError(f"input is an image, so the output must be an image file ({', '.join(sorted(IMAGE_SUFFIXES))}): {dst}")
    check_output(dst, src)
    dehaze_image_file(engine, src, dst)
    if on_image is not None:
        on_image(1)
    return 1

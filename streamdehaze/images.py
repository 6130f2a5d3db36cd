"""Image mode: one image in, one image out; a folder in, a folder out with the same file names. Outputs keep the
input's layout (grey, colour, colour with transparency), its bit depth where the format holds it, and its EXIF and
colour profile (JPEG, PNG, WebP, AVIF and HEIC).

A folder run goes on past images that cannot be read (not an image, corrupt, or truncated: a JPEG whose data ends
before its end marker, which libjpeg would pad with grey, or a PNG without its end chunk) or written, names each on
its own line, writes every good one, and fails at the end with the counts.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import av
import cv2
import numpy as np
import PIL.Image
import PIL.ImageOps
import PIL.TiffImagePlugin
import torch
from PIL import ExifTags
from torch import nn

from .credentials import mask
from .engine import Engine
from .errors import MediaError, UsageError
from .formats import STDOUT
from .models import PredictsCoefficients
from .models.kanet_model import MAX_UPSCALE
from .outputs import atomic_output, check_output, remove_stale_partials
from .sinks import failure_reason
from .truncation import is_heif, truncated

log = logging.getLogger("streamdehaze")

# HEIC/HEIF (a phone's photos) is read and written by libheif, through the optional package pillow-heif.
HEIF_SUFFIXES = {".heic", ".heif"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".avif", *HEIF_SUFFIXES}
# Outputs that carry the input's EXIF (capture time, camera, GPS) and colour profile (how the pixel values are to be
# shown: a wide-gamut phone photo without its profile shows duller colours). OpenCV writes neither into TIFF.
KEEPS_METADATA = {".png", ".jpg", ".jpeg", ".webp", ".avif", *HEIF_SUFFIXES}
# Outputs that hold more than 8 bits a sample (HEIF: 10); OpenCV would clip a 16-bit picture written to any other
# to white.
HOLDS_16_BITS = {".png", ".tif", ".tiff", *HEIF_SUFFIXES}
HEIF_QUALITY = 90  # libheif's 0-100 for HEIC outputs (x265); its default, 50, visibly softens a photo
FETCH_TIMEOUT_S = 30.0  # to read an image from a URL: an answer, and each read of its data
# An image URL is read up to this (a camera's snapshot is well under 1 MB, a 50-megapixel camera's JPEG 30 MB): an
# endless body, a stream's or a hostile server's, took all the memory there was.
MAX_IMAGE_URL_BYTES = 256 << 20


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_image_url(url: str) -> bool:
    """An http(s) URL of an image file (by its name): read once, as an image, like a file on disk."""
    try:
        parts = urlsplit(url)
    except ValueError:  # (not a valid URL: said where it is read)
        return False
    return parts.scheme in ("http", "https") and PurePosixPath(parts.path).suffix.lower() in IMAGE_SUFFIXES


def fetch_image(url: str, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    """The bytes of the file at ``url``, read through FFmpeg as raw data: its HTTP(S), with the credentials the URL
    holds (basic or digest, as cameras ask), redirects and proxies, as for a camera's stream."""
    name = mask(url, url)
    try:
        with av.open(url, "r", format="data", timeout=timeout) as container:
            data = bytearray()
            for packet in container.demux():
                data += bytes(packet)
                if len(data) > MAX_IMAGE_URL_BYTES:
                    raise MediaError(f"cannot read image {name}: it goes on past {MAX_IMAGE_URL_BYTES >> 20} MB, "
                                     "more than any photo (a stream?)")
            return bytes(data)
    except av.ExitError:  # PyAV's timeout interrupted FFmpeg
        raise MediaError(f"cannot read image {name}: no answer for {timeout:g} s") from None
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"cannot read image {name}: {failure_reason(exc, url)}") from None


def read_image(image: Path | bytes, name: str | None = None) -> np.ndarray:
    """The picture of a file (or of its bytes, called ``name`` in messages) upright (EXIF orientation applied), in
    its own layout: grey ``[H,W]``, RGB ``[H,W,3]`` or RGBA ``[H,W,4]`` (a palette or grey image with transparency
    too); uint8 or uint16."""
    path = name or image
    try:
        data = image if isinstance(image, bytes) else image.read_bytes()
    except OSError as exc:
        raise MediaError(f"cannot read image {path}: {exc.strerror}") from None
    if not data:
        raise MediaError(f"cannot read image {path}: the file is empty")
    if truncated(data):
        raise MediaError(f"cannot read image {path}: truncated (its data ends before the picture does)")
    if is_heif(data):
        return _read_heif(data, path)
    # Decoded from the bytes read: OpenCV's imread crashes the process on a file name that is not UTF-8 (an old
    # camera card's, a Windows zip's), and fails on a TIFF whose orientation tag turns it.
    try:
        stored = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # (a header that gives more pixels than OpenCV decodes: a damaged or hostile file)
        reason = "more than 2^30 pixels, OpenCV's limit" if "MAX_IMAGE_PIXELS" in exc.err else exc.err
        raise MediaError(f"cannot read image {path}: {reason}") from None
    if stored is None:
        raise MediaError(f"cannot read image {path}: not an image, or corrupt")
    if stored.dtype not in (np.uint8, np.uint16):  # (floating-point or 32-bit TIFF: no scale to read it by)
        raise MediaError(f"cannot read image {path}: {stored.dtype} samples (8- and 16-bit images are read)")
    if stored.ndim == 3:
        stored = cv2.cvtColor(stored, cv2.COLOR_BGRA2RGBA if stored.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    turn, pictures = _orientation(data)
    if pictures > 1:  # (an animated WebP or PNG, a TIFF of pages)
        log.warning("%s holds %d pictures: the first is dehazed", path, pictures)
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return np.ascontiguousarray(_UPRIGHT.get(turn, lambda a: a)(stored))
    # OpenCV turns a TIFF upright itself. It reads an 8-bit one through libtiff's RGBA reader, which multiplies the
    # transparency into the colours (a grey one's it drops): Pillow reads those as they are.
    bits, alpha, cmyk = _tiff_layout(data)
    if alpha and bits == 8:
        try:
            with PIL.Image.open(io.BytesIO(data)) as image:
                return np.asarray(PIL.ImageOps.exif_transpose(image).convert("RGBA"))
        except _PILLOW_CANNOT:  # (a layout Pillow does not read: OpenCV's reading, as it is)
            pass
    if alpha and stored.ndim == 2:
        log.warning("%s: a grey TIFF with %d-bit samples and transparency is read as 8-bit grey, without its "
                    "transparency (as OpenCV reads it)", path, bits)
    if cmyk and stored.ndim == 3 and stored.shape[2] == 4:  # (OpenCV adds an opaque alpha channel)
        return np.ascontiguousarray(stored[..., :3])
    return stored


def _heif():
    """The module pillow_heif, or one line saying how to install it."""
    try:
        import pillow_heif
    except ImportError:
        raise UsageError("HEIC/HEIF photos need the optional package pillow-heif: "
                         "pip install 'streamdehaze[heif]'") from None
    return pillow_heif


def _open_heif(data: bytes, path: object):
    try:
        # (more than 8 bits a sample, as an iPhone's HDR photos have, kept: scaled to 16)
        return _heif().open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
    except (ValueError, RuntimeError, OSError) as exc:  # (libheif's errors)
        raise MediaError(f"cannot read image {path}: {exc}") from None


def _read_heif(data: bytes, path: object) -> np.ndarray:
    """The primary picture of a HEIC/HEIF photo, upright: libheif applies the rotation and mirroring the file
    states (its EXIF orientation describes the camera, not the stored pixels)."""
    heif = _open_heif(data, path)
    if len(heif) > 1:  # (a burst, a collection)
        log.warning("%s holds %d pictures: the first is dehazed", path, len(heif))
    try:
        return np.ascontiguousarray(np.asarray(heif))
    except (ValueError, RuntimeError) as exc:  # (libheif decodes here: a truncated file fails now)
        raise MediaError(f"cannot read image {path}: {exc}") from None


# How the stored pixels are turned upright for each EXIF orientation (numpy's rot90 turns anticlockwise).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1),
}


def _orientation(data: bytes) -> tuple[int, int]:
    """An image's EXIF orientation, and how many pictures it holds."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            return int(image.getexif().get(ExifTags.Base.Orientation, 1)), getattr(image, "n_frames", 1)
    except _PILLOW_CANNOT:  # Pillow cannot read it: OpenCV did, and there is no tag to apply (or too large: below)
        return 1, 1


# What Pillow raises for a file it cannot read; a picture past its decompression-bomb limit (179 megapixels) too.
_PILLOW_CANNOT = (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError)


def _tiff_layout(data: bytes) -> tuple[int, bool, bool]:
    """A TIFF's bits per sample, whether it has transparency, and whether it is CMYK, from its first directory. A
    sample past the colours is taken for transparency, as libtiff takes it (OpenCV writes RGBA with no ExtraSamples
    tag to say so)."""
    try:
        directory = PIL.TiffImagePlugin.ImageFileDirectory_v2(data[:8])
        with io.BytesIO(data) as file:
            file.seek(directory.next)
            directory.load(file)
    except (OSError, SyntaxError, ValueError, struct.error):  # (OpenCV read it: the pixels go as it read them)
        return 0, False, False
    bits = directory.get(PIL.TiffImagePlugin.BITSPERSAMPLE, (0,))
    photometric = directory.get(PIL.TiffImagePlugin.PHOTOMETRIC_INTERPRETATION, 1)
    samples = directory.get(PIL.TiffImagePlugin.SAMPLESPERPIXEL, 1)
    colours = {0: 1, 1: 1, 2: 3}.get(photometric)  # (white or black is zero, RGB; palettes, YCbCr, Lab have none)
    return (bits[0] if isinstance(bits, tuple) else bits, colours is not None and samples > colours,
            photometric == 5 and samples == 4)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """RGB ``[H,W,3]`` of a picture in any of ``read_image``'s layouts."""
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else np.ascontiguousarray(image[..., :3])


def dehaze_picture(engine: Engine, image: np.ndarray) -> np.ndarray:
    """Dehaze one picture of ``read_image``'s layouts into the same layout: a grey one stays one grey channel (the
    engine keeps its channels equal), an alpha channel is carried over untouched."""
    out = engine.process_array(as_rgb(image)[None])[0]
    if image.ndim == 2:
        return out[..., 1]
    return np.concatenate([out, image[..., 3:]], axis=2) if image.shape[2] == 4 else out


def read_metadata(data: bytes, name: str) -> dict[int, bytes]:
    """The EXIF block and ICC profile of an image file's bytes (called ``name`` in messages), as far as it has
    them, keyed by OpenCV's metadata types; the EXIF without its orientation tag, since ``read_image`` returns the
    picture upright."""
    if is_heif(data):
        return _heif_metadata(data, name)
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            exif, icc = image.getexif(), image.info.get("icc_profile")
            exif.pop(ExifTags.Base.Orientation, None)
            if image.format == "TIFF":
                exif = _described(exif)
            blob = exif.tobytes() if len(exif) and image.format in ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "AVIF") \
                else b""
    except PIL.Image.DecompressionBombError as exc:  # (its limit is the process's: not ours to raise)
        log.warning("%s: its EXIF (its orientation too) and colour profile are not read: %s", name, exc)
        return {}
    except _PILLOW_CANNOT:  # Pillow cannot read it: the pixels, which OpenCV read, still go
        return {}
    found = {cv2.IMAGE_METADATA_EXIF: blob.removeprefix(b"Exif\x00\x00"), cv2.IMAGE_METADATA_ICCP: icc}
    return {kind: value for kind, value in found.items() if value}


def _heif_metadata(data: bytes, path: object) -> dict[int, bytes]:
    info = _open_heif(data, path).info
    exif = PIL.Image.Exif()
    if info.get("exif"):
        exif.load(info["exif"])
        exif.pop(ExifTags.Base.Orientation, None)
    found = {cv2.IMAGE_METADATA_EXIF: exif.tobytes().removeprefix(b"Exif\x00\x00") if len(exif) else b"",
             cv2.IMAGE_METADATA_ICCP: info.get("icc_profile")}
    return {kind: data for kind, data in found.items() if data}


# A TIFF's first IFD is its file structure (strip offsets, sizes, compression: meaningless elsewhere) as well as its
# description; these tags, and its EXIF and GPS IFDs, are what it says of the picture.
_DESCRIBES = (ExifTags.Base.ImageDescription, ExifTags.Base.Make, ExifTags.Base.Model, ExifTags.Base.Software,
              ExifTags.Base.DateTime, ExifTags.Base.Artist, ExifTags.Base.Copyright)


def _described(tiff: PIL.Image.Exif) -> PIL.Image.Exif:
    """The EXIF of a TIFF without its file structure."""
    kept = PIL.Image.Exif()
    for tag in _DESCRIBES:
        if tag in tiff:
            kept[tag] = tiff[tag]
    for ifd in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
        if found := tiff.get_ifd(ifd):
            kept.get_ifd(ifd).update(found)
    return kept


def write_image(path: Path, image: np.ndarray, metadata: dict[int, bytes] | None = None,
                lossy: bool = False) -> None:
    """Write a picture of ``read_image``'s layouts (uint8 or uint16) with ``metadata`` (``read_metadata``) where the
    format carries it. A 16-bit picture goes into an 8-bit format scaled to 8 bits; an alpha channel is dropped where
    the format has none (JPEG). ``lossy``: the picture came from a lossy file (``lossy_file``), and a WebP of it is
    lossy too (OpenCV's default, lossless, made a photo's WebP 16 times the size it came in)."""
    if image.dtype == np.uint16 and path.suffix.lower() not in HOLDS_16_BITS:
        image = (image / 257.0).round().astype(np.uint8)
    metadata = _fitting(path, image, metadata or {}) if path.suffix.lower() in KEEPS_METADATA else {}
    if path.suffix.lower() in HEIF_SUFFIXES:
        return _write_bytes(path, _encode_heif(path, image, metadata))
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else
                                                     cv2.COLOR_RGB2BGR)
    # A JPEG segment holds 64 KB: a larger colour profile (a printer's, a CMYK one) goes in numbered parts, which
    # OpenCV does not write, so it is added to the encoded file here, as the ICC specification lays them out.
    icc = metadata.pop(cv2.IMAGE_METADATA_ICCP) if _is_jpeg(path) and len(
        metadata.get(cv2.IMAGE_METADATA_ICCP, b"")) > _ICC_PART else None
    params = [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY] if lossy and path.suffix.lower() == ".webp" else []
    try:
        if metadata:
            ok, encoded = cv2.imencodeWithMetadata(path.suffix, bgr, list(metadata),
                                                   [np.frombuffer(data, np.uint8) for data in metadata.values()],
                                                   params)
        else:
            ok, encoded = cv2.imencode(path.suffix, bgr, params)
    except cv2.error as exc:  # (a size the format cannot hold, say)
        raise MediaError(f"cannot write image {path}: {exc.err}") from None
    if not ok:
        raise MediaError(f"cannot write image {path}: {path.suffix} cannot hold a {image.shape[1]}x{image.shape[0]} "
                         f"picture of {image.dtype}")
    _write_bytes(path, encoded.tobytes() if icc is None else _with_icc_parts(encoded.tobytes(), icc))


WEBP_QUALITY = 90  # a lossy WebP's (of 100); a lossless picture's WebP stays lossless


def lossy_file(start: bytes) -> bool:
    """Whether an image file, of which ``start`` is the first bytes, was compressed with loss: a JPEG, a lossy
    WebP (its picture in a ``VP8 `` chunk, not ``VP8L``), a HEIC or an AVIF."""
    if start[:4] == b"RIFF" and start[8:12] == b"WEBP":
        return b"VP8 " in start[12:] and b"VP8L" not in start[12:]
    return start[:2] == b"\xff\xd8" or is_heif(start) or start[4:12] in (b"ftypavif", b"ftypavis")


def _write_bytes(path: Path, data: bytes) -> None:
    try:
        with atomic_output(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:  # a full disk, a folder taken away: nothing is left half-written
        raise MediaError(f"writing {path} failed: {exc.strerror or exc}") from None


def _encode_heif(path: Path, image: np.ndarray, metadata: dict[int, bytes]) -> bytes:
    """A HEIC of a picture of ``read_image``'s layouts (16 bits a sample: 10 in the file), with ``metadata``."""
    mode = ("L" if image.ndim == 2 else "RGBA" if image.shape[2] == 4 else "RGB") + \
        (";16" if image.dtype == np.uint16 else "")
    try:
        heif = _heif().from_bytes(mode, (image.shape[1], image.shape[0]), np.ascontiguousarray(image).tobytes())
        if icc := metadata.get(cv2.IMAGE_METADATA_ICCP):
            heif.info["icc_profile"] = icc
        out = io.BytesIO()
        exif = metadata.get(cv2.IMAGE_METADATA_EXIF)
        heif.save(out, quality=HEIF_QUALITY, exif=b"Exif\x00\x00" + exif if exif else None)
    except (ValueError, RuntimeError) as exc:  # (libheif's errors: a size its encoder cannot take, say)
        raise MediaError(f"cannot write image {path}: {exc}") from None
    return out.getvalue()


_ICC_PART = 65519  # bytes of a profile one JPEG APP2 segment holds (65535, less its length and 14-byte header)


def _is_jpeg(path: Path) -> bool:
    return path.suffix.lower() in (".jpg", ".jpeg")


def _fitting(path: Path, image: np.ndarray, metadata: dict[int, bytes]) -> dict[int, bytes]:
    """The metadata the output can carry: a colour profile only for the pixels' own colour space (a CMYK photo's
    or a grey one's profile means nothing on RGB pixels), an EXIF block of a JPEG only up to its 64 KB."""
    kept = dict(metadata)
    icc = kept.get(cv2.IMAGE_METADATA_ICCP)
    grey = image.ndim == 2 and path.suffix.lower() != ".webp"  # (WebP stores grey as RGB)
    if icc is not None and icc[16:20] != (b"GRAY" if grey else b"RGB "):
        log.info("%s: the input's %s colour profile left out: the pixels are %s", path,
                 icc[16:20].decode("latin-1").strip(), "grey" if grey else "RGB")
        del kept[cv2.IMAGE_METADATA_ICCP]
    if _is_jpeg(path) and len(kept.get(cv2.IMAGE_METADATA_EXIF, b"")) > 65527:
        log.warning("%s: the input's EXIF (%d KB) left out: a JPEG holds 64 KB of it", path,
                    len(kept[cv2.IMAGE_METADATA_EXIF]) // 1024)
        del kept[cv2.IMAGE_METADATA_EXIF]
    return kept


def _with_icc_parts(jpeg: bytes, icc: bytes) -> bytes:
    """``jpeg`` with ``icc`` in numbered APP2 segments, after its JFIF and EXIF segments."""
    count = -(-len(icc) // _ICC_PART)
    segments = b"".join(
        b"\xff\xe2" + (16 + len(part)).to_bytes(2, "big") + b"ICC_PROFILE\x00" + bytes([n + 1, count]) + part
        for n, part in enumerate(icc[i:i + _ICC_PART] for i in range(0, len(icc), _ICC_PART)))
    at = 2  # after the start-of-image marker, and the APP0/APP1 segments that follow it
    while jpeg[at:at + 2] in (b"\xff\xe0", b"\xff\xe1"):
        at += 2 + int.from_bytes(jpeg[at + 2:at + 4], "big")
    return jpeg[:at] + segments + jpeg[at:]


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


class ImagesSkipped(MediaError):
    """A folder run that skipped images it could not read or write; ``written``: how many it wrote."""

    def __init__(self, message: str, written: int) -> None:
        super().__init__(message)
        self.written = written


def dehaze_image_file(engine: Engine, src: Path, dst: Path) -> None:
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise MediaError(f"cannot read image {src}: {exc.strerror}") from None
    _dehaze_image(engine, data, str(src), dst)


def _dehaze_image(engine: Engine, data: bytes, name: str, dst: Path) -> None:
    """The image file ``data`` (called ``name`` in messages) dehazed into ``dst``."""
    write_image(dst, dehaze_picture(engine, read_image(data, name)), read_metadata(data, name), lossy_file(data))


def dehaze_image_url(engine: Engine, url: str, dst: Path) -> int:
    """Dehaze the image at ``url`` (``is_image_url``) into the image file ``dst``; returns 1, the images written."""
    _check_image_output(dst)
    check_output(dst)
    _dehaze_image(engine, fetch_image(url), mask(url, url), dst)
    return 1


def _check_image_output(dst: Path) -> None:
    if not is_image(dst):
        raise UsageError(f"input is an image, so the output must be an image file "
                         f"({', '.join(sorted(IMAGE_SUFFIXES))}): {dst}")


def image_names(folder: Path) -> list[str]:
    """The names of the images a run of ``folder`` dehazes, sorted (a ``UsageError`` where there is none)."""
    # (not hidden files: a Mac's ._NAME.jpg beside each photo copied from it holds no picture)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and is_image(p) and not p.name.startswith("."))
    if not names:
        raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {folder}")
    return names


def _say_left_out(folder: Path, names: list[str], dst: Path) -> None:
    """Say what a folder run passes over: files that are not images (notes, a GIF, which is a video) and folders
    (not the output folder, where it is one of them)."""
    taken, out = set(names), dst.resolve()
    left = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
                  if p.name not in taken and not p.name.startswith(".") and p.resolve() != out)
    if left:
        log.info("%d left out of %s, not images: %s%s (streamdehaze batch takes videos and subfolders too)",
                 len(left), folder, ", ".join(left[:3]), ", ..." if len(left) > 3 else "")


def dehaze_images(engine: Engine, src: Path, dst: Path,
                  on_image: Callable[[int], None] | None = None) -> int:
    """Dehaze an image file or every image in a folder; returns the number of images written."""
    if src.is_dir():
        names = image_names(src)
        if any(Path(name).suffix.lower() in HEIF_SUFFIXES for name in names):
            _heif()  # (a missing package is said before anything is written)
        if dst.exists() and not dst.is_dir() or str(dst) == STDOUT:  # (- is standard output, not a folder's name)
            raise UsageError(f"input is a folder, so the output must be a folder too: {dst}")
        if dst.resolve() == src.resolve():
            raise UsageError(f"output folder {dst} is the input folder: refusing to overwrite the inputs")
        if not dst.parent.is_dir():
            raise UsageError(f"output folder's parent does not exist: {dst.parent}")
        try:
            dst.mkdir(exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot make output folder {dst}: {exc.strerror}") from None
        if not os.access(dst, os.W_OK):
            raise UsageError(f"cannot write to {dst}")
        remove_stale_partials(dst)
        _say_left_out(src, names, dst)
        bad = 0
        for done, name in enumerate(names):
            try:
                dehaze_image_file(engine, src / name, dst / name)
            except MediaError as exc:  # the others still get done
                log.error("%s; skipped", exc)
                bad += 1
            except KeyboardInterrupt:  # (each image is written whole or not at all)
                log.warning("%d of %d images are in %s", done - bad, len(names), dst)
                raise
            if on_image is not None:
                on_image(1)
        if bad:
            good = len(names) - bad
            raise ImagesSkipped(f"{bad} of {len(names)} images could not be read or written and were skipped "
                                f"(named above); the other {good} {'is' if good == 1 else 'are'} in {dst}", good)
        return len(names)
    _check_image_output(dst)
    check_output(dst, src)
    if src.stat().st_size == 0:  # (as a video file's)
        raise UsageError(f"input is empty: {src}")
    dehaze_image_file(engine, src, dst)
    if on_image is not None:
        on_image(1)
    return 1

"""Bridge between PyAV video frames and YUV planes as numpy arrays (no colour conversion on the host).

Planar YUV formats and NV12 (what hardware decoders such as NVDEC give) are read as zero-copy views, NV12's
interleaved chroma as two strided views; anything else (P010, RGB, grey, ...) is converted once by swscale to a
planar format. 9-16 bit samples are viewed as int16 (torch has no uint16 arithmetic).
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import ColorRange

from .colour import YUVFormat

# pixel format -> (subsampling (sx, sy), bits, full range)
PLANAR = {
    "yuv420p": ((2, 2), 8, False), "yuvj420p": ((2, 2), 8, True),
    "yuv422p": ((2, 1), 8, False), "yuvj422p": ((2, 1), 8, True),
    "yuv444p": ((1, 1), 8, False), "yuvj444p": ((1, 1), 8, True),
    "yuv420p10le": ((2, 2), 10, False), "yuv422p10le": ((2, 1), 10, False),
    "yuv444p10le": ((1, 1), 10, False), "yuv420p12le": ((2, 2), 12, False),
}

# Readable without conversion besides PLANAR: 8-bit 4:2:0 with U and V interleaved in one plane.
SEMIPLANAR = {"nv12": ((2, 2), 8, False)}

# AVColorSpace values -> our matrices (1 BT709, 5 BT470BG, 6 SMPTE170M, 9/10 BT2020).
_MATRIX = {1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020", 10: "bt2020"}
_AVCOL_RANGE_JPEG = 2


# our matrices -> swscale's
_SWSCALE = {"bt709": "ITU709", "bt601": "ITU601", "bt2020": "BT2020"}


def matrix_name(colorspace: int, height: int) -> str:
    """Our matrix for an AVColorSpace tag; untagged video gets what players assume: BT.709 for HD, else BT.601."""
    return _MATRIX.get(int(colorspace), "bt709" if height >= 720 else "bt601")


def to_image(frame: av.VideoFrame, bgr: bool = False, matrix: str | None = None) -> np.ndarray:
    """``frame`` as a uint8 ``[H,W,3]`` RGB image (BGR with ``bgr``), as coded (not turned: ``upright``), read with
    ``matrix`` (default: the one the engine reads the frame with, ``matrix_name``). PyAV's own default reads
    untagged HD as BT.601, which shifted a saturated colour by several levels from what the engine dehazed."""
    matrix = _SWSCALE[matrix or matrix_name(frame.colorspace, frame.height)]
    return frame.to_ndarray(format="bgr24" if bgr else "rgb24", src_colorspace=matrix)


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """``image`` (``[H,W,...]``) turned as a player shows it: ``rotation`` is ``VideoFrame.rotation``, the display
    matrix's counter-clockwise degrees (a phone's portrait video: -90), taken to the nearest quarter turn."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def sample_bits(frame: av.VideoFrame) -> int:
    """Bits per sample of ``frame``'s pixel format (8 for 8-bit video, 10 for P010 or yuv420p10le, ...)."""
    return max((c.bits for c in frame.format.components), default=8)


def chroma_subsampling(frame: av.VideoFrame) -> tuple[int, int]:
    """Luma samples across and down per chroma sample in ``frame``'s pixel format: (2, 2) for 4:2:0, (2, 1) for
    4:2:2, (1, 1) for 4:4:4, RGB and grey."""
    width, height = frame.format.chroma_width(64), frame.format.chroma_height(64)
    return 64 // width, 64 // height


def to_planar(frame: av.VideoFrame) -> av.VideoFrame:
    """Return ``frame`` in a format ``planes_of`` reads (PLANAR or SEMIPLANAR), converting with swscale only when
    needed."""
    fmt = frame.format
    if fmt.name in PLANAR or fmt.name in SEMIPLANAR:
        return frame
    deep = max(c.bits for c in fmt.components) > 8
    if not fmt.is_rgb and fmt.chroma_width(64) == 32 and fmt.chroma_height(64) == 32:
        target = "yuv420p10le" if deep else "yuv420p"  # NV12, P010, YUVA420P, ...: keep 4:2:0
    else:
        target = "yuv444p10le" if deep else "yuv444p"  # RGB, grey and the rest: no chroma loss
    # swscale converts RGB with BT.601 unless told; ask for the matrix this frame will be read with (it is tagged)
    matrix = _SWSCALE[matrix_name(frame.colorspace, frame.height)] if fmt.is_rgb else None
    if not fmt.is_rgb and not any(c.is_chroma for c in fmt.components):
        # Grey: swscale reads it as full range whatever its tag, and squeezed a limited-range picture into 16-235 a
        # second time (blacks lifted). Passed through unscaled, its tag put back; untagged grey stays full range
        # (PNG, TIFF and most grey sources are).
        out = frame.reformat(format=target, src_color_range=ColorRange.JPEG, dst_color_range=ColorRange.JPEG)
        out.color_range = frame.color_range or ColorRange.JPEG
    else:
        out = frame.reformat(format=target, dst_colorspace=matrix)
    out.pts = frame.pts
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out


def yuv_format(frame: av.VideoFrame) -> YUVFormat:
    """Colour interpretation of a PLANAR or SEMIPLANAR frame from its tags (matrix, range) and pixel format."""
    subsampling, bits, full = PLANAR.get(frame.format.name) or SEMIPLANAR[frame.format.name]
    matrix = matrix_name(frame.colorspace, frame.height)
    full = full or int(frame.color_range) == _AVCOL_RANGE_JPEG
    return YUVFormat(matrix=matrix, full_range=full, bits=bits, subsampling=subsampling)


def planes_of(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U, V planes of a PLANAR or SEMIPLANAR frame, cropped to their visible size."""
    if frame.format.name in SEMIPLANAR:
        luma, chroma = frame.planes
        y = np.frombuffer(luma, np.uint8).reshape(luma.height, luma.line_size)[:, : luma.width]
        uv = np.frombuffer(chroma, np.uint8).reshape(chroma.height, chroma.line_size)[:, : 2 * chroma.width]
        return y, uv[:, 0::2], uv[:, 1::2]
    bits = PLANAR[frame.format.name][1]
    dtype = np.uint8 if bits == 8 else np.int16
    size = np.dtype(dtype).itemsize
    return tuple(  # type: ignore[return-value]
        np.frombuffer(p, dtype).reshape(p.height, p.line_size // size)[:, : p.width] for p in frame.planes
    )


def frame_from_planes(y: np.ndarray, u: np.ndarray, v: np.ndarray, pix_fmt: str) -> av.VideoFrame:
    """New PLANAR frame of format ``pix_fmt`` holding copies of the given planes."""
    frame = av.VideoFrame(y.shape[1], y.shape[0], pix_fmt)
    bits = PLANAR[pix_fmt][1]
    dtype = np.uint8 if bits == 8 else np.int16
    size = np.dtype(dtype).itemsize
    for plane, data in zip(frame.planes, (y, u, v)):
        view = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // size)
        view[:, : plane.width] = data
    return frame

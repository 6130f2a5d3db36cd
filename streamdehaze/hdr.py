"""HDR10's static metadata: the mastering display (SMPTE ST 2086: its primaries, white point and luminance) and the
content light levels (CTA-861.3: MaxCLL, MaxFALL). Read from the input's decoded frames, where FFmpeg puts them
whether they came in the stream (HEVC's SEI) or the container (MP4's mdcv/clli, Matroska's); written by the
encoders that take them as options (x265, SVT-AV1), since PyAV sets no output side data."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction

import av


@dataclass(frozen=True)
class HDR10:
    """``display``: red, green, blue and white (x, y) chromaticities, then (max, min) luminance in cd/m², or None;
    ``light``: (MaxCLL, MaxFALL) in cd/m², or None."""

    display: tuple[tuple[Fraction, Fraction], ...] | None = None
    light: tuple[int, int] | None = None


_MASTERING = av.sidedata.sidedata.Type.MASTERING_DISPLAY_METADATA
_LIGHT = av.sidedata.sidedata.Type.CONTENT_LIGHT_LEVEL


def hdr10_of(frame: av.VideoFrame) -> HDR10 | None:
    """What ``frame`` says of its mastering display and light levels; None where it says neither."""
    display = light = None
    for item in frame.side_data:  # (PyAV 18.1.0 yields the side data; 18.1.1, a mapping, their types)
        data = item if isinstance(item, av.sidedata.sidedata.SideData) else frame.side_data[item]
        if data.type == _MASTERING and data.buffer_size >= 88:
            # AVMasteringDisplayMetadata: 11 AVRationals (r, g, b, white as x, y; min, max), has_primaries,
            # has_luminance.
            ints = struct.unpack("=22i", bytes(data)[:88])
            values = [Fraction(n, d) if d else Fraction(0) for n, d in zip(ints[0:22:2], ints[1:22:2])]
            if ints[20] and ints[21]:  # (an encoder takes the whole of it or none)
                r, g, b, white = (tuple(values[i:i + 2]) for i in range(0, 8, 2))
                display = (r, g, b, white, (values[9], values[8]))
        elif data.type == _LIGHT and data.buffer_size >= 8:
            light = struct.unpack("=2I", bytes(data)[:8])
    return None if display is None and light is None else HDR10(display, light)


# Each encoder's option, its names for the two parts, and its units: x265 counts chromaticities in steps of 0.00002
# and luminance in steps of 0.0001 cd/m²; SVT-AV1 takes decimals.
_WRITTEN = {
    "libx265": ("x265-params", "master-display", "max-cll", lambda xy: str(round(xy * 50000)),
                lambda cd: str(round(cd * 10000))),
    "libsvtav1": ("svtav1-params", "mastering-display", "content-light", lambda xy: f"{float(xy):.5f}",
                  lambda cd: f"{float(cd):.4f}"),
}
WRITERS = tuple(_WRITTEN)  # the encoders that write it, by preference


def encoder_options(hdr: HDR10, codec: str) -> dict[str, str]:
    """``hdr`` as ``codec``'s own parameters (``x265-params``, ``svtav1-params``: to be merged with others); empty
    for an encoder that takes none."""
    if codec not in _WRITTEN:
        return {}
    option, display, light, xy, cd = _WRITTEN[codec]
    parts = []
    if hdr.display is not None:
        red, green, blue, white, (high, low) = hdr.display
        points = "".join(f"{name}({xy(x)},{xy(y)})" for name, (x, y) in zip(("G", "B", "R", "WP"),
                                                                             (green, blue, red, white)))
        parts.append(f"{display}={points}L({cd(high)},{cd(low)})")
    if hdr.light is not None:
        parts.append(f"{light}={hdr.light[0]},{hdr.light[1]}")
    return {option: ":".join(parts)} if parts else {}

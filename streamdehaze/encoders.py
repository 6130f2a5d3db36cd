"""Video encoders: their quality settings, checked against the encoder that will use them before anything opens (a
camera connection can take seconds, and x264 prints its own complaint about a bad preset), and the encoding a run
writes with: encoder, options, pixel format and colour levels."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import av

from . import hwaccel
from .colour import YUVFormat
from .errors import UsageError
from .formats import held
from .frames import PLANAR, matrix_name
from .hdr import HDR10, WRITERS, encoder_options
from .sources import VideoInfo

log = logging.getLogger("streamdehaze")

DEFAULT_CRF = 18

# x264's own preset list (x264_preset_names), which x265 shares; FFmpeg passes the name through unchecked.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")


class Quality(NamedTuple):
    """An encoder's constant-quality range and its speed settings."""

    crf: tuple[int, int]  # best .. smallest
    presets: tuple[str, ...] | None = None
    default_preset: str | None = None  # None: the encoder's own
    preset_option: str = "preset"  # the FFmpeg option --preset sets
    always: dict[str, str] = {}


QUALITY = {
    "libx264": Quality((0, 51), X264_PRESETS, "veryfast"),
    # x265 prints a banner of 20 lines to the terminal itself, past FFmpeg's log level: errors only
    "libx265": Quality((0, 51), X264_PRESETS, "veryfast", always={"x265-params": "log-level=error"}),
    # libvpx's speed (0 slowest .. 8) and row-based threading: its own defaults (speed 1, no row threads) encode a
    # real 720p clip at 6.5 fps on 2 cores, these at 13.8 fps for 2 % more bytes (BENCHMARKS.md, "WebM").
    "libvpx-vp9": Quality((0, 63), tuple(str(n) for n in range(9)), "4", "cpu-used", {"row-mt": "1"}),
    "libaom-av1": Quality((0, 63)),
    # (SVT-AV1 takes crf 0 for "not set": its own default, 35)
    "libsvtav1": Quality((1, 63), tuple(str(n) for n in range(14))),  # 0 slowest .. 13 fastest
}


def encoder(name: str) -> av.Codec:
    """The encoder FFmpeg uses for ``name``: an encoder's name, or a codec's (``h264``: libx264)."""
    try:
        codec = av.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        raise UsageError(f"unknown video encoder {name!r} (try libx264, libx265, libvpx-vp9, mpeg4)") from None
    if codec.type != "video":
        raise UsageError(f"{name!r} is not a video encoder")
    return codec


def quality_options(codec: str, crf: int | None = None, preset: str | None = None,
                    option: str = "--{} {}") -> dict[str, str]:
    """FFmpeg options setting ``codec``'s constant quality (``crf``, default 18) and speed (``preset``; x264 and
    x265 default to veryfast). A value the encoder does not take is a UsageError naming the ones it does.
    ``option`` is how messages name a setting: ``--crf 99`` on the command line, ``crf=99`` for the Python API."""
    codec = encoder(codec).name  # (h264: libx264's settings)
    known = QUALITY.get(codec)
    if known is None:
        for key, value in (("crf", crf), ("preset", preset)):
            if value is not None:
                takes = [name for name, q in QUALITY.items()
                         if name in av.codecs_available and (key == "crf" or q.presets)]  # (this build's)
                raise UsageError(f"{option.format(key, '').strip(' =')} does not apply to {codec}; encoders that "
                                 f"take it: {', '.join(takes)}")
        return {}
    (low, high), presets = known.crf, known.presets
    crf = DEFAULT_CRF if crf is None else crf
    if not low <= crf <= high:
        raise UsageError(f"{option.format('crf', crf)} is out of range for {codec}: {low} (best) to {high} (smallest)")
    options = {"crf": str(crf), **known.always}
    if preset is not None and presets is None:
        raise UsageError(f"{option.format('preset', '').strip(' =')} does not apply to {codec}")
    if preset is not None and preset not in presets:
        raise UsageError(f"unknown {option.format('preset', repr(preset))} for {codec}; choose one of "
                         f"{', '.join(presets)}")
    if preset or known.default_preset:
        options[known.preset_option] = preset or known.default_preset
    return options


# H.264 at 10 bits (High 10) plays on few decoders (no browser, phone or GPU decodes it), so these stay at 8 bits.
_EIGHT_BITS_ONLY = {"libx264", "libx264rgb", "h264_nvenc"}
_HDR_TRANSFERS = {16, 18}  # AVColorTransferCharacteristic: SMPTE ST 2084 (PQ), ARIB STD-B67 (HLG)


def choose_pix_fmt(codec: av.Codec, width: int, height: int, bits: int = 8,
                   subsampling: tuple[int, int] = (2, 2)) -> str:
    """yuv420p where possible (plays everywhere); yuv444p when the size is odd (4:2:0 needs even sizes). A deeper
    input (``bits`` > 8: HEVC Main10, HDR) is written at 10 bits by the encoders that take them, except H.264's.
    An intra-only or lossless codec (FFV1, ProRes, DNxHD, MJPEG: masters and intermediates, as FFmpeg describes
    them) keeps the input's chroma (``subsampling``: (2, 1) for 4:2:2) where it takes it; the inter-frame codecs of
    delivery (H.264, HEVC, VP9, AV1) write 4:2:0, the one every player decodes."""
    supported = [f.name for f in codec.video_formats or []]
    odd = width % 2 or height % 2
    kept = subsampling if codec.intra_only or not codec.lossy else (2, 2)
    layouts = [(1, 1)] if odd else list(dict.fromkeys([kept, (2, 2), (2, 1), (1, 1)]))
    depths = (10, 8) if bits > 8 and codec.name not in _EIGHT_BITS_ONLY else (8, 10)
    preference = [name for depth in depths for layout in layouts for name, (sub, b, full) in PLANAR.items()
                  if (sub, b, full) == (layout, depth, False)]
    for name in preference:
        if name in supported:
            return name
    fallback = [name for name in supported if name in PLANAR and PLANAR[name][0] == (1, 1)] if odd else \
        [name for name in supported if name in PLANAR]
    if not fallback:
        raise UsageError(f"codec {codec.name} takes none of the planar YUV formats streamdehaze writes"
                         + (f" at the odd size {width}x{height}" if odd else ""))
    return fallback[0]


def output_format(info: VideoInfo, pix_fmt: str, full_range: bool = False) -> YUVFormat:
    """How dehazed frames are written: the input's colour matrix, limited range (``full_range`` for JPEG's
    encoders), ``pix_fmt``'s layout."""
    subsampling, bits, _ = PLANAR[pix_fmt]
    matrix = matrix_name(info.colour.get("colorspace", 2), info.height)
    return YUVFormat(matrix=matrix, full_range=full_range, bits=bits, subsampling=subsampling)


# Encoders that take full-range YUV only: JPEG's levels (limited range is "non-standard" to MJPEG's encoder).
_FULL_RANGE_ONLY = {"mjpeg"}


@dataclass(frozen=True)
class Encoding:
    """How a sink encodes: the encoder, its options, and the planes it takes (``pix_fmt``, ``yuv_format``). Chosen
    once for a run, so that its segments and reconnections all encode alike (and a GPU is probed once)."""
    codec: av.Codec
    options: dict[str, str]
    pix_fmt: str
    yuv_format: YUVFormat


def quality_of(encoding: Encoding) -> tuple[int | None, str | None]:
    """The constant quality (crf; NVENC's cq) and speed preset ``encoding`` encodes with, None where it has none."""
    known = QUALITY.get(encoding.codec.name)
    crf = encoding.options.get("crf", encoding.options.get("cq"))
    return (None if crf is None else int(crf)), encoding.options.get(known.preset_option if known else "preset")


# Encoders whose 10-bit video plays widely, by preference (where this FFmpeg's build writes 10 bits with them).
_TEN_BITS = ("libx265", "libsvtav1", "libvpx-vp9", "libaom-av1")


def _with_hdr10(options: dict[str, str], hdr: HDR10, codec: str, muxer: str) -> dict[str, str]:
    """``options`` with the input's mastering display and light levels for ``codec``, added to its own parameters;
    said where it takes none (PyAV writes no container side data: only the encoder can)."""
    added = encoder_options(hdr, codec)
    if not added:
        takes = held(WRITERS, muxer)
        log.warning("the input's HDR10 mastering display and light levels are not written by %s%s", codec,
                    f" (--codec {takes[0]} writes them)" if takes else "")
    return {**options, **{key: ":".join(p for p in (options.get(key), value) if p) for key, value in added.items()}}


def _say_eight_bits(info: VideoInfo, codec: str, muxer: str) -> None:
    """One warning for deeper input that ``codec`` writes in 8 bits: what is lost with them (HDR shows banding;
    HDR10's metadata goes too, which only 10-bit encoders write), and an encoder ``muxer`` holds that keeps it."""
    deeper = [e for e in held(_TEN_BITS, muxer)
              if PLANAR[choose_pix_fmt(encoder(e), info.width, info.height, info.bits)][1] > 8]
    both = info.hdr10 is not None and [e for e in deeper if e in WRITERS]
    keeps = f" (--codec {both[0]} keeps both)" if both else f" (--codec {deeper[0]} keeps 10 bits)" if deeper else ""
    lost = ", and without its HDR10 mastering display and light levels" if info.hdr10 is not None else ""
    hdr = info.colour.get("color_trc") in _HDR_TRANSFERS
    log.warning("the input is %svideo in %d bits; %s writes it in 8%s%s%s", "HDR " if hdr else "", info.bits, codec,
                ", which shows banding" if hdr else "", lost, keeps)


def choose_encoding(info: VideoInfo, codec: str = "libx264", crf: int | None = None, preset: str | None = None,
                    live: bool = False, nvenc: hwaccel.Nvidia | None = None, muxer: str = "matroska") -> Encoding:
    """``nvenc``: encode libx264/libx265 output with that GPU's encoder instead, where it opens (a warning where it
    does not; an error if it is required). ``muxer``: the output's, for the encoder an HDR warning suggests (Matroska
    holds them all)."""
    spec = encoder(codec)
    options = quality_options(codec, crf, preset)
    if nvenc:  # NVENC is probed in 8 bits, the only depth our planes give it
        pix_fmt = choose_pix_fmt(spec, info.width, info.height)
        hardware = hwaccel.encoder(codec, int(options.get("crf", 18)), options.get("preset", ""), live,
                                   info.width, info.height, pix_fmt, nvenc)
        if hardware is not None:
            spec, options = encoder(hardware[0]), hardware[1]
    pix_fmt = choose_pix_fmt(spec, info.width, info.height, info.bits, info.subsampling)
    if info.bits > 8 and PLANAR[pix_fmt][1] == 8:
        _say_eight_bits(info, spec.name, muxer)
    elif info.hdr10 is not None and PLANAR[pix_fmt][1] > 8:
        options = _with_hdr10(options, info.hdr10, spec.name, muxer)
    return Encoding(spec, options, pix_fmt, output_format(info, pix_fmt, spec.name in _FULL_RANGE_ONLY))

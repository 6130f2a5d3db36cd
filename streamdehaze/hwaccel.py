"""NVIDIA hardware video through FFmpeg: NVDEC decoding and NVENC encoding, falling back to software.

``--hwaccel auto`` uses them when the engine runs on CUDA and FFmpeg can open the GPU; ``cuda`` insists (a usage
error where it cannot); ``none`` stays in software. Decoded frames come back to host memory, where the engine
takes its planes; the encoder gets libx264's rate control (``crf`` -> constant quality) and a matching preset.
"""

from __future__ import annotations

import functools
import logging
from fractions import Fraction

import av
import torch
from av.codec.hwaccel import HWAccel

from .errors import UsageError

log = logging.getLogger("streamdehaze")

MODES = ("auto", "none", "cuda")

# Software encoder -> its NVENC counterpart; x264/x265 presets -> NVENC's p1 (fastest) .. p7 (best).
_NVENC = {"libx264": "h264_nvenc", "libx265": "hevc_nvenc"}
_PRESETS = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p4", "medium": "p5",
            "slow": "p6", "slower": "p7", "veryslow": "p7", "placebo": "p7"}
_ERRORS = (av.FFmpegError, OSError, ValueError)


@functools.lru_cache(maxsize=1)
def nvdec_available() -> bool:
    """Whether FFmpeg can open a CUDA device for decoding (drivers present, a GPU visible)."""
    try:
        HWAccel("cuda").create(av.Codec("h264", "r"))
    except _ERRORS:
        return False
    return True


@functools.lru_cache(maxsize=16)
def nvenc_available(name: str, width: int, height: int, pix_fmt: str) -> bool:
    """Whether the NVENC encoder ``name`` opens for this frame size and format (a throwaway context)."""
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = width, height, pix_fmt, Fraction(1, 25)
        ctx.open()
    except _ERRORS:
        return False
    return True


def use_cuda(mode: str, device: torch.device) -> bool:
    """Resolve ``--hwaccel`` for a run on ``device``: True to decode with NVDEC and encode with NVENC."""
    if mode not in MODES:
        raise UsageError(f"unknown --hwaccel {mode!r}; choose {', '.join(MODES)}")
    if mode == "none" or (mode == "auto" and device.type != "cuda"):
        return False
    if nvdec_available():
        return True
    if mode == "cuda":
        raise UsageError("--hwaccel cuda: FFmpeg cannot open an NVIDIA GPU here (use --hwaccel auto or none)")
    log.info("no NVDEC/NVENC here: decoding and encoding in software")
    return False


def decoder() -> HWAccel:
    """NVDEC for ``av.open``; streams NVDEC cannot decode stay in software."""
    return HWAccel("cuda", allow_software_fallback=True)


def encoder(codec: str, crf: int, preset: str, live: bool, width: int, height: int,
            pix_fmt: str) -> tuple[str, dict[str, str]] | None:
    """``(nvenc codec, options)`` standing in for software ``codec``, or None when there is none or it will not
    open (the caller keeps ``codec``)."""
    name = _NVENC.get(codec)
    if name is None or name not in av.codecs_available:
        return None
    if not nvenc_available(name, width, height, pix_fmt):
        log.info("%s does not open for %dx%d %s: encoding with %s", name, width, height, pix_fmt, codec)
        return None
    options = {"rc": "vbr", "cq": str(crf), "b": "0", "preset": _PRESETS.get(preset, "p4")}
    if live:
        options.update(tune="ll", zerolatency="1", **{"forced-idr": "1"})
    return name, options

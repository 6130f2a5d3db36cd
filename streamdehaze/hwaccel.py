"""NVIDIA hardware video through FFmpeg: NVDEC decoding and NVENC encoding, falling back to software.

``--hwaccel auto`` uses them when the engine runs on CUDA and FFmpeg can open the GPU, and says so whenever one of
them falls back to software; ``cuda`` insists on both (a usage error where NVDEC cannot open the GPU, or where the
codec has an NVENC counterpart that does not open: an A100, H100 or H200 has NVDEC and no NVENC); ``none`` stays
in software. Both use the engine's GPU (``--device cuda:N``) and its primary CUDA context, so that FFmpeg makes no
second context beside torch's. Decoded frames come back to host memory, where the engine takes its planes; the
encoder gets libx264's rate control (``crf`` -> constant quality) and a matching preset.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from fractions import Fraction

import av
import torch
from av.codec.hwaccel import HWAccel

from .defaults import HWACCEL_MODES
from .errors import UsageError

log = logging.getLogger("streamdehaze")


# Software encoder -> its NVENC counterpart; x264/x265 presets -> NVENC's p1 (fastest) .. p7 (best).
_NVENC = {"libx264": "h264_nvenc", "libx265": "hevc_nvenc"}
_PRESETS = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p4", "medium": "p5",
            "slow": "p6", "slower": "p7", "veryslow": "p7", "placebo": "p7"}
# PyAV raises NotImplementedError where a codec has no hardware configuration for the device.
_ERRORS = (av.FFmpegError, OSError, ValueError, NotImplementedError)
# FFmpeg's CUDA device options: use the device's primary context (torch's) instead of creating another.
_DEVICE_OPTIONS = {"primary_ctx": "1"}


@dataclass(frozen=True)
class Nvidia:
    """NVDEC and NVENC on CUDA device ``index``; ``required``: a fallback to software is an error (``cuda``)."""

    index: int = 0
    required: bool = False


@functools.lru_cache(maxsize=8)
def nvdec_available(index: int = 0) -> bool:
    """Whether FFmpeg can open CUDA device ``index`` for decoding (drivers present, the GPU visible)."""
    try:
        HWAccel("cuda", device=str(index), options=dict(_DEVICE_OPTIONS)).create(av.Codec("h264", "r"))
    except _ERRORS:
        return False
    return True


@functools.lru_cache(maxsize=16)
def nvenc_available(name: str, width: int, height: int, pix_fmt: str, index: int = 0) -> bool:
    """Whether the NVENC encoder ``name`` opens on GPU ``index`` for this frame size and format (a throwaway
    context). False on GPUs without NVENC (A100, H100, H200)."""
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = width, height, pix_fmt, Fraction(1, 25)
        ctx.options = {"gpu": str(index)}
        ctx.open()
    except _ERRORS:
        return False
    return True


def use_cuda(mode: str, device: torch.device, codec: str = "libx264") -> Nvidia | None:
    """Resolve ``--hwaccel`` for a run on ``device`` that encodes with ``codec``: NVDEC and NVENC on the
    engine's GPU, or None for software. ``cuda`` checks both now, before anything starts."""
    if mode not in HWACCEL_MODES:
        raise UsageError(f"unknown --hwaccel {mode!r}; choose {', '.join(HWACCEL_MODES)}")
    if mode == "none" or (mode == "auto" and device.type != "cuda"):
        return None
    index = device.index if device.type == "cuda" and device.index is not None else 0
    if not nvdec_available(index):
        if mode == "cuda":
            raise UsageError("--hwaccel cuda: FFmpeg cannot open an NVIDIA GPU here (use --hwaccel auto or none)")
        log.info("no NVDEC/NVENC here: decoding and encoding in software")
        return None
    name = _NVENC.get(codec)
    if mode == "cuda" and name is not None and not (name in av.codecs_available
                                                    and nvenc_available(name, 256, 144, "yuv420p", index)):
        raise UsageError(f"--hwaccel cuda: {name} does not open on this GPU (A100, H100 and H200 have no NVENC); "
                         f"use --hwaccel auto to decode with NVDEC and encode with {codec}")
    return Nvidia(index, required=mode == "cuda")


def check_nvenc_codec(codec: str, device: torch.device) -> None:
    """A ``UsageError`` where ``codec`` is an NVENC encoder (``--codec h264_nvenc``) that opens on no GPU here: said
    before a model loads, and not blamed on the output's format (the trial write's "cannot be written with")."""
    if not codec.endswith("_nvenc"):
        return
    index = device.index if device.type == "cuda" and device.index is not None else 0
    if not nvenc_available(codec, 256, 144, "yuv420p", index):
        software = {nvenc: name for name, nvenc in _NVENC.items()}.get(codec)
        raise UsageError(f"--codec {codec} needs an NVIDIA GPU with NVENC, and none is usable here (A100, H100 and "
                         f"H200 have no NVENC)" + (f"; use --codec {software}" if software else ""))


def decoder(nvidia: Nvidia) -> HWAccel:
    """NVDEC for ``av.open`` on the engine's GPU. No silent fallback: a stream whose hardware decoder fails to start
    fails to decode, and the source reopens it in software, saying so (``sources.py``)."""
    return HWAccel("cuda", device=str(nvidia.index), allow_software_fallback=False, options=dict(_DEVICE_OPTIONS))


def encoder(codec: str, crf: int, preset: str, live: bool, width: int, height: int,
            pix_fmt: str, nvidia: Nvidia | None = None) -> tuple[str, dict[str, str]] | None:
    """``(nvenc codec, options)`` standing in for software ``codec``, or None when there is none or it will not
    open (the caller keeps ``codec``; a warning says so, and with ``nvidia.required`` it is a ``UsageError``)."""
    nvidia = nvidia or Nvidia()
    name = _NVENC.get(codec)
    if name is None:
        return None
    if name not in av.codecs_available or not nvenc_available(name, width, height, pix_fmt, nvidia.index):
        message = f"{name} does not open for {width}x{height} {pix_fmt} on this GPU"
        if nvidia.required:
            raise UsageError(f"--hwaccel cuda: {message} (use --hwaccel auto to encode with {codec})")
        log.warning("%s: encoding with %s", message, codec)
        return None
    options = {"rc": "vbr", "cq": str(crf), "b": "0", "preset": _PRESETS.get(preset, "p4"), "gpu": str(nvidia.index)}
    if live:
        options.update(tune="ll", zerolatency="1", **{"forced-idr": "1"})
    return name, options

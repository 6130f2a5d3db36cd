"""Video encoders and their quality settings, checked against the encoder that will use them before anything
opens: a camera connection can take seconds, and x264 prints its own complaint about a bad preset."""

from __future__ import annotations

from typing import NamedTuple

import av

from .errors import UsageError

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


def quality_options(codec: str, crf: int | None = None, preset: str | None = None) -> dict[str, str]:
    """FFmpeg options setting ``codec``'s constant quality (``crf``, default 18) and speed (``preset``; x264 and
    x265 default to veryfast). A value the encoder does not take is a UsageError naming the ones it does."""
    codec = encoder(codec).name  # (h264: libx264's settings)
    known = QUALITY.get(codec)
    if known is None:
        for option, value in (("--crf", crf), ("--preset", preset)):
            if value is not None:
                raise UsageError(f"{option} does not apply to {codec}; encoders that take it: "
                                 f"{', '.join(name for name, q in QUALITY.items() if option == '--crf' or q.presets)}")
        return {}
    (low, high), presets = known.crf, known.presets
    crf = DEFAULT_CRF if crf is None else crf
    if not low <= crf <= high:
        raise UsageError(f"--crf {crf} is out of range for {codec}: {low} (best) to {high} (smallest)")
    options = {"crf": str(crf), **known.always}
    if preset is not None and presets is None:
        raise UsageError(f"--preset does not apply to {codec}")
    if preset is not None and preset not in presets:
        raise UsageError(f"unknown --preset {preset!r} for {codec}; choose one of {', '.join(presets)}")
    if preset or known.default_preset:
        options[known.preset_option] = preset or known.default_preset
    return options

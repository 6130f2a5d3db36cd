"""Frames to planes: NV12 (what NVDEC gives) is read in place, with the same samples as planar 4:2:0; RGB is
converted with the matrix it is then read with."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import torch

from streamdehaze.colour import YUVFormat, yuv_to_rgb
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


def test_rgb_video_keeps_its_colour_at_every_size(run_cli, tmp_path):
    # An RGB recording (FFV1, PNG in MOV, an image sequence): swscale turns it into YUV with BT.601 unless told,
    # while 720 lines and more are read as BT.709. At --strength 0 the output must be the input's colour.
    colour = (200, 120, 60)
    for width, height in ((640, 480), (1280, 720)):
        src, out = tmp_path / f"rgb{height}.mkv", tmp_path / f"out{height}.mkv"
        with av.open(str(src), "w") as oc:
            stream = oc.add_stream("ffv1", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
            for i in range(2):
                frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), colour, np.uint8), format="rgb24")
                frame.pts = i
                oc.mux(stream.encode(frame.reformat(format="bgr0")))
            oc.mux(stream.encode(None))
        code, err = run_cli(src, out, "--model", "dcp", "--strength", "0", "--codec", "ffv1")
        assert code == 0, err
        with av.open(str(out)) as c:
            frame = next(c.decode(video=0))
        planes = [torch.from_numpy(p.astype(np.float32))[None] for p in planes_of(frame)]
        rgb = yuv_to_rgb(*planes, yuv_format(frame))[0].mean((1, 2)) * 255
        assert np.abs(rgb.numpy() - colour).max() < 1.5, (height, rgb)


def test_grey_video_keeps_its_levels_whatever_its_range():
    """swscale reads grey as full range whatever its tag: a limited-range monochrome camera came out with its black
    lifted from 16 to 30 and its white lowered from 235 to 218, even at --strength 0. Untagged grey is full range,
    as FFmpeg takes it (PNG, TIFF)."""
    for fmt, levels in (("gray", (16, 126, 235)), ("gray10le", (64, 504, 940))):
        dtype = np.uint8 if fmt == "gray" else np.uint16
        for tag in (1, 2, 0):  # limited, full, untagged
            frame = av.VideoFrame.from_ndarray(np.array([levels * 4] * 4, dtype), format=fmt)
            frame.color_range = tag
            out = to_planar(frame)
            y, u, v = planes_of(out)
            assert y[0, :3].tolist() == list(levels) and np.all(u == u[0, 0]) and np.all(v == u[0, 0]), (fmt, tag)
            assert yuv_format(out).full_range == (tag != 1), (fmt, tag)
            neutral = 128 if fmt == "gray" else 512
            assert u[0, 0] == neutral, (fmt, tag, u[0, 0])


def test_a_limited_range_grey_file_at_strength_0_keeps_its_black_and_white(run_cli, tmp_path):
    src, out = tmp_path / "mono.mkv", tmp_path / "out.mkv"
    ramp = np.tile(np.linspace(16, 235, 64).round().astype(np.uint8), (48, 1))
    with av.open(str(src), "w") as oc:
        stream = oc.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "gray"
        stream.codec_context.color_range = 1  # a monochrome camera's limited range
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(ramp, format="gray")
            frame.pts, frame.color_range = i, 1
            oc.mux(stream.encode(frame))
        oc.mux(stream.encode(None))
    code, err = run_cli(src, out, "--model", "dcp", "--strength", "0", "--codec", "ffv1")
    assert code == 0, err
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0))
    y = planes_of(to_planar(frame))[0].astype(int)
    assert not yuv_format(frame).full_range and np.abs(y - ramp).max() <= 1, (y[0, [0, -1]], frame.format.name)

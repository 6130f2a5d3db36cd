"""YUV <-> RGB on tensors agrees with FFmpeg's swscale and round-trips."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from streamdehaze.colour import YUVFormat, rgb_to_yuv, yuv_to_rgb
from streamdehaze.frames import frame_from_planes, planes_of, to_planar, yuv_format


@pytest.mark.parametrize("pix_fmt, colorspace", [("yuv444p", "ITU709"), ("yuv444p", "ITU601")])
def test_matches_swscale(hazy_image, pix_fmt, colorspace):
    rgb = hazy_image(3, 64, 48)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt, dst_colorspace=colorspace)
    frame.colorspace = {"ITU709": 1, "ITU601": 6}[colorspace]
    y, u, v = (torch.from_numpy(p.copy())[None] for p in planes_of(frame))
    ours = yuv_to_rgb(y, u, v, yuv_format(frame))[0].permute(1, 2, 0).numpy() * 255
    theirs = frame.to_ndarray(format="rgb24", src_colorspace=colorspace).astype(np.float32)
    assert np.abs(ours - theirs).max() <= 3.0  # swscale rounds in fixed point


@pytest.mark.parametrize("fmt", [YUVFormat(), YUVFormat("bt601", True, 8, (1, 1)),
                                 YUVFormat("bt2020", False, 10, (2, 1))])
def test_round_trip(fmt):
    y = torch.randint(70, 180, (2, 31, 47), dtype=torch.int16 if fmt.bits > 8 else torch.uint8) * (4 if fmt.bits > 8 else 1)
    sx, sy = fmt.subsampling
    cshape = (2, -(-31 // sy), -(-47 // sx))
    base = 512 if fmt.bits > 8 else 128
    u = torch.full(cshape, base, dtype=y.dtype)
    v = torch.full(cshape, base + 8, dtype=y.dtype)
    y2, u2, v2 = rgb_to_yuv(yuv_to_rgb(y, u, v, fmt), fmt)
    assert (y2.int() - y.int()).abs().max() <= 1
    assert (u2.int() - u.int()).abs().max() <= 1 and (v2.int() - v.int()).abs().max() <= 1


def test_planes_to_frame_and_back_odd_size():
    y = np.random.randint(0, 255, (7, 9), np.uint8)
    u = np.random.randint(0, 255, (4, 5), np.uint8)
    v = np.random.randint(0, 255, (4, 5), np.uint8)
    frame = frame_from_planes(y, u, v, "yuv420p")
    for a, b in zip(planes_of(frame), (y, u, v)):
        assert np.array_equal(a, b)


def test_non_planar_input_is_converted():
    rgb = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")
    frame = rgb.reformat(format="p010le")  # 10-bit semi-planar: converted, keeping 4:2:0 and the bit depth
    frame.pts = 5
    out = to_planar(frame)
    assert out.format.name == "yuv420p10le" and out.pts == 5
    rgb.pts = 6
    out = to_planar(rgb)  # RGB: no chroma loss
    assert out.format.name == "yuv444p" and out.pts == 6


@pytest.mark.parametrize("fmt, size", [(YUVFormat(), (18, 32)), (YUVFormat("bt2020", False, 10, (2, 1)), (18, 32)),
                                       (YUVFormat(), (17, 30))])
def test_small_rgb_is_the_area_average(fmt, size):
    """The model's small input: float32 on a CPU takes OpenCV's area resize where the shrink is a whole factor of
    both sides, float64 takes torch's pooling; both give the same averages (a ragged size takes torch's path)."""
    gen = torch.Generator().manual_seed(0)
    dtype = torch.int16 if fmt.bits > 8 else torch.uint8
    peak = (1 << fmt.bits) - 1
    sx, sy = fmt.subsampling
    y = torch.randint(0, peak + 1, (2, 72, 128), generator=gen).to(dtype)
    u, v = (torch.randint(0, peak + 1, (2, 72 // sy, 128 // sx), generator=gen).to(dtype) for _ in range(2))
    fast = yuv_to_rgb(y, u, v, fmt, size=size)
    exact = yuv_to_rgb(y, u, v, fmt, dtype=torch.float64, size=size)
    assert fast.dtype == torch.float32 and fast.shape == (2, 3, *size)
    assert (fast.double() - exact).abs().max() < 1e-5  # float32 rounding: 0.003 of a level
    if fmt.bits == 8 and size == (18, 32):  # a whole factor: each pixel is the mean of its 4x4 block of luma
        grey = yuv_to_rgb(y, torch.full_like(u, 128), torch.full_like(v, 128), fmt, size=size)
        block = y.double().view(2, 18, 4, 32, 4).mean((2, 4))
        expected = ((block - 16) * 255 / 219 / 255).clamp(0, 1)
        assert (grey[:, 1].double() - expected).abs().max() < 1e-5

"""The full-resolution guided apply: the OpenCV CPU path and the torch path give the same samples."""

from __future__ import annotations

import pytest
import torch

from streamdehaze.colour import YUVFormat
from streamdehaze.filters import box_filter
from streamdehaze.guided import apply_planes, plane_coefficients


def _case(height: int, width: int, fmt: YUVFormat, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sx, sy = fmt.subsampling
    ch, cw = -(-height // sy), -(-width // sx)
    top = (1 << fmt.bits) - 1
    dtype = torch.uint8 if fmt.bits == 8 else torch.int16
    planes = tuple(torch.randint(0, top + 1, (2, *size), generator=g).to(dtype)
                   for size in ((height, width), (ch, cw), (ch, cw)))
    # Smooth, haze-like coefficients at a quarter of the size: gains 1-3, offsets that push some samples
    # below 0 and above the peak, so clamping is exercised too.
    small = (max(1, height // 4), max(1, width // 4))
    a = 1 + 2 * box_filter(torch.rand(2, 1, *small, generator=g), 2)
    b = box_filter(torch.rand(2, 3, *small, generator=g), 2) - 0.8
    return planes, plane_coefficients(a, b, fmt, fmt)


@pytest.mark.parametrize("size,fmt", [((72, 128), YUVFormat()),
                                      ((73, 129), YUVFormat(full_range=True)),  # odd: partial chroma cells
                                      ((64, 96), YUVFormat(subsampling=(1, 1))),
                                      ((48, 80), YUVFormat(bits=10))])
def test_opencv_path_matches_torch(size, fmt):
    planes, coefficients = _case(*size, fmt)
    fast = apply_planes(planes, coefficients, fmt, opencv=True)
    reference = apply_planes(planes, coefficients, fmt, opencv=False)
    peak = (1 << fmt.bits) - 1
    for f, r in zip(fast, reference):
        assert f.dtype == r.dtype and f.shape == r.shape
        diff = (f.int() - r.int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.01  # rounding of nearly equal floats only
        assert f.min() >= 0 and f.max() <= peak
    # The case really clamps: some samples sit at 0 and at the peak.
    assert (reference[0] == 0).any() and (reference[0] == peak).any()


def test_cpu_default_is_opencv_only_when_layouts_match():
    fmt = YUVFormat()
    planes, coefficients = _case(72, 128, fmt)
    assert all(torch.equal(a, b) for a, b in zip(apply_planes(planes, coefficients, fmt),
                                                 apply_planes(planes, coefficients, fmt, opencv=True)))
    # 4:4:4 planes into a 4:2:0 layout need the pooling of the torch path.
    planes444, coefficients444 = _case(72, 128, YUVFormat(subsampling=(1, 1)))
    out = apply_planes(planes444, coefficients444, fmt)
    assert out[1].shape[-2:] == (36, 64)

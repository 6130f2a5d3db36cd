"""The dark channel prior really dehazes, and its filters are exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamdehaze.filters import box_filter, min_filter
from streamdehaze.models.dcp import DarkChannelPrior


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / F.mse_loss(a, b)))


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_dcp_gains_3db_on_synthetic_haze(name):
    import skimage.data as data
    clean = torch.from_numpy(getattr(data, name)()[..., :3].copy()).permute(2, 0, 1)[None].float() / 255
    h, w = clean.shape[-2:]
    depth = torch.linspace(1.0, 0.2, h).view(1, 1, h, 1).expand(1, 1, h, w)  # farther towards the top
    t = torch.exp(-1.5 * depth)
    hazy = clean * t + torch.tensor([0.85, 0.86, 0.9]).view(1, 3, 1, 1) * (1 - t)
    with torch.inference_mode():
        out = DarkChannelPrior()(hazy)
    assert out.shape == hazy.shape and out.min() >= 0 and out.max() <= 1
    assert _psnr(out, clean) >= _psnr(hazy, clean) + 3.0


def test_dcp_odd_size_and_batch():
    x = torch.rand(3, 3, 37, 53)
    out = DarkChannelPrior()(x)
    assert out.shape == x.shape
    assert torch.allclose(out[1:2], DarkChannelPrior()(x[1:2]), atol=1e-6)  # batch items are independent


@pytest.mark.parametrize("radius", [1, 2, 5, 8])
def test_min_filter_is_exact_erosion(radius):
    x = torch.rand(2, 3, 29, 41)
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    assert torch.equal(min_filter(x, radius), -F.max_pool2d(-padded, 2 * radius + 1, stride=1))


@pytest.mark.parametrize("opencv", [True, False])
@pytest.mark.parametrize("radius", [1, 3, 9, 40])  # 40: the window is wider than the image
def test_box_filter_is_windowed_mean(radius, opencv):
    x = torch.rand(1, 2, 33, 27, dtype=torch.float64)
    ref = F.avg_pool2d(F.pad(x, (radius,) * 4), 2 * radius + 1, stride=1) * (2 * radius + 1) ** 2 / \
        F.avg_pool2d(F.pad(torch.ones_like(x), (radius,) * 4), 2 * radius + 1, stride=1) / (2 * radius + 1) ** 2
    assert torch.allclose(box_filter(x, radius, opencv=opencv), ref, atol=1e-10)


@pytest.mark.parametrize("radius", [1, 20])
def test_box_filter_float32_is_accurate_to_a_few_ulps(radius):
    """Guided filters subtract box means of products, so the sums must not drift (no float32 prefix-sum error)."""
    x = 0.6 + 1e-3 * torch.rand(1, 1, 270, 480, dtype=torch.float64)
    exact = box_filter(x, radius)
    for opencv in (True, False):
        assert (box_filter(x.float(), radius, opencv=opencv).double() - exact).abs().max() < 2e-7


def test_dcp_reduces_dark_channel_on_real_fog(shared_data):
    import av
    with av.open(str(shared_data / "real_video" / "dvd_fog_1080p.mp4")) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        out = DarkChannelPrior()(x)
    dark_in = min_filter(x.amin(1, keepdim=True), 7).mean()
    dark_out = min_filter(out.amin(1, keepdim=True), 7).mean()
    assert dark_out < 0.5 * dark_in  # the haze veil (a bright dark channel) is largely removed
    assert np.isfinite(out.numpy()).all()

"""Losses: zero for identical images, gradients, the contrastive ratio, the temporal term, VGG19 loading."""

from __future__ import annotations

import pytest
import torch

from training.cli import UsageError
from training.losses import (ContrastiveLoss, airlight_kept, charbonnier, dark_channel, fog_left, gaussian_distance,
                             l1, load_vgg19_features, ms_ssim, ms_ssim_loss, temporal_loss, warp)

from .conftest import scene


def _pair(seed: int = 0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.stack([torch.from_numpy(scene(i, size, size)).permute(2, 0, 1).float() / 255 for i in range(2)])
    output = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    return output, target


@pytest.mark.parametrize("loss", [l1, charbonnier, ms_ssim_loss])
def test_pixel_losses_are_zero_for_identical_images_and_have_gradients(loss):
    output, target = _pair()
    assert torch.allclose(loss(target, target), torch.zeros(2), atol=1e-6)
    output.requires_grad_(True)
    value = loss(output, target)
    assert value.shape == (2,) and (value > 1e-3).all()
    value.sum().backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


def test_ms_ssim_matches_the_reference_implementation():
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    output, target = _pair(size=192)
    ours = ms_ssim(output, target, scales=5)
    reference = pytorch_msssim.ms_ssim(output, target, data_range=1.0, size_average=False)
    assert torch.allclose(ours, reference, atol=2e-3)


def test_ms_ssim_uses_fewer_scales_on_small_crops():
    output, target = _pair(size=48)  # 48 px: 3 scales at most with an 11-px window
    assert torch.isfinite(ms_ssim(output, target)).all()
    assert torch.allclose(ms_ssim(output, target), ms_ssim(output, target, scales=3))


@pytest.fixture(scope="module")
def features(random_vgg):
    return load_vgg19_features(random_vgg)


def test_vgg19_loading_and_missing_file(features, random_vgg, tmp_path):
    saved = torch.load(random_vgg, weights_only=True)
    assert torch.equal(features[28].weight, saved["features.28.weight"])  # conv5_1, loaded exactly
    assert not any(p.requires_grad for p in features.parameters())
    assert len(features) == 30 and not features.training
    with pytest.raises(UsageError, match="vgg19-dcbb9e9d.pth.*contrastive = 0"):
        load_vgg19_features(tmp_path / "nowhere" / "vgg19-dcbb9e9d.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(UsageError, match="not a torchvision VGG19"):
        load_vgg19_features(bad)


def test_contrastive_ratio_falls_from_hazy_input_to_ground_truth(features):
    loss = ContrastiveLoss(features)
    _, clean = _pair(size=32)
    hazy = 0.5 * clean + 0.45  # a flat veil over the scene
    values = [loss(torch.lerp(hazy, clean, a), clean, hazy).mean().item() for a in (0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] < 1e-6
    output = torch.lerp(hazy, clean, 0.5).requires_grad_(True)
    loss(output, clean, hazy).sum().backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


def test_gaussian_distance_is_bounded_and_zero_only_for_equal_features():
    a = torch.randn(3, 8, 5, 5)
    assert torch.equal(gaussian_distance(a, a), torch.zeros(3))
    near, far = gaussian_distance(a, a + 0.5), gaussian_distance(a, a + 3)
    assert (near < far).all() and (far < 1).all() and (far > 0.98).all()
    assert torch.equal(gaussian_distance(a, a + 1e3), torch.ones(3))  # saturates: outliers cannot dominate


def test_temporal_loss_is_zero_for_a_consistent_sequence_and_grows_with_flicker():
    size = 48
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=(size + 8, size + 8),
                                           mode="bicubic", align_corners=True)
    prev, cur = base[..., 4:4 + size, 4:4 + size], base[..., 4:4 + size, 6:6 + size]  # camera moved 2 px right
    flow = torch.zeros(2, 2, size, size)
    flow[:, 0] = 2.0  # pixel p of `cur` shows what `prev` had at p + (2, 0)
    assert temporal_loss(prev, cur, flow).max() < 1e-6
    assert temporal_loss(prev, cur, torch.zeros_like(flow)).min() > 1e-3  # wrong flow: not consistent
    flicker = [temporal_loss(prev, cur * (1 + a), flow).mean().item() for a in (0.02, 0.05, 0.1)]
    assert flicker[0] > 1e-3 and flicker[0] < flicker[1] < flicker[2]
    cur = cur.clone().requires_grad_(True)
    temporal_loss(prev, cur * 1.05, flow).sum().backward()
    assert cur.grad.abs().sum() > 0


def test_warp_masks_points_outside_the_frame():
    image = torch.rand(1, 3, 16, 16)
    flow = torch.zeros(1, 2, 16, 16)
    flow[:, 0] = 4.0
    warped, inside = warp(image, flow)
    assert torch.allclose(warped[..., :, :12], image[..., :, 4:], atol=1e-6)
    assert inside[..., :, :12].all() and not inside[..., :, 13:].any()


def test_dark_channel_is_the_patch_minimum_of_the_darkest_colour():
    image = torch.full((2, 3, 32, 32), 0.8)
    image[0, 1, 16, 16] = 0.1  # one dark green pixel darkens its whole 5x5 neighbourhood's dark channel
    dark = dark_channel(image, radius=2)
    assert dark.shape == (2, 1, 32, 32) and (dark[1] == 0.8).all()
    assert dark[0, 0, 14:19, 14:19].eq(0.1).all() and dark[0].sum() == pytest.approx(0.8 * 1024 - 0.7 * 25)


def _hazy(t: float = 0.4, airlight: tuple[float, float, float] = (0.8, 0.8, 0.8)) -> tuple[torch.Tensor, ...]:
    clean = torch.from_numpy(scene(5, 64, 64)).permute(2, 0, 1)[None].float() / 255
    a = torch.tensor(airlight).view(1, 3, 1, 1)
    return clean, clean * t + a * (1 - t), a


def test_fog_left_asks_for_the_priors_haze_removal_and_no_more():
    import kanet

    _, hazy, _ = _hazy(t=0.4)
    identity = kanet.transform.split(torch.zeros(1, 5, 16, 16))
    assert fog_left(identity[0], hazy, 3).item() > 0.9  # doing nothing leaves the fog: gain 1, the prior's 1/0.33
    half = fog_left(torch.full((1, 2, 16, 16), 2.5), hazy, 3).item()
    assert 0 < half < 0.5 * fog_left(identity[0], hazy, 3).item()
    assert fog_left(torch.full((1, 2, 16, 16), 5.0), hazy, 3).item() == 0  # 1 / t_min: never asked for more
    clean, _, _ = _hazy(t=1.0)
    assert fog_left(identity[0], clean, 3).item() < 0.7 * fog_left(identity[0], hazy, 3).item()  # less to remove


def test_airlight_kept_is_zero_for_the_haze_model_and_counts_a_cast():
    import kanet

    _, hazy, a = _hazy(airlight=(0.7, 0.75, 0.8))
    gain = torch.full((1, 2, 8, 8), 2.5)  # J = (I - A) / t + A with t = 0.4: the fog's colour is a fixed point
    offset = (a * (1 - 2.5)).expand(1, 3, 8, 8)
    estimated = airlight_kept(hazy, gain, offset, 3)
    assert estimated.item() < 0.05
    blue = offset + torch.tensor([0.0, 0.0, 0.1]).view(1, 3, 1, 1)  # a blue cast added to everything
    assert airlight_kept(hazy, gain, blue, 3).item() > estimated.item() + 0.03
    darker = kanet.transform.split(torch.zeros(1, 5, 8, 8))
    darker = (darker[0], darker[1] - 0.3)  # the sky (the fog's colour) pushed darker
    assert airlight_kept(hazy, *darker, 3).item() == pytest.approx(0.3, abs=1e-5)

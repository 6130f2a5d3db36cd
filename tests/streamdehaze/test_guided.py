"""The full-resolution guided apply: the OpenCV CPU path and the torch path give the same samples; flat regions' gains
damped under a noise floor."""

from __future__ import annotations

import pytest
import torch

import kanet

from streamdehaze.colour import YUVFormat
from streamdehaze.filters import box_filter
from streamdehaze.guided import (SHADOW_SHARE, apply_planes, damp_flat_regions, keep_shadows, plane_coefficients,
                                 smooth_transform)


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


def _flat_and_textured(seed: int = 0) -> torch.Tensor:
    """A 256x512 grey frame: the left half flat but for noise of 0.5 levels, the right half a texture of about
    30 levels."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.full((1, 3, 256, 512), 0.6)
    rgb[..., :256] += torch.randn(1, 1, 256, 256, generator=g) * 0.5 / 255
    rgb[..., 256:] += box_filter(torch.randn(1, 1, 256, 256, generator=g), 1) * 40 / 255
    return rgb


@pytest.mark.parametrize("form", [1, 2])  # one shared gain, or luma and chroma gains
def test_damp_flat_regions_spares_texture_and_keeps_the_lift(form):
    rgb = _flat_and_textured()
    # a transform that lifts fog (gain 2, offset -0.5) and also makes a fine pattern of its own
    gain, offset = torch.full((1, form, 256, 512), 2.0), torch.full((1, 3, 256, 512), -0.5)
    offset += torch.randn(1, 3, 256, 512, generator=torch.Generator().manual_seed(1)) / 255
    damped, refit = damp_flat_regions(rgb, gain, offset, floor=1 / 255)
    flat, textured = (slice(32, 224), slice(32, 224)), (slice(32, 224), slice(288, 480))
    assert damped[..., flat[0], flat[1]].max() < 1.1 and damped[..., textured[0], textured[1]].min() > 1.9
    before, after = kanet.transform.apply(rgb, gain, offset), kanet.transform.apply(rgb, damped, refit)
    # textured: the transform as it was; flat: the lift is kept (each neighbourhood's mean output), but the
    # output is as smooth as the input (noise 0.5 levels), not amplified (2 x 0.5 and 1 level of its own)
    assert (before - after)[..., textured[0], textured[1]].abs().max() < 2 / 255
    assert (box_filter(before - after, 8)[..., flat[0], flat[1]]).abs().max() < 1 / 255
    noise_out = (after - box_filter(after, 4))[..., flat[0], flat[1]].std()
    noise_in = (rgb - box_filter(rgb, 4))[..., flat[0], flat[1]].std()
    assert noise_out < 1.2 * noise_in, (noise_out * 255, noise_in * 255)


def test_damp_flat_regions_at_floor_zero_changes_nothing():
    rgb = _flat_and_textured()
    rgb[..., :64, :64] = 0.5  # exactly flat: no 0 / 0
    gain, offset = torch.full((1, 2, 256, 512), 2.0), torch.full((1, 3, 256, 512), -0.5)
    damped, refit = damp_flat_regions(rgb, gain, offset, floor=0.0)
    assert torch.equal(damped, gain) and torch.equal(refit, offset)


def test_keep_shadows_lifts_only_what_would_go_black():
    """A dark building under haze (left: 0.30 with a blue tinge) that the transform (gain 2.2, offsets -0.66: the
    airlight taken off) takes below 0, beside a bright sky it lifts as it should (right): the building keeps
    ``SHADOW_SHARE`` of its darkest channel, by the same rise in every channel (no tint); the sky keeps its
    transform."""
    rgb = torch.full((1, 3, 64, 128), 0.8)
    rgb[:, :, :, :64] = torch.tensor([0.29, 0.30, 0.33]).reshape(1, 3, 1, 1)
    gain, offset = torch.full((1, 2, 64, 128), 2.2), torch.full((1, 3, 64, 128), -0.66)
    before = kanet.transform.apply(rgb, gain, offset)
    lifted = keep_shadows(rgb, gain, offset)
    after = kanet.transform.apply(rgb, gain, lifted)
    building, sky = (..., slice(None), slice(0, 48)), (..., slice(None), slice(80, 128))
    assert before[building].amin() < 0 and after[building].amin(1).min() >= SHADOW_SHARE * 0.29 - 1e-6
    rise = lifted - offset
    assert torch.allclose(rise[:, :1], rise[:, 1:2]) and torch.allclose(rise[:, :1], rise[:, 2:])
    assert torch.equal(after[sky], before[sky])


def test_smooth_transform_takes_the_grid_off_flat_regions_and_keeps_edges():
    """A network's maps with a checker of its 4-pixel patches on them: over a flat sky (top) they come out flat; a
    step in them where the picture steps (a dark building under the sky) stays a step."""
    rgb = torch.full((1, 3, 64, 96), 0.8)
    rgb[..., 40:, :] = 0.3
    checker = ((torch.arange(64)[:, None] // 4 + torch.arange(96) // 4) % 2).float() * 0.2 - 0.1
    gain = torch.where(torch.arange(64)[:, None] >= 40, 3.0, 1.5).expand(1, 2, 64, 96) + checker
    offset = torch.where(torch.arange(64)[:, None] >= 40, -0.6, -0.2).expand(1, 3, 64, 96) + checker
    smooth_gain, smooth_offset = smooth_transform(rgb, gain, offset)
    sky, building = (..., slice(4, 34), slice(4, 92)), (..., slice(46, 60), slice(4, 92))
    for before, after in ((gain, smooth_gain), (offset, smooth_offset)):
        assert before[sky].std() > 0.09 and after[sky].std() < 0.01
        assert after[building].std() < 0.01
    assert torch.allclose(smooth_gain[..., 34, 48], torch.tensor(1.5), atol=0.02)
    assert torch.allclose(smooth_gain[..., 46, 48], torch.tensor(3.0), atol=0.02)
    assert torch.allclose(smooth_offset[..., 46, 48], torch.tensor(-0.6), atol=0.02)


def test_a_flat_sky_comes_out_without_the_network_s_grid(monkeypatch):
    """The shipped network leaves a grid of its patches in its maps; through the engine, a smooth sky (no noise, no
    detail) came out with a 16-pixel checker and bands of 1.5 levels, as plain as the picture's own detail there."""
    import numpy as np

    from streamdehaze import Dehazer, engine

    h, w = 360, 640
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    sky = torch.stack((0.80 - 0.15 * y, 0.78 - 0.12 * y, 0.72 - 0.1 * y + 0.05 * x), -1)
    image = (sky * 255).round().byte().numpy()

    def fine(out: np.ndarray) -> float:  # its structure from 4 to 24 pixels across
        luma = torch.from_numpy(out.astype(np.float32).mean(2))[None, None]
        return float((box_filter(luma, 2) - box_filter(luma, 12))[..., 20:-20, 20:-20].std())

    smoothed = fine(Dehazer(temporal="off", device="cpu")(image))
    monkeypatch.setattr(engine, "smooth_transform", lambda rgb, gain, offset: (gain, offset))
    assert smoothed < 0.75 * fine(Dehazer(temporal="off", device="cpu")(image))


def test_a_privacy_mask_stays_black_and_lifts_nothing_around_it():
    """A black rectangle (a camera's privacy mask, a letterbox) in a hazy scene: the shipped network's offsets take
    it below zero, which the shadow floor took for a crushed shadow: the mask came out grey (15 levels here) and the
    rise spread around it."""
    import cv2
    import numpy as np

    from streamdehaze import Dehazer

    noise = np.random.default_rng(0).uniform(0, 1, (360, 640, 3)).astype(np.float32)
    texture = (cv2.GaussianBlur(noise, (0, 0), 3) - 0.5) * 4  # blotches, mostly within +-0.5
    image = np.clip((0.55 + 0.35 * texture) * 255, 0, 255).round().astype(np.uint8)  # lifted, low contrast: haze
    image[100:220, 200:400] = 0
    out = Dehazer(temporal="off", device="cpu")(image)
    assert out[100:220, 200:400].max() <= 2


def test_the_engine_keeps_the_shadows_of_a_network_s_transform():
    from torch import nn

    from streamdehaze.engine import Engine

    class Crushing(nn.Module):  # a coefficient model that takes the airlight off too dark a building
        def forward(self, rgb: torch.Tensor) -> torch.Tensor:
            return kanet.transform.apply(rgb, *self.coefficients(rgb))

        def coefficients(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            b, _, h, w = rgb.shape
            return torch.full((b, 2, h, w), 2.2), torch.full((b, 3, h, w), -0.66)

    rgb = torch.full((1, 3, 64, 128), 0.29)
    gain, offset = Engine(Crushing(), "cpu", infer_size=None, noise_floor=0).coefficients(rgb)
    assert kanet.transform.apply(rgb, gain, offset).min() >= SHADOW_SHARE * 0.29 - 1e-6


def test_a_grey_frame_with_a_coloured_caption_is_still_grey():
    """An infrared camera's night picture with its name burnt in in yellow (2 % of the frame): taken for a colour
    frame, its offsets kept the airlight's colour and tinted the whole picture."""
    from streamdehaze.guided import grey_stays_grey

    rgb = torch.rand(1, 1, 72, 128, generator=torch.Generator().manual_seed(0)).expand(1, 3, 72, 128).clone()
    rgb[:, :, 2:8, 4:34] = torch.tensor([0.9, 0.85, 0.1]).reshape(1, 3, 1, 1)  # the caption
    offset = torch.tensor([-0.30, -0.31, -0.27]).reshape(1, 3, 1, 1).expand(1, 3, 72, 128)
    greyed = grey_stays_grey(rgb, offset)
    assert torch.allclose(greyed[:, :1], greyed[:, 1:2]) and torch.allclose(greyed[:, :1], greyed[:, 2:])
    colour = rgb.clone()
    colour[:, :, 20:50, 40:90] *= torch.tensor([1.0, 0.8, 0.6]).reshape(1, 3, 1, 1)  # a colour frame stays one
    assert torch.equal(grey_stays_grey(colour, offset), offset)

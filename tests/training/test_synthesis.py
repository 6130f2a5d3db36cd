"""Hazy imaging model: ranges, determinism, depth dependence, random fields and pseudo-depth."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from training.depth import pseudo_depth
from training.fields import pixel_coords, sample_field
from training.synthesis import HazeConfig, render_haze, sample_haze_params, synthesize_haze

from .conftest import scene


def _images(n: int = 4) -> torch.Tensor:
    return torch.stack([torch.from_numpy(scene(i)).permute(2, 0, 1).float() / 255 for i in range(n)])


def test_output_ranges_and_shapes():
    clean = _images()
    result = synthesize_haze(clean, torch.Generator().manual_seed(0))
    assert result.hazy.shape == clean.shape and result.hazy.dtype == clean.dtype
    assert result.hazy.min() >= 0 and result.hazy.max() <= 1
    assert result.transmission.min() > 0 and result.transmission.max() <= 1
    assert result.airlight.min() >= 0 and result.airlight.max() <= 1
    assert result.depth.min() >= 0 and result.depth.max() <= 1
    # haze lowers contrast: the hazy images are flatter than the clean ones
    assert result.hazy.std(dim=(2, 3)).mean() < clean.std(dim=(2, 3)).mean()


def test_parameters_stay_in_their_ranges():
    config = HazeConfig()
    params = sample_haze_params(512, torch.Generator().manual_seed(3), config)
    for name in ("exposure", "gamma", "thickness", "near", "depth_gamma", "density_sigma", "scatter_blur"):
        lo, hi = getattr(config, name)
        values = getattr(params, name)
        assert values.min() >= lo and values.max() <= hi, name
        assert values.max() - values.min() > 0.5 * (hi - lo), name  # the range is actually used
    assert params.airlight.max() <= config.airlight[1] + 1e-6 and params.airlight.min() >= 0.6
    q = params.jpeg_quality[params.jpeg]
    assert q.min() >= config.jpeg_quality[0] and q.max() <= config.jpeg_quality[1]
    assert 0.55 < params.jpeg.float().mean() < 0.85


def test_deterministic_under_a_seed():
    clean = _images()
    a = synthesize_haze(clean, torch.Generator().manual_seed(7)).hazy
    b = synthesize_haze(clean, torch.Generator().manual_seed(7)).hazy
    c = synthesize_haze(clean, torch.Generator().manual_seed(8)).hazy
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-2


def test_haze_thickens_with_distance():
    clean = torch.full((2, 3, 64, 64), 0.2)
    depth = torch.linspace(0, 1, 64).view(1, 1, 64, 1).expand(2, 1, 64, 64).flip(2)  # far at the top
    config = dataclasses.replace(HazeConfig(), density_sigma=(0.0, 0.0))
    params = sample_haze_params(2, torch.Generator().manual_seed(1), config)
    result = render_haze(clean, depth, params, torch.Generator().manual_seed(1), config=config)
    rows = result.transmission.mean(dim=(0, 1, 3))
    assert torch.all(rows[:-1] <= rows[1:] + 1e-6)  # transmission grows towards the (near) bottom
    assert result.hazy[..., :8, :].mean() > result.hazy[..., -8:, :].mean() + 0.05  # far rows whiter


def test_random_fields_are_normalised_and_drift_coherently():
    field = sample_field(64, torch.Generator().manual_seed(0), max_speed=0.05)
    coords = pixel_coords(48, 48)
    values = field(coords)
    assert values.shape == (64, 1, 48, 48)
    assert abs(values.mean().item()) < 0.15 and 0.6 < values.var().item() < 1.4
    # drift: the field at time t equals the field at time 0 shifted by velocity * t
    shifted = coords - field.velocity[:, None, None, :] * 3.0
    assert torch.allclose(field(coords, 3.0), field(shifted, 0.0), atol=1e-5)


def test_pseudo_depth_prefers_far_sky_at_the_top():
    clean = _images()
    depth = pseudo_depth(clean)
    assert depth.shape == (4, 1, 96, 128)
    assert depth.min() >= 0 and depth.max() <= 1
    assert (depth[..., :20, :].mean(dim=(1, 2, 3)) > depth[..., -20:, :].mean(dim=(1, 2, 3)) + 0.3).all()
    assert torch.equal(depth, pseudo_depth(clean))


@pytest.mark.cuda
def test_synthesis_runs_on_cuda_and_matches_cpu_draws():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    clean = _images()
    cpu = synthesize_haze(clean, torch.Generator().manual_seed(4)).hazy
    gpu = synthesize_haze(clean.cuda(), torch.Generator().manual_seed(4)).hazy  # CPU generator: same draws
    assert gpu.is_cuda and (gpu.cpu() - cpu).abs().mean() < 5e-3
    on_device = synthesize_haze(clean.cuda(), torch.Generator("cuda").manual_seed(4)).hazy
    assert on_device.is_cuda and on_device.min() >= 0 and on_device.max() <= 1


def test_clear_days_leave_the_picture_to_the_camera():
    clean = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    config = HazeConfig(clear_p=1.0, noise_p=0.0, jpeg_p=0.0, camera_blur_p=0.0)
    result = synthesize_haze(clean, torch.Generator().manual_seed(2), config=config)
    assert torch.allclose(result.hazy, clean, atol=1e-5) and (result.transmission == 1).all()
    # without clear days, a configuration draws what it always drew
    a = sample_haze_params(4, torch.Generator().manual_seed(3))
    b = sample_haze_params(4, torch.Generator().manual_seed(3), HazeConfig(clear_p=0.0))
    assert torch.equal(a.thickness, b.thickness) and torch.equal(a.jpeg_quality, b.jpeg_quality)
    some = sample_haze_params(400, torch.Generator().manual_seed(3), HazeConfig(clear_p=0.25))
    assert 0.15 < (some.thickness == 0).float().mean() < 0.35

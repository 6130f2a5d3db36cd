"""Metrics: PSNR/SSIM, and the warping error on videos with known motion and injected flicker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cv2

from training.metrics import (colour_cast, crushed_shadows, detail_retention, fade_density, flicker_against_stretch,
                              occlusion_mask, optical_flow, psnr, ssim, stretch_curve, video_flow, warping_error)

from .conftest import scene


def _video(frames: int = 5, shift: int = 2) -> list[np.ndarray]:
    """A scene panning ``shift`` px per frame."""
    big = scene(4, 96, 160)
    return [np.ascontiguousarray(big[:, t * shift:t * shift + 128]) for t in range(frames)]


def test_psnr_and_ssim():
    a = scene(0)
    assert psnr(a, a).item() == 100.0 and ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(a.astype(np.int16) + np.random.default_rng(0).integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
    assert 25 < psnr(noisy, a).item() < 40 and ssim(noisy, a).item() < 0.99
    t = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    assert torch.allclose(psnr(t, t * 0.9), psnr(a, (a * 0.9).round().astype(np.uint8)), atol=0.2)


def test_flow_follows_the_pan_and_the_mask_flags_consistent_pixels():
    frames = _video()
    flow = optical_flow(frames[0], frames[1])
    centre = flow[20:-20, 20:-20]
    assert abs(np.median(centre[..., 0]) - 2.0) < 0.3 and abs(np.median(centre[..., 1])) < 0.3
    mask = occlusion_mask(flow, optical_flow(frames[1], frames[0]))
    assert mask.mean() > 0.8


def test_warping_error_is_small_for_consistent_video_and_grows_with_flicker():
    frames = _video()
    consistent = warping_error(frames, frames)
    gains = [1.0, 1.1, 0.9, 1.1, 0.9]
    flicker = [np.clip(f * g, 0, 255).astype(np.uint8) for f, g in zip(frames, gains)]
    strong = [np.clip(f * (1 + 2 * (g - 1)), 0, 255).astype(np.uint8) for f, g in zip(frames, gains)]
    assert consistent < 2e-3
    assert warping_error(frames, flicker) > 5 * consistent
    assert warping_error(frames, strong) > warping_error(frames, flicker)
    assert len(warping_error(frames, frames, per_frame=True)) == 4
    assert warping_error(frames, frames, method="farneback") < 3e-3
    with pytest.raises(ValueError):
        warping_error(frames, frames[:2])


def test_fade_is_optional_and_ranks_fog():
    pytest.importorskip("pyfade")
    clean = scene(1, 160, 160)
    foggy = (clean * 0.4 + 0.6 * 230).astype(np.uint8)
    assert fade_density(foggy) > fade_density(clean)


def test_colour_cast_measures_a_tint_not_a_brightness_change():
    grey = np.full((32, 48, 3), 160, np.uint8)
    assert colour_cast(grey, grey) == 0.0
    assert colour_cast(grey, (grey * 0.6).astype(np.uint8)) < 0.5  # darker, still grey
    blue = grey.copy()
    blue[..., 2] = 190
    assert colour_cast(grey, blue) > 10.0  # blue on grey fog: b* moves
    assert colour_cast(blue, grey) == pytest.approx(colour_cast(grey, blue), rel=0.05)


def test_detail_retention_keeps_scaled_detail_and_loses_smeared_detail():
    image = scene(3, 128, 160)
    same = detail_retention(image, image)
    assert same["retention"] == pytest.approx(1.0, abs=1e-4) and same["gain"] == pytest.approx(1.0)
    stretched = np.clip(image.astype(np.float32) * 1.6 - 70, 0, 255).round().astype(np.uint8)
    kept = detail_retention(image, stretched)  # a local contrast gain, as dehazing does: detail kept, amplified
    assert kept["retention"] > 0.9 and kept["gain"] > 1.4  # (clipping at black and white loses a little)
    smeared = cv2.resize(cv2.resize(image, (40, 32), interpolation=cv2.INTER_AREA), (160, 128),
                         interpolation=cv2.INTER_CUBIC)
    lost = detail_retention(image, smeared)
    assert lost["retention"] < 0.5 and lost["gain"] < 0.6


def test_crushed_shadows_counts_detail_taken_to_black():
    image = np.full((10, 10, 3), 60, np.uint8)
    image[:5] = 2  # already black in the input: not counted
    darker = (image.astype(int) - 58).clip(0, 255).astype(np.uint8)
    assert crushed_shadows(image, image) == 0.0
    assert crushed_shadows(image, darker) == pytest.approx(0.5)


def test_flicker_against_a_steady_stretch():
    pytest.importorskip("pyfade")
    frames = [np.clip(f * 0.3 + 0.7 * 220 + np.random.default_rng(i).integers(-3, 4, f.shape), 0, 255).astype(np.uint8)
              for i, f in enumerate(_video(4))]  # a foggy pan with sensor noise
    flow = video_flow(frames)
    curve = stretch_curve(frames, gains=(1.0, 2.0, 3.0), every=1, flow=flow)
    (fade1, warp1), (fade2, warp2), (fade3, warp3) = curve
    assert fade1 > fade2 > fade3 and warp1 < warp2 < warp3  # more contrast: less fog, more flicker
    assert warp2 == pytest.approx(4 * warp1, rel=0.3)  # about the square of the gain
    assert flicker_against_stretch(fade2, warp2, curve) == pytest.approx(1.0)
    assert flicker_against_stretch(fade2, warp2 / 2, curve) == pytest.approx(0.5)
    assert flicker_against_stretch(fade1 + 1, warp1, curve) is None  # more fog than the input: off the curve
    assert warping_error(frames, frames, flow=flow) == warping_error(frames, frames)

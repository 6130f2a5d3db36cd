"""Synthetic clips: exact flow and masks, exact first frame, coherent haze, determinism."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.clips import MotionConfig, camera_path, clip_margin, flow_between, make_clips
from training.depth import pseudo_depth
from training.losses import temporal_loss
from training.synthesis import HazeConfig


def _windows(size: int, frames: int, seed: int = 0, motion: MotionConfig = MotionConfig()):
    side = size + 2 * clip_margin(frames, size, motion)
    g = torch.Generator().manual_seed(seed)
    window = F.interpolate(torch.rand(2, 3, 10, 10, generator=g), size=(side, side), mode="bicubic",
                           align_corners=True).clamp(0, 1)
    return window, pseudo_depth(window), side


def test_first_frame_is_an_exact_crop_and_flow_to_it_is_exact():
    size, frames = 48, 4
    window, depth, side = _windows(size, frames)
    m = (side - size) // 2
    clip = make_clips(window, depth, frames, size, torch.Generator().manual_seed(1))
    assert clip.hazy.shape == (2, frames, 3, size, size) and clip.flow.shape == (2, frames - 1, 2, size, size)
    assert torch.allclose(clip.clean[:, 0], window[..., m:m + size, m:m + size], atol=1e-5)
    for t in range(frames - 1):
        # every frame, warped back to the (exact) first frame through the known flow, matches it
        err = temporal_loss(clip.clean[:, 0], clip.clean[:, t + 1], clip.flow_first[:, t], clip.mask_first[:, t])
        assert err.max() < 1e-4
        assert clip.mask[:, t].mean() > 0.8
    # the camera really moves: without the flow the frames differ
    assert (clip.clean[:, -1] - clip.clean[:, 0]).abs().mean() > 1e-3


def test_consecutive_flow_and_masks_are_consistent():
    size, frames = 40, 3
    homs = camera_path(3, frames, size, size + 2 * clip_margin(frames, size), torch.Generator().manual_seed(2))
    assert torch.allclose(homs[:, 0, :2, :2], torch.eye(2, dtype=torch.float64).expand(3, 2, 2))
    flow, mask = flow_between(homs[:, 2], homs[:, 1], size)
    back, _ = flow_between(homs[:, 1], homs[:, 2], size)
    # composing 2 -> 1 with 1 -> 2 returns to the start wherever the point stayed in view
    x = torch.arange(size).view(1, 1, size).float() + flow[:, 0]
    y = torch.arange(size).view(1, size, 1).float() + flow[:, 1]
    grid = torch.stack([2 * x / (size - 1) - 1, 2 * y / (size - 1) - 1], -1)
    round_trip = flow + F.grid_sample(back, grid, align_corners=True)
    assert round_trip.abs()[mask.expand_as(round_trip) > 0].max() < 0.05
    assert 0 < mask.mean() < 1


def test_single_frame_clips_are_plain_crops_and_clips_are_deterministic():
    window, depth, _ = _windows(32, 1)
    clip = make_clips(window, depth, 1, 32, torch.Generator().manual_seed(0))
    assert torch.allclose(clip.clean[:, 0], window, atol=1e-5) and clip.flow.shape[1] == 0
    window, depth, _ = _windows(32, 3)
    a = make_clips(window, depth, 3, 32, torch.Generator().manual_seed(5))
    b = make_clips(window, depth, 3, 32, torch.Generator().manual_seed(5))
    assert torch.equal(a.hazy, b.hazy) and torch.equal(a.flow, b.flow)


def test_haze_drifts_slowly_and_coherently():
    size, frames = 48, 3
    quiet = HazeConfig(noise_p=0.0, jpeg_p=0.0)  # per-frame noise would hide the drift
    changes = []
    for drift in (0.0, 0.01):
        still = MotionConfig(max_speed=0, max_accel=0, max_rotation=0, max_zoom=0, max_perspective=0, drift=drift)
        window, depth, _ = _windows(size, frames, motion=still)
        clip = make_clips(window, depth, frames, size, torch.Generator().manual_seed(3), haze=quiet, motion=still)
        assert torch.equal(clip.clean[:, 0], clip.clean[:, 1])  # static camera
        changes.append((clip.hazy[:, 1] - clip.hazy[:, 0]).abs().mean().item())
    assert changes[0] == 0.0  # no drift: the haze is frozen
    assert 0 < changes[1] < 0.01  # drift: the haze moves, slowly

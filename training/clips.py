"""Synthetic video clips from still images: a smooth camera path over a clean window, exact flow, drifting haze.

Frame :math:`t` shows the window through a homography :math:`H_t` (frame pixels -> window pixels):

.. math::

    H_t = T(C + s_t) \\, R(\\theta t) \\, Z(e^{\\zeta t}) \\, P(\\pi t) \\, T(-c), \\qquad
    s_t = v t + \\tfrac12 a t^2

with :math:`c` the frame centre, :math:`C` the window centre (so :math:`H_0` is an integer translation and frame 0
is an exact crop), velocity :math:`|v| \\le` ``max_speed`` px/frame, acceleration :math:`|a| \\le` ``max_accel``,
rotation :math:`|\\theta| \\le` ``max_rotation`` rad/frame, zoom :math:`|\\zeta| \\le` ``max_zoom`` per frame and a
small perspective term :math:`|\\pi| \\le` ``max_perspective``. A static planar scene seen through homographies has
no occlusions, so the flow is exact: a pixel :math:`p` of frame :math:`t+1` was at :math:`H_t^{-1} H_{t+1} p` in
frame :math:`t`; it is valid when that point lies inside frame :math:`t`.

The haze of every frame uses the same parameter draw; depth is warped with the frame and the density, airlight and
shading fields are evaluated at the frame's points in window coordinates, shifted by a slow drift (``drift``
window-widths per frame), so the haze moves with the scene and drifts coherently. Sensor noise and JPEG are drawn
per frame, as in a real camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from kornia.geometry.transform import warp_perspective

from training.synthesis import HazeConfig, render_haze, sample_haze_params

__all__ = ["MotionConfig", "Clip", "camera_path", "clip_margin", "make_clips", "flow_between"]


@dataclass(frozen=True)
class MotionConfig:
    """Bounds of the synthetic camera motion (per frame) and of the haze drift."""

    max_speed: float = 3.0
    max_accel: float = 0.5
    max_rotation: float = 0.004
    max_zoom: float = 0.01
    max_perspective: float = 2e-5
    drift: float = 0.01


@dataclass(frozen=True)
class Clip:
    """A batch of synthetic clips, T frames each.

    Attributes:
        hazy: :math:`(B, T, 3, h, w)` in [0, 1].
        clean: :math:`(B, T, 3, h, w)` in [0, 1].
        flow: :math:`(B, T-1, 2, h, w)` px, frame t+1 -> frame t.
        mask: :math:`(B, T-1, 1, h, w)` in {0, 1}, where that flow lands inside frame t.
        flow_first: :math:`(B, T-1, 2, h, w)` px, frame t+1 -> frame 0 (long-term consistency).
        mask_first: :math:`(B, T-1, 1, h, w)`.
    """

    hazy: torch.Tensor
    clean: torch.Tensor
    flow: torch.Tensor
    mask: torch.Tensor
    flow_first: torch.Tensor
    mask_first: torch.Tensor


def clip_margin(frames: int, size: int, motion: MotionConfig = MotionConfig()) -> int:
    """Border (px) the window needs around a ``size`` frame so ``frames`` frames of motion stay inside it."""
    if frames <= 1:
        return 0
    t = frames - 1
    half = size / 2 * math.sqrt(2)
    reach = motion.max_speed * t + 0.5 * motion.max_accel * t * t
    reach += half * (motion.max_rotation * t + (math.exp(motion.max_zoom * t) - 1))
    reach += 2 * half * half * motion.max_perspective * t
    return int(math.ceil(reach)) + 2


def _translation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, dtype=x.dtype, device=x.device).repeat(*x.shape, 1, 1)
    m[..., 0, 2], m[..., 1, 2] = x, y
    return m


def camera_path(batch: int, frames: int, size: int, window: int, generator: torch.Generator,
                motion: MotionConfig = MotionConfig()) -> torch.Tensor:
    """Smooth random homographies, frame pixels -> window pixels.

    Args:
        batch: clips B.
        frames: frames per clip T.
        size: frame side (square frames).
        window: window side (``size + 2 * clip_margin(...)``).
        generator: randomness (draws in a fixed order).
        motion: bounds.

    Returns:
        :math:`(B, T, 3, 3)` float64 homographies; :math:`H_0` is a translation by the margin.
    """
    dev = generator.device

    def sym(bound: float, *shape: int) -> torch.Tensor:
        return bound * (2 * torch.rand(shape, generator=generator, device=dev, dtype=torch.float64) - 1)

    v, a = sym(motion.max_speed, batch, 2), sym(motion.max_accel, batch, 2)
    theta, zeta = sym(motion.max_rotation, batch), sym(motion.max_zoom, batch)
    persp = sym(motion.max_perspective, batch, 2)
    t = torch.arange(frames, device=dev, dtype=torch.float64)
    shift = v[:, None] * t[None, :, None] + 0.5 * a[:, None] * (t ** 2)[None, :, None]  # (B, T, 2)
    angle, scale = theta[:, None] * t, torch.exp(zeta[:, None] * t)  # (B, T)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    linear = torch.zeros(batch, frames, 3, 3, dtype=torch.float64, device=dev)
    linear[..., 0, 0], linear[..., 0, 1], linear[..., 1, 0], linear[..., 1, 1] = cos, -sin, sin, cos
    linear[..., 2, 0], linear[..., 2, 1] = persp[:, None, 0] * t, persp[:, None, 1] * t
    linear[..., 2, 2] = 1
    c, big_c = (size - 1) / 2, (window - 1) / 2
    ones = torch.ones(batch, frames, dtype=torch.float64, device=dev)
    return _translation(big_c + shift[..., 0], big_c + shift[..., 1]) @ linear @ _translation(-c * ones, -c * ones)


def _apply(h: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply homographies :math:`(B, 3, 3)` to points :math:`(B, N, 2)`."""
    homog = torch.cat([points, torch.ones_like(points[..., :1])], -1) @ h.transpose(-1, -2)
    return homog[..., :2] / homog[..., 2:]


def flow_between(h_from: torch.Tensor, h_to: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact flow from the frame of ``h_from`` to the frame of ``h_to`` (both frame -> window homographies).

    Returns:
        flow :math:`(B, 2, size, size)` px (float32) and validity mask :math:`(B, 1, size, size)`.
    """
    b = h_from.shape[0]
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64, device=h_from.device),
                            torch.arange(size, dtype=torch.float64, device=h_from.device), indexing="ij")
    p = torch.stack([xs, ys], -1).reshape(1, -1, 2).expand(b, -1, -1)
    q = _apply(torch.linalg.inv(h_to) @ h_from, p)
    flow = (q - p).reshape(b, size, size, 2).permute(0, 3, 1, 2)
    inside = ((q >= 0) & (q <= size - 1)).all(-1).reshape(b, 1, size, size)
    return flow.float(), inside.float()


def make_clips(window: torch.Tensor, depth: torch.Tensor, frames: int, size: int, generator: torch.Generator, *,
               haze: HazeConfig = HazeConfig(), motion: MotionConfig = MotionConfig()) -> Clip:
    """Render T-frame hazy/clean clips from clean windows.

    Args:
        window: clean images :math:`(B, 3, S, S)` in [0, 1], with ``S = size + 2 * clip_margin(frames, size)``.
        depth: relative depth of the windows :math:`(B, 1, S, S)` in [0, 1].
        frames: T (1 gives single images: an exact centre crop, no motion).
        size: frame side.
        generator: randomness.

    Returns:
        :class:`Clip` on the windows' device.
    """
    b, _, side, side_w = window.shape
    if side != side_w or side != size + 2 * clip_margin(frames, size, motion):
        raise ValueError(f"window must be square of side {size + 2 * clip_margin(frames, size, motion)}, "
                         f"got {side}x{side_w}")
    dev, dt = window.device, window.dtype
    homs = camera_path(b, frames, size, side, generator, motion).to(dev)
    params = sample_haze_params(b, generator, haze, drift=motion.drift)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64, device=dev),
                            torch.arange(size, dtype=torch.float64, device=dev), indexing="ij")
    grid = torch.stack([xs, ys], -1).reshape(1, -1, 2).expand(b, -1, -1)
    hazy, clean = [], []
    for t in range(frames):
        to_frame = torch.linalg.inv(homs[:, t]).to(dt)
        stack = warp_perspective(torch.cat([window, depth], 1), to_frame, (size, size), align_corners=True,
                                 padding_mode="border")
        frame, frame_depth = stack[:, :3], stack[:, 3:]
        points = _apply(homs[:, t], grid).reshape(b, size, size, 2)  # window px
        coords = ((points + 0.5) / side).to(dt)
        vertical = coords[..., 1].unsqueeze(1)
        result = render_haze(frame, frame_depth, params, generator, coords=coords, time=float(t),
                             vertical=vertical, config=haze)
        hazy.append(result.hazy)
        clean.append(frame)
    flows, masks, flows0, masks0 = [], [], [], []
    for t in range(1, frames):
        f, m = flow_between(homs[:, t], homs[:, t - 1], size)
        f0, m0 = flow_between(homs[:, t], homs[:, 0], size)
        flows.append(f), masks.append(m), flows0.append(f0), masks0.append(m0)

    def stack_or_empty(items: list[torch.Tensor], channels: int) -> torch.Tensor:
        if items:
            return torch.stack(items, 1).to(dev)
        return window.new_zeros(b, 0, channels, size, size)

    return Clip(torch.stack(hazy, 1), torch.stack(clean, 1), stack_or_empty(flows, 2), stack_or_empty(masks, 1),
                stack_or_empty(flows0, 2), stack_or_empty(masks0, 1))

"""Smooth random fields as sums of random low-frequency cosines.

A field is a function of continuous coordinates rather than a pixel array, so the same field can be evaluated on a
crop, on a frame warped by a homography, or shifted by a drift velocity, and the values agree exactly. That is what
keeps synthetic haze coherent across the frames of a synthetic clip.

.. math::

    F(p) = \\frac{1}{Z} \\sum_{k=1}^{K} a_k \\cos(2\\pi \\langle f_k, p - v t \\rangle + \\phi_k),
    \\qquad a_k \\propto |f_k|^{-1}, \\quad Z = \\sqrt{\\textstyle\\sum_k a_k^2 / 2}

with :math:`|f_k|` log-uniform in ``[min_cycles, max_cycles]`` cycles per unit length, directions uniform, phases
uniform in :math:`[0, 2\\pi)`: a pink-noise-like field with mean 0 and variance 1 (approximately Gaussian values).
Coordinates are in units of the longer image side, so ``max_cycles=6`` means at most six blobs across the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["RandomField", "sample_field", "pixel_coords"]


@dataclass(frozen=True)
class RandomField:
    """Coefficients of a batch of smooth random fields.

    Attributes:
        freq: frequencies in cycles per unit, shape :math:`(B, K, 2)` as (x, y).
        phase: phases in radians, shape :math:`(B, K)`.
        amp: normalised amplitudes, shape :math:`(B, K)` (sum of squares equals 2, so the field variance is 1).
        velocity: drift in units per time step, shape :math:`(B, 2)`.
    """

    freq: torch.Tensor
    phase: torch.Tensor
    amp: torch.Tensor
    velocity: torch.Tensor

    def __call__(self, coords: torch.Tensor, time: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Evaluate the fields.

        Args:
            coords: points in field units, shape :math:`(B, H, W, 2)` as (x, y), or :math:`(1, H, W, 2)` to share.
            time: time in steps (scalar or shape :math:`(B,)`); the field is translated by ``velocity * time``.

        Returns:
            values of mean about 0 and variance about 1, shape :math:`(B, 1, H, W)`, dtype and device of ``coords``.
        """
        dev, dt = coords.device, coords.dtype
        freq, phase, amp = self.freq.to(dev, dt), self.phase.to(dev, dt), self.amp.to(dev, dt)
        time = torch.as_tensor(time, device=dev, dtype=dt).reshape(-1, 1, 1, 1)
        shifted = coords - self.velocity.to(dev, dt)[:, None, None, :] * time
        angle = 2 * math.pi * torch.einsum("bhwc,bkc->bhwk", shifted.expand(freq.shape[0], -1, -1, -1), freq)
        values = (torch.cos(angle + phase[:, None, None, :]) * amp[:, None, None, :]).sum(-1)
        return values.unsqueeze(1)


def sample_field(batch: int, generator: torch.Generator, *, components: int = 24, min_cycles: float = 0.5,
                 max_cycles: float = 6.0, max_speed: float = 0.0) -> RandomField:
    """Draw ``batch`` random fields (coefficients on the generator's device).

    Args:
        batch: number of fields B.
        generator: source of randomness; draws happen in a fixed order so a seed fixes the fields.
        components: number of cosines K.
        min_cycles: lowest spatial frequency (cycles per unit).
        max_cycles: highest spatial frequency (cycles per unit).
        max_speed: drift speed drawn uniformly in ``[0, max_speed]`` units per step, random direction.
    """
    dev = generator.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=dev)

    radius = min_cycles * (max_cycles / min_cycles) ** uniform(batch, components)
    theta = 2 * math.pi * uniform(batch, components)
    freq = torch.stack([radius * torch.cos(theta), radius * torch.sin(theta)], -1)
    phase = 2 * math.pi * uniform(batch, components)
    amp = 1.0 / radius
    amp = amp * torch.sqrt(2.0 / (amp ** 2).sum(1, keepdim=True))
    speed, heading = max_speed * uniform(batch), 2 * math.pi * uniform(batch)
    velocity = torch.stack([speed * torch.cos(heading), speed * torch.sin(heading)], -1)
    return RandomField(freq, phase, amp, velocity)


def pixel_coords(height: int, width: int, *, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates in units of the longer side: shape :math:`(1, H, W, 2)` as (x, y)."""
    scale = 1.0 / max(height, width)
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * scale
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * scale
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).unsqueeze(0)

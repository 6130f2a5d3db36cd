"""Pseudo-depth for haze synthesis when no depth map is given.

Outdoor photographs share a strong layout prior: the ground is near at the bottom, distance grows towards the
horizon, and the sky (bright, smooth, at the top) is farthest. Near surfaces also carry more resolved texture than
distant ones. The pseudo-depth combines these cues (all maps in [0, 1], 1 = far):

.. math::

    P(y) = 1 - \\frac{y + 1/2}{H}                               \\quad\\text{(vertical position)}

    T = \\min\\left(1, \\frac{\\bar g}{q_{0.9}(\\bar g)}\\right)  \\quad\\text{(texture: box-averaged Sobel magnitude
    of the blurred luminance, relative to its 90th percentile)}

    S = \\sigma\\left(\\frac{\\bar L - 0.6}{0.08}\\right) (1 - T)^2 \\, \\sigma\\left(\\frac{P - 0.4}{0.1}\\right)
    \\quad\\text{(sky: bright, flat and high)}

    D_0 = \\max(0.7 P + 0.3 (1 - T), S)

then a guided filter with the luminance as guide snaps :math:`D_0` to object boundaries (so haze does not bleed across
edges) and each map is stretched to [0, 1] between its 1st and 99th percentiles. It is a deliberately simple,
deterministic prior: wrong for close-ups and aerial views, but the random density field and thickness on top of it
(see :mod:`training.synthesis`) keep the network from trusting it too much.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.filters import box_blur, gaussian_blur2d, guided_blur, spatial_gradient

__all__ = ["pseudo_depth", "normalise_depth"]


def _odd(n: float) -> int:
    n = max(3, int(round(n)))
    return n if n % 2 else n + 1


def normalise_depth(depth: torch.Tensor, low: float = 0.01, high: float = 0.99) -> torch.Tensor:
    """Stretch each map to [0, 1] between its ``low`` and ``high`` quantiles.

    Args:
        depth: shape :math:`(B, 1, H, W)`, larger = farther, any positive scale.

    Returns:
        shape :math:`(B, 1, H, W)` in [0, 1].
    """
    flat = depth.flatten(1).float()
    if flat.shape[1] > 65536:  # quantile of a strided subsample: same answer to ~1e-3, far cheaper
        flat = flat[:, :: flat.shape[1] // 65536 + 1]
    q = torch.quantile(flat, torch.tensor([low, high], device=depth.device), dim=1)
    lo, hi = q[0].view(-1, 1, 1, 1), q[1].view(-1, 1, 1, 1)
    return ((depth - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def pseudo_depth(image: torch.Tensor) -> torch.Tensor:
    """Estimate a plausible relative depth map from a clean outdoor image.

    Args:
        image: RGB, shape :math:`(B, 3, H, W)`, range [0, 1].

    Returns:
        relative depth, shape :math:`(B, 1, H, W)`, range [0, 1] (1 = farthest). Deterministic.
    """
    b, _, h, w = image.shape
    # Every cue is smooth, so work at a longer side of at most 256 px and upsample the answer.
    scale = min(1.0, 256 / max(h, w))
    work = F.interpolate(image.float(), scale_factor=scale, mode="area") if scale < 1 else image.float()
    hw, ww = work.shape[-2:]
    side = max(hw, ww)
    lum = rgb_to_grayscale(work)
    grad = spatial_gradient(gaussian_blur2d(lum, (5, 5), (1.0, 1.0)), mode="sobel").norm(dim=2)
    window = _odd(side / 16)
    texture = box_blur(grad, (window, window))
    scale_t = torch.quantile(texture.flatten(1)[:, ::4], 0.9, dim=1).view(b, 1, 1, 1)
    texture = (texture / (scale_t + 1e-3)).clamp(0, 1)
    position = 1 - (torch.arange(hw, device=image.device, dtype=work.dtype) + 0.5) / hw
    position = position.view(1, 1, hw, 1).expand(b, 1, hw, ww)
    bright = box_blur(lum, (window, window))
    sky = torch.sigmoid((bright - 0.6) / 0.08) * (1 - texture) ** 2 * torch.sigmoid((position - 0.4) / 0.1)
    depth = torch.maximum(0.7 * position + 0.3 * (1 - texture), sky)
    depth = normalise_depth(guided_blur(lum, depth, _odd(side / 24), 1e-3))
    if scale < 1:
        depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False)
    return depth.to(image.dtype)

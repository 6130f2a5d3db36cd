"""Losses for unlabelled real haze: what a dehazed photo owes its hazy input, with no clean reference to compare to.

Both follow the haze model :math:`I = J t + A (1 - t)` and He et al.'s dark channel prior (CVPR 2009), the
classical baseline the product has to beat:

* :func:`fog_left`: in every patch, the output's dark channel (the darkest colour over the patch: near black in
  haze-free outdoor photos, lifted by haze) may be no higher than the prior's own dehazed result would leave it.
  A one-sided bound: it asks for at least the prior's haze removal and never pushes beyond it, so it cannot
  darken skies the way a plain dark-channel loss does (the prior's transmission floor keeps them).
* :func:`airlight_kept`: the fog's own colour :math:`A` is a fixed point of dehazing (:math:`J = A` where
  :math:`I = A`): mapped by the predicted transform it must stay :math:`A`. Grey fog stays grey (no blue cast),
  skies keep their brightness, and the fog's tint is removed from the scene, not added to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kanet import transform

__all__ = ["dark_channel", "estimate_airlight", "prior_dehaze", "fog_left", "airlight_kept"]


def _patch_min(x: torch.Tensor, radius: int) -> torch.Tensor:
    return -F.max_pool2d(-x, 2 * radius + 1, stride=1, padding=radius)


def dark_channel(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Dark channel :math:`(B, 1, H, W)`: minimum over the colours and a (2r+1)^2 patch of ``image`` (clamped to
    [0, 1])."""
    return _patch_min(image.clamp(0, 1).amin(1, keepdim=True), radius)


def estimate_airlight(hazy: torch.Tensor, radius: int, top: float = 0.001) -> torch.Tensor:
    """The fog's colour :math:`(B, 3)`: the mean colour of the ``top`` fraction of pixels with the brightest dark
    channel (the most haze-opaque ones), as He et al. estimate it; at least 0.3 (a dark scene has no bright fog)."""
    dark = dark_channel(hazy, radius).flatten(1)
    k = max(1, int(dark.shape[1] * top))
    idx = dark.topk(k, dim=1).indices
    pixels = hazy.flatten(2).gather(2, idx[:, None].expand(-1, 3, -1))
    return pixels.mean(2).clamp(min=0.3)


def prior_dehaze(hazy: torch.Tensor, radius: int, omega: float = 0.95, t_min: float = 0.2) -> torch.Tensor:
    """The dark channel prior's recovery :math:`J = (I - A) / \\max(t, t_{min}) + A` with the patch transmission
    :math:`t = 1 - \\omega \\, \\mathrm{dark}(I / A)` (unrefined: the losses only compare patch minima)."""
    a = estimate_airlight(hazy, radius)[:, :, None, None]
    t = (1 - omega * dark_channel(hazy / a, radius)).clamp(min=t_min)
    return (hazy - a) / t + a


def fog_left(output: torch.Tensor, hazy: torch.Tensor, radius: int) -> torch.Tensor:
    """Per sample :math:`(B,)`: mean over pixels of how far the output's dark channel exceeds that of the prior's
    recovery of the same hazy input (0 where the output is at least as clear)."""
    bound = dark_channel(prior_dehaze(hazy, radius), radius)
    return (dark_channel(output, radius) - bound).clamp(min=0).flatten(1).mean(1)


def airlight_kept(hazy: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor, radius: int) -> torch.Tensor:
    """Per sample :math:`(B,)`: mean absolute change the transform (gains, offsets: :mod:`kanet.transform`, any
    resolution) makes to the fog's own colour, estimated from ``hazy``."""
    a = estimate_airlight(hazy, radius)[:, :, None, None].expand(-1, -1, *gain.shape[-2:])
    return (transform.apply(a, gain, offset) - a).abs().flatten(1).mean(1)

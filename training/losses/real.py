r"""Losses for unlabelled real haze: what a dehazed photo owes its hazy input, with no clean reference to compare to.

Both follow the haze model :math:`I = J t + A (1 - t)` and He et al.'s dark channel prior (CVPR 2009), the
classical baseline the product has to beat:

* :func:`fog_left`: the transform's luma gain (:math:`1/t` in the haze model) must be at least the prior's,
  :math:`1/t` with :math:`t = \max(1 - \omega \, \mathrm{dark}(I / A), 0.3)`. A one-sided bound on the amount of
  haze removed, not on colours: it asks for at least the prior's haze removal, never pushes beyond it, and cannot
  be met by darkening one colour (a bound on the output's dark channel was: the model turned everything yellow
  by lowering blue), nor darken skies (the fixed point below keeps them). The floor of 0.3 (the prior's own is
  0.1-0.2) asks no more than a gain of 3.3 where the prior sees dense fog or sky, which a larger gain would fill
  with amplified noise and JPEG blocks.
* :func:`airlight_kept`: the fog's own colour :math:`A` is a fixed point of dehazing (:math:`J = A` where
  :math:`I = A`): mapped by the predicted transform it must stay :math:`A`. Grey fog stays grey (no blue cast),
  skies keep their brightness, and the fog's tint is removed from the scene, not added to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kanet import transform

__all__ = ["dark_channel", "estimate_airlight", "prior_transmission", "fog_left", "airlight_kept"]


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


def prior_transmission(hazy: torch.Tensor, radius: int, omega: float = 0.95, t_min: float = 0.3) -> torch.Tensor:
    r"""The dark channel prior's transmission :math:`(B, 1, H, W)`: :math:`\max(1 - \omega \, \mathrm{dark}(I / A),
    t_{min})` over patches (unrefined: patch minima overestimate :math:`t` at depth edges, so as a lower bound on
    the gain it errs on the mild side)."""
    a = estimate_airlight(hazy, radius)[:, :, None, None]
    return (1 - omega * dark_channel(hazy / a, radius)).clamp(min=t_min)


def fog_left(gain: torch.Tensor, hazy: torch.Tensor, radius: int) -> torch.Tensor:
    r"""Per sample :math:`(B,)`: mean over the transform's pixels of how far its log luma gain falls short of the
    prior's :math:`-\log t` (0 where it removes at least as much haze). ``gain``: :mod:`kanet.transform` gains at
    any resolution; ``hazy``: the full-resolution input, where the prior is computed (``radius`` in its pixels)."""
    t = F.adaptive_avg_pool2d(prior_transmission(hazy, radius), gain.shape[-2:])
    return (-t.log() - gain[:, :1].log()).clamp(min=0).flatten(1).mean(1)


def airlight_kept(hazy: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor, radius: int) -> torch.Tensor:
    """Per sample :math:`(B,)`: mean absolute change the transform (gains, offsets: :mod:`kanet.transform`, any
    resolution) makes to the fog's own colour, estimated from ``hazy``."""
    a = estimate_airlight(hazy, radius)[:, :, None, None].expand(-1, -1, *gain.shape[-2:])
    return (transform.apply(a, gain, offset) - a).abs().flatten(1).mean(1)

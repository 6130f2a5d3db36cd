"""Temporal consistency: occlusion-masked warping loss between consecutive outputs (Lai et al., ECCV 2018).

Flow convention everywhere in ``training``: ``flow`` :math:`(B, 2, H, W)` in pixels, (dx, dy), maps each pixel
:math:`p` of the *current* frame to its position :math:`p + \\text{flow}(p)` in the *reference* frame, with pixel
centres at integer coordinates. ``warp(reference, flow)`` then aligns the reference frame to the current one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["warp", "temporal_loss"]


def warp(image: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward-warp ``image`` by ``flow`` (bilinear).

    Args:
        image: reference frame :math:`(B, C, H, W)`.
        flow: :math:`(B, 2, H, W)` in pixels, current frame -> reference frame.

    Returns:
        the warped image :math:`(B, C, H, W)` and a mask :math:`(B, 1, H, W)` (1 where the sampled point lies
        inside the reference frame).
    """
    b, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=flow.dtype),
                            torch.arange(w, device=flow.device, dtype=flow.dtype), indexing="ij")
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    inside = ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).unsqueeze(1).to(image.dtype)
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], -1)
    warped = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    return warped, inside


def temporal_loss(reference: torch.Tensor, current: torch.Tensor, flow: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked L1 between ``current`` and ``reference`` warped onto it, per sample.

    Args:
        reference: earlier output :math:`(B, C, H, W)`.
        current: later output, same shape.
        flow: current -> reference, :math:`(B, 2, H, W)` in pixels.
        mask: validity / non-occlusion :math:`(B, 1, H, W)` in [0, 1]; pixels leaving the frame are always masked.

    Returns:
        :math:`(B,)`: 0 for a perfectly consistent sequence, larger with flicker.
    """
    warped, inside = warp(reference, flow)
    weight = inside if mask is None else inside * mask.to(inside.dtype)
    diff = (current - warped).abs() * weight
    return diff.flatten(1).sum(1) / (weight.flatten(1).sum(1) * current.shape[1]).clamp_min(1.0)

"""Losses for unlabelled real haze: priors that a dehazed photo satisfies, with no clean reference to compare to.

* :func:`dark_channel`: He et al.'s dark channel prior (CVPR 2009), used as a loss on real hazy photos as in
  semi-supervised dehazing (Li et al., TIP 2019) and PSD (Chen et al., CVPR 2021): in most patches of a haze-free
  outdoor photo some channel is close to black; haze lifts it. Alone it would darken everything, so it only ever
  runs next to the supervised terms.
* :func:`neutral_offset`: the chroma of the transform's offsets (:mod:`kanet.transform`). On a grey pixel the
  output's chroma is exactly that offset chroma, so this is the colour cast the transform adds to grey: fog that
  is grey must come out grey, not blue.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kanet.transform import luma

__all__ = ["dark_channel", "neutral_offset"]


def dark_channel(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean dark channel per sample: minimum over the colours and a (2r+1)^2 patch.

    Args:
        image: :math:`(B, 3, H, W)`, read as [0, 1] (clamped).
        radius: patch radius in pixels.

    Returns:
        :math:`(B,)` in [0, 1].
    """
    darkest = image.clamp(0, 1).amin(1, keepdim=True)
    patch = -F.max_pool2d(-darkest, 2 * radius + 1, stride=1, padding=radius)
    return patch.flatten(1).mean(1)


def neutral_offset(offset: torch.Tensor) -> torch.Tensor:
    """Mean absolute chroma of RGB offsets :math:`(B, 3, h, w)` (offset minus its BT.709 luma), per sample."""
    return (offset - luma(offset)).abs().flatten(1).mean(1)

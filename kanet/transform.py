"""Coefficient output (our addition to KA_Net, not in the paper): the network predicts a local colour transform of
its input instead of the dehazed image.

At every pixel of the network's (low) resolution it predicts five numbers: a luma gain :math:`g_Y`, a chroma gain
:math:`g_C` and an RGB offset :math:`o`. Upsampled to any resolution, they map the input :math:`I` to

.. math:: O = g_C \\, I + (g_Y - g_C) \\, Y(I) + o

with :math:`Y` the BT.709 luma. In luma/chroma terms :math:`Y(O) = g_Y Y(I) + Y(o)` and
:math:`C(O) = g_C C(I) + C(o)`: a gain per plane and an offset per plane, so a YUV video applies it plane by plane
without ever building full-resolution RGB. With :math:`g_Y = g_C = 1/t` and :math:`o = A (1 - 1/t)` it is exactly the
haze model :math:`J = (I - A) / t + A` with a coloured airlight :math:`A`; :math:`g_C \\ne g_Y` adds a saturation
change. Fine detail comes from the input itself, scaled, so it is kept by construction at any output size.

Raw network outputs (5 channels): log-gains, softly bounded to :math:`\\pm` ``LOG_GAIN_BOUND`` (gains 0.14-7.4,
i.e. transmission down to 0.14), then offsets. A zero output is the identity transform.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHANNELS = 5
LOG_GAIN_BOUND = 2.0
LUMA = (0.2126, 0.7152, 0.0722)  # BT.709


def split(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw head output ``[B,5,h,w]`` -> gains ``[B,2,h,w]`` (luma, chroma) and RGB offsets ``[B,3,h,w]``."""
    # B tanh(r / B) written as 2B sigmoid(2r / B) - B: the same function, and on a CPU sigmoid is 3x faster
    log_gain = torch.sigmoid(raw[:, :2] * (2 / LOG_GAIN_BOUND)).mul(2 * LOG_GAIN_BOUND).sub_(LOG_GAIN_BOUND)
    return log_gain.exp(), raw[:, 2:]


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """BT.709 luma ``[B,1,H,W]`` of RGB ``[B,3,H,W]`` (Python scalars: no constant tensor crosses devices)."""
    return LUMA[0] * rgb[:, 0:1] + LUMA[1] * rgb[:, 1:2] + LUMA[2] * rgb[:, 2:3]


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of coefficient maps (what the product and training both use)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def apply(rgb: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Apply coefficients (any resolution, upsampled to ``rgb``'s) to RGB ``[B,3,H,W]``; not clamped.

    ``gain`` has two channels (luma, chroma) or one shared by both (the plain haze model ``a * I + b``).
    """
    size = tuple(rgb.shape[-2:])
    gain, offset = upsample(gain, size), upsample(offset, size)
    if gain.shape[1] == 1:
        return torch.addcmul(offset, gain, rgb)
    g_y, g_c = gain[:, :1], gain[:, 1:2]
    return torch.addcmul(torch.addcmul(offset, g_y - g_c, luma(rgb)), g_c, rgb)

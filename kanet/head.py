"""KA_Net reconstruction head: 2x transposed-conv upsampling back to full resolution with encoder skips.

Channel path ``dims[3] -> dims[3] -> dims[2] -> dims[1] -> dims[0] -> tail[0] -> tail[1]``, a residual block after
each upsampling that carries a skip (and after the first tail one), then reflection-padded 3x3 conv to RGB and tanh.
Our coefficient variant ends instead in a 3x3 conv of the last features and the input image to the five transform
coefficients of :mod:`kanet.transform`, without tanh but with a fixed binomial blur (training starts the conv at
zero: the identity transform).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import transform as coef


class ResidualBlock(nn.Module):
    """conv3x3-ReLU-conv3x3 plus identity (no scaling)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x))) + x


def reflect_pad1(*parts: torch.Tensor) -> torch.Tensor:
    """``parts`` joined along the channels and padded by one pixel on every side by reflection, as
    ``F.pad(torch.cat(parts, 1), (1, 1, 1, 1), mode="reflect")``, in the first part's dtype and memory format.

    Written into one buffer whose border is copied from inside it: on channels-last inputs the reflection-pad kernel
    and a channel ``cat`` are each several times slower, and at full resolution they were a visible share of the
    frame time (BENCHMARKS.md).
    """
    first = parts[0]
    n, _, h, w = first.shape
    layout = torch.channels_last if first.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = torch.empty((n, sum(p.shape[1] for p in parts), h + 2, w + 2), dtype=first.dtype, device=first.device,
                      memory_format=layout)
    start = 0
    for part in parts:
        out[:, start:start + part.shape[1], 1:-1, 1:-1] = part
        start += part.shape[1]
    out[:, :, 0], out[:, :, -1] = out[:, :, 2], out[:, :, -3]
    out[..., 0], out[..., -1] = out[..., 2], out[..., -3]
    return out


def crop_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Drop the extra last row/column an upsampling adds when the finer grid has odd size."""
    return x[..., : ref.shape[-2], : ref.shape[-1]]


class Head(nn.Module):
    def __init__(self, dims: tuple[int, int, int, int], tail: tuple[int, int] = (16, 8), out_chans: int = 3,
                 keep_unused: bool = False, coefficients: bool = False):
        super().__init__()
        self.coefficients = coefficients
        if coefficients:
            out_chans = coef.CHANNELS
        chans = [dims[3], dims[3], dims[2], dims[1], dims[0], tail[0], tail[1]]
        self.ups = nn.ModuleList(nn.ConvTranspose2d(chans[i], chans[i + 1], 2, 2) for i in range(6))
        # After upsamplings 1..4 (to 1/16, 1/8, 1/4, 1/2).
        self.refine = nn.ModuleList(ResidualBlock(c) for c in chans[2:6])
        # The coefficient head also sees the image it transforms (its last features describe the dehazed scene;
        # a gain and offset relate that scene to the input).
        self.out = nn.Conv2d(tail[1] + (3 if coefficients else 0), out_chans, 3)
        # The official head also builds an output conv it never uses; kept only for checkpoint compatibility.
        self.unused_out = nn.Conv2d(tail[1], out_chans, 3, padding=1) if keep_unused else None

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``feats``: encoder maps at 1/4..1/32; ``x``: decoder output at 1/64; ``image``: the network's input.
        Returns tanh RGB (or the raw coefficients, float32) at full size."""
        x = crop_to(self.ups[0](x), feats[3]) + feats[3]
        x = crop_to(self.ups[1](x), feats[2])
        x = self.refine[0](x) + feats[2]
        x = self.refine[1](self.ups[2](x)) + feats[1]
        x = self.refine[2](self.ups[3](x)) + feats[0]
        x = self.refine[3](self.ups[4](x))
        x = self.ups[5](x)
        if not self.coefficients:
            return torch.tanh(self.out(reflect_pad1(x)))
        # the blur in float32: each bf16 rounding of its steps adds pixel noise to the gains (real photos' FADE
        # fell 5 % and SSIM 0.005, noise that reads as detail)
        return binomial3(self.out(reflect_pad1(x, image)).float())


def binomial3(x: torch.Tensor) -> torch.Tensor:
    """The [1, 2, 1]/4 x [1, 2, 1]/4 blur, padded along each axis by replicating the first element before it and
    the one before the last after it (the filter the shipped weights were trained with: two 2x2 means, padded
    top-left then bottom-right).

    Transposed convolutions leave a period-2 checkerboard in their output; the binomial filter has no response at
    that frequency. In a coefficient map, a gain of 6 on a flat sky would otherwise show it as a faint grid.
    Scaled copies and shifted in-place adds, two passes over the map per axis: on CPU ``avg_pool2d`` took a quarter
    of kanet-t's time for this 5-channel map, and a clone per step twice as long as this.
    """
    for dim, scale in ((-2, 1.0), (-1, 0.0625)):  # the 1/16 rides on the second axis's adds
        n = x.shape[dim]
        y = x * (2 * scale)
        y.narrow(dim, 1, n - 1).add_(x.narrow(dim, 0, n - 1), alpha=scale)
        y.narrow(dim, 0, n - 1).add_(x.narrow(dim, 1, n - 1), alpha=scale)
        y.narrow(dim, 0, 1).add_(x.narrow(dim, 0, 1), alpha=scale)
        y.narrow(dim, n - 1, 1).add_(x.narrow(dim, max(n - 2, 0), 1), alpha=scale)
        x = y
    return x

"""Pixel and structure losses: L1, Charbonnier and MS-SSIM (Wang et al. 2003), per sample."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["l1", "charbonnier", "ms_ssim", "ms_ssim_loss"]

# Wang, Simoncelli & Bovik (2003), scales fine to coarse.
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per sample: inputs :math:`(B, C, H, W)`, returns :math:`(B,)`."""
    return (output - target).abs().flatten(1).mean(1)


def charbonnier(output: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier (smooth L1) per sample, :math:`\\sqrt{(x - y)^2 + \\epsilon^2} - \\epsilon` averaged, so identical
    images give exactly 0: inputs :math:`(B, C, H, W)`, returns :math:`(B,)`."""
    return (torch.sqrt((output - target) ** 2 + eps * eps) - eps).flatten(1).mean(1)


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, device=like.device, dtype=like.dtype) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor,
                data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and its contrast-structure part, averaged per sample (valid filtering, as in the reference)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    groups = x.shape[1]
    stats = F.conv2d(torch.cat([x, y, x * x, y * y, x * y], 1), window.repeat(5, 1, 1, 1), groups=5 * groups)
    mx, my, xx, yy, xy = stats.split(groups, 1)
    vx, vy, cxy = xx - mx * mx, yy - my * my, xy - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    luminance = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return (luminance * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(output: torch.Tensor, target: torch.Tensor, *, scales: int = 0, data_range: float = 1.0,
            window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Multi-scale SSIM per sample.

    Args:
        output: images :math:`(B, C, H, W)` in ``[0, data_range]``.
        target: same shape.
        scales: number of scales (1-5); 0 picks the most that keep the coarsest scale at least ``window_size``
            pixels (4 for 160 px crops, 5 from 176 px), since small crops cannot carry all five.
        data_range: value range of the images.

    Returns:
        MS-SSIM in (0, 1] (1 for identical images), shape :math:`(B,)`.
    """
    side = min(output.shape[-2:])
    if side < window_size:
        raise ValueError(f"MS-SSIM needs images of at least {window_size} px, got {side}")
    most = min(5, 1 + int(math.floor(math.log2(side / window_size))))
    scales = most if scales <= 0 else min(scales, most)
    weights = torch.tensor(_MS_SSIM_WEIGHTS[:scales], device=output.device, dtype=torch.float32)
    weights = weights / weights.sum()
    window = _gaussian_window(window_size, sigma, output.shape[1], output.float())
    x, y = output.float(), target.float()
    values = []
    for level in range(scales):
        ssim, cs = _ssim_terms(x, y, window, data_range)
        values.append(ssim if level == scales - 1 else cs)
        if level < scales - 1:
            pad = (0, x.shape[-1] % 2, 0, x.shape[-2] % 2)
            x = F.avg_pool2d(F.pad(x, pad, mode="replicate"), 2)
            y = F.avg_pool2d(F.pad(y, pad, mode="replicate"), 2)
    stacked = torch.stack(values, 1).clamp_min(1e-6)  # negative cs would make the power undefined
    return torch.exp((torch.log(stacked) * weights).sum(1))


def ms_ssim_loss(output: torch.Tensor, target: torch.Tensor, *, scales: int = 0) -> torch.Tensor:
    """:math:`1 - \\mathrm{MS\\text{-}SSIM}` per sample: inputs :math:`(B, C, H, W)` in [0, 1], returns :math:`(B,)`."""
    return 1 - ms_ssim(output, target, scales=scales)

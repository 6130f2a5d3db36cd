"""Dark channel prior (He, Sun, Tang, CVPR 2009) with guided-filter refinement: the no-weights baseline.

Haze model: I = J t + A (1 - t). The dark channel of a haze-free outdoor image is close to zero, so
t = 1 - omega * min_patch(min_c(I / A)). Everything heavy (dark channel, airlight, guided refinement of t)
runs at a working resolution of ``work_size`` pixels on the short side; the refined transmission reaches full
resolution through the fast guided filter (coefficients upsampled and applied to the full-resolution luma),
so the cost at 1080p is a few full-resolution element-wise operations.
"""

from __future__ import annotations

import torch
from torch import nn

from kanet.transform import luma

from ..filters import guided_coefficients, min_filter, resize


class DarkChannelPrior(nn.Module):
    """``forward(rgb [B,3,H,W] in [0,1]) -> [B,3,H,W] in [0,1]``; stateless, any device and float dtype."""

    name = "dcp"
    infer_size = 192  # video: estimate at this short side; the engine's guided upsampling does the rest

    def __init__(self, omega: float = 0.95, t_min: float = 0.2, work_size: int = 360,
                 patch_fraction: float = 1 / 40, top_fraction: float = 0.001, eps: float = 1e-3) -> None:
        super().__init__()
        self.omega, self.t_min, self.work_size = omega, t_min, work_size
        self.patch_fraction, self.top_fraction, self.eps = patch_fraction, top_fraction, eps

    def estimate(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Airlight ``[B,3,1,1]`` and low-resolution guided coefficients ``(a, b)`` of the transmission."""
        h, w = rgb.shape[-2:]
        scale = min(1.0, self.work_size / min(h, w))
        small = resize(rgb.float(), (max(1, round(h * scale)), max(1, round(w * scale))))
        radius = max(1, round(min(small.shape[-2:]) * self.patch_fraction))
        dark = min_filter(small.amin(1, keepdim=True), radius)
        airlight = self._airlight(small, dark)
        transmission = 1.0 - self.omega * min_filter((small / airlight).amin(1, keepdim=True), radius)
        a, b = guided_coefficients(luma(small), transmission, radius * 4, self.eps)
        return airlight, a, b

    def recover(self, rgb: torch.Tensor, airlight: torch.Tensor, a: torch.Tensor,
                b: torch.Tensor) -> torch.Tensor:
        """Apply upsampled transmission coefficients to the full-resolution frame: J = (I - A) / t + A."""
        size = tuple(rgb.shape[-2:])
        x = rgb.float()
        t = (resize(a, size) * luma(x) + resize(b, size)).clamp_(min=self.t_min, max=1.0)
        return ((x - airlight) / t + airlight).clamp_(0.0, 1.0).to(rgb.dtype)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.recover(rgb, *self.estimate(rgb))

    def _airlight(self, small: torch.Tensor, dark: torch.Tensor) -> torch.Tensor:
        """Mean colour of the most haze-opaque pixels (top 0.1% of the dark channel), per image."""
        bsz = small.shape[0]
        k = max(1, int(dark[0].numel() * self.top_fraction))
        idx = dark.view(bsz, -1).topk(k, dim=1).indices
        pixels = small.view(bsz, 3, -1).gather(2, idx.unsqueeze(1).expand(-1, 3, -1))
        # A dark "airlight" (no sky, night) would blow the division up; haze light is bright.
        return pixels.mean(2).clamp(min=0.3).view(bsz, 3, 1, 1)

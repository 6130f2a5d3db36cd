"""Global tone head: a per-image colour correction from whole-image statistics (our addition, not in the paper).

Haze dims, flattens and tints a picture by amounts that a patch of it cannot tell; the whole frame can (how dark its
darkest parts are, how bright its highlights). This head reads quantiles of the input and of the network's output on a
coarse grid, so its cost and its answer do not depend on the frame size, and predicts a gain and an offset per
channel. Its last layer starts at zero, so a new head is the identity and a network trained without it can be
fine-tuned with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class GlobalTone(nn.Module):
    """``estimate(x, y)`` -> ``[B, 6]`` parameters; ``apply(y, params)`` -> corrected ``y`` (images in [0, 1])."""

    def __init__(self, hidden: int, grid: int = 64, max_log_gain: float = 0.5, max_offset: float = 0.2) -> None:
        super().__init__()
        self.grid = grid
        self.max_log_gain = max_log_gain
        self.max_offset = max_offset
        features = 2 * 3 * (2 + len(QUANTILES))  # input and output: mean, std and quantiles per channel
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, 6))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def statistics(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[B, 54]``: per channel mean, std and quantiles of ``x`` and ``y`` shrunk to ``grid`` x ``grid``."""
        out = []
        for image in (x, y):
            # antialiased resize, not adaptive pooling: that one exports to ONNX wrong for other sizes
            s = F.interpolate(image.float(), size=(self.grid, self.grid), mode="bilinear", antialias=True,
                              align_corners=False).flatten(2)
            n = s.shape[-1]
            ranks = [round(q * (n - 1)) for q in QUANTILES]
            out += [s.mean(2), s.std(2), s.sort(dim=2).values[..., ranks].flatten(1)]
        return torch.cat(out, 1) * 2 - 1  # roughly centred

    def estimate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Correction parameters for input ``x`` and network output ``y``, both ``[B, 3, H, W]`` in [0, 1]."""
        return self.mlp(self.statistics(x, y.clamp(0, 1))).float()

    def apply(self, y: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``y`` with a gain about mid-grey and an offset per channel (bounded, so no input can blow it up)."""
        gain = torch.exp(self.max_log_gain * torch.tanh(params[:, :3]))[..., None, None]
        offset = self.max_offset * torch.tanh(params[:, 3:])[..., None, None]
        return (gain * (y.float() - 0.5) + 0.5 + offset).to(y.dtype)

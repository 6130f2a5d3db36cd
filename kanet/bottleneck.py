"""KA_Net bottleneck ("degradation localisation"): a residual conv block around a multi-receptive-field block.

The multi-receptive-field block runs three dilated residual branches (dilations 1, 3, 5 by default). The first
branch sees a random-Fourier-feature (RFF) map of its input instead of the input itself; an adaptive gate
weights the three branches before they are fused.

RFF modes:

* ``"parity"``: the projection ``W ~ N(0, 1)`` and phase ``b ~ U[0, 2 pi)`` are drawn afresh on every call from
  the global CPU generator (``randn`` then ``uniform_``), exactly like the official code, so seeding the global
  generator reproduces the official output. Stochastic, and costs host work per call.
* ``"fixed"`` (default): one draw from ``seed`` at construction, kept as buffers that are saved with the weights.
  Deterministic, no host work, traceable (torch.compile, CUDA graphs, ONNX).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

RFF_MODES = ("fixed", "parity")


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int, kernel: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel, padding=dilation * (kernel // 2), dilation=dilation)
        self.bn = nn.BatchNorm2d(out_dim)
        self.act = nn.ReLU(inplace=True)


class ChannelAttention(nn.Module):
    """Channel gate modulated per position: ``x * sigmoid(mlp(gap(x)) * conv(x))``."""

    def __init__(self, dim: int, reduction: int):
        super().__init__()
        hidden = max(dim // reduction, 1)
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)
        self.conv1 = nn.Conv2d(dim, hidden, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(hidden, dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.fc2(F.relu(self.fc1(x.mean((2, 3)))))[:, :, None, None]
        m = self.conv2(F.relu(self.conv1(x)))
        return x * torch.sigmoid(g * m)


class SpatialAttention(nn.Module):
    """Spatial gate from the channel mean and a learned 1x1 projection."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, 1, 1)
        self.fc1 = nn.Conv2d(2, 1, 1)
        self.fc2 = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.cat([x.mean(1, keepdim=True), self.proj(x)], 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(a))))


class DualAttention(nn.Module):
    """Channel and spatial attention side by side, concatenated and fused by a 1x1 conv-BN-ReLU."""

    def __init__(self, dim: int, reduction: int):
        super().__init__()
        self.channel = ChannelAttention(dim, reduction)
        self.spatial = SpatialAttention(dim)
        self.fuse = ConvBNReLU(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.channel(x), self.spatial(x)], 1))


class DilatedBranch(nn.Module):
    """Two dilated 3x3 conv-BN-ReLU, both outputs concatenated and fused, attention, residual."""

    def __init__(self, dim: int, dilation: int, reduction: int):
        super().__init__()
        self.conv1 = ConvBNReLU(dim, dim, 3, dilation)
        self.conv2 = ConvBNReLU(dim, dim, 3, dilation)
        self.fuse = ConvBNReLU(2 * dim, dim)
        self.attn = DualAttention(dim, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        y = self.fuse(torch.cat([a, self.conv2(a)], 1))
        return self.attn(y) + x


class BranchGate(nn.Module):
    """Weights each branch by a sigmoid gate computed from the branches' global means, then fuses the sum."""

    def __init__(self, dim: int, branches: int):
        super().__init__()
        self.fc1 = nn.Linear(branches, branches, bias=False)
        self.fc2 = nn.Linear(branches, branches, bias=False)
        self.fuse = ConvBNReLU(dim, dim)

    def forward(self, ys: list[torch.Tensor]) -> torch.Tensor:
        m = torch.stack([y.mean((1, 2, 3)) for y in ys], 1)  # [B, branches]
        g = torch.sigmoid(self.fc2(F.relu(self.fc1(m))))
        return self.fuse(sum(y * g[:, i, None, None, None] for i, y in enumerate(ys)))


class RandomFourierFeatures(nn.Module):
    """``sqrt(2 / K) * cos(W f + b)`` of a learned 1x1 projection ``f`` of the input, per position.

    ``W`` is ``[K, D]`` with ``D = proj_dim``; see the module docstring for the two ways ``W`` and ``b`` are drawn.
    """

    def __init__(self, dim: int, proj_dim: int, features: int, mode: str = "fixed", seed: int = 0):
        super().__init__()
        if mode not in RFF_MODES:
            raise ValueError(f"rff mode must be one of {RFF_MODES}, got {mode!r}")
        self.proj = ConvBNReLU(dim, proj_dim)
        self.features = features
        self.mode = mode
        weight, bias = self.draw(features, proj_dim, torch.Generator().manual_seed(seed))
        # Fixed draws are part of the model (saved with the weights); parity mode keeps none.
        persistent = mode == "fixed"
        self.register_buffer("weight", weight if persistent else torch.empty(0), persistent=persistent)
        self.register_buffer("bias", bias if persistent else torch.empty(0), persistent=persistent)

    @staticmethod
    def draw(features: int, proj_dim: int, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """One draw, in the official order: ``W = randn(K, D)`` first, then ``b = uniform_(0, 2 pi)``."""
        weight = torch.randn(features, proj_dim, generator=generator)
        bias = torch.empty(features).uniform_(0, 2 * math.pi, generator=generator)
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.proj(x)
        if self.mode == "parity":
            weight, bias = self.draw(self.features, f.shape[1])
            weight, bias = weight.to(f.device), bias.to(f.device)
        else:
            weight, bias = self.weight, self.bias
        # The phases W f + b reach tens of radians: in bf16/fp16 their rounding error would be ~0.1 rad, so this
        # small (1/32-scale) product runs in float32 even under autocast.
        with _autocast_off(f.device.type):
            z = F.conv2d(f.float(), weight.float()[:, :, None, None], bias.float())
            return (math.sqrt(2.0 / self.features) * torch.cos(z)).to(f.dtype)


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Leave autocast for a block, if it is on (device types without autocast, e.g. meta, need nothing)."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.autocast(device_type, enabled=False)
    except RuntimeError:
        pass
    return contextlib.nullcontext()


class MultiReceptiveFieldBlock(nn.Module):
    def __init__(self, dim: int, dilations: tuple[int, ...], reduction: int, rff_proj_dim: int,
                 rff: str = "fixed", seed: int = 0):
        super().__init__()
        # The RFF map feeds branch 1 in place of the input, so it has ``dim`` features.
        self.rff = RandomFourierFeatures(dim, rff_proj_dim, dim, rff, seed)
        self.branches = nn.ModuleList(DilatedBranch(dim, d, reduction) for d in dilations)
        self.gate = BranchGate(dim, len(dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = [branch(self.rff(x) if i == 0 else x) for i, branch in enumerate(self.branches)]
        return self.gate(ys) + x


class Bottleneck(nn.Module):
    """``r = relu(conv1(x)) + x; r = conv2(r); r = mrfe(r); return r + x`` at the deepest scale."""

    def __init__(self, dim: int, dilations: tuple[int, ...] = (1, 3, 5), reduction: int = 16,
                 rff_proj_dim: int | None = None, rff: str = "fixed", seed: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.mrfe = MultiReceptiveFieldBlock(dim, dilations, reduction, rff_proj_dim or dim // 8, rff, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(F.relu(self.conv1(x)) + x)
        return self.mrfe(r) + x

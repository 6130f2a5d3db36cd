"""Transformer building blocks shared by the KA_Net encoder and decoder.

Tokens travel as ``[B, N, C]`` with the spatial size ``(H, W)`` passed alongside. ``tokens_to_map`` gives an
``[B, C, H, W]`` *view* of them (channels-last strides, no copy), so convolutions between attention blocks run
in channels_last without extra transposes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def tokens_to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[B, H*W, C]`` -> ``[B, C, H, W]`` view (channels-last memory layout)."""
    b, _, c = x.shape
    return x.reshape(b, h, w, c).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, H*W, C]``; free for channels-last inputs."""
    return x.flatten(2).transpose(1, 2)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop whole residual branches per sample (training only)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class PatchEmbed(nn.Module):
    """Overlapping patch embedding: strided conv then LayerNorm. Returns tokens and their grid size."""

    def __init__(self, in_dim: int, dim: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, dim, kernel, stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)  # default eps (1e-5), as in the reference network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.conv(x)
        h, w = x.shape[-2:]
        return self.norm(map_to_tokens(x)), h, w


class ConvFFN(nn.Module):
    """Feed-forward with a 3x3 depthwise conv between the two linears (Mix-FFN)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)
        x = map_to_tokens(self.dwconv(tokens_to_map(x, h, w)))
        return self.fc2(self.act(x))


class KVReduce(nn.Module):
    """Shrinks the key/value grid by ``ratio`` (conv with kernel = stride = ratio, then LayerNorm)."""

    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, ratio, ratio)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.norm(map_to_tokens(self.conv(tokens_to_map(x, h, w))))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, heads, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, heads * d)


class ReducedAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a spatially reduced grid.

    Runs through ``scaled_dot_product_attention``: flash / memory-efficient kernels never hold the
    ``N x N/r^2`` score matrix, which is what makes 1080p and 4K feasible.
    """

    def __init__(self, dim: int, heads: int, sr_ratio: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.reduce = KVReduce(dim, sr_ratio) if sr_ratio > 1 else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        q = _split_heads(self.q(x), self.heads)
        src = self.reduce(x, h, w) if self.reduce is not None else x
        k, v = _split_heads(self.kv(src), 2 * self.heads).chunk(2, dim=1)
        return self.out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


def nearest_indices(n_out: int, n_in: int, device: torch.device) -> torch.Tensor:
    """Source rows of a nearest-neighbour resize from ``n_in`` to ``n_out`` rows.

    Same float32 arithmetic as ``F.interpolate(mode="nearest")`` (``floor(i * (n_in / n_out))``), written with
    plain tensor ops so ONNX export with a dynamic ``n_out`` stays exact.
    """
    i = torch.arange(n_out, device=device, dtype=torch.float32)
    # torch.full fills on the device; torch.tensor would copy from the host on every call (a sync on CUDA).
    scale = torch.full((), float(n_in), device=device, dtype=torch.float32) / n_out
    return torch.floor(i * scale).clamp(max=n_in - 1).long()


class QueryAttention(nn.Module):
    """Attention whose queries are learned vectors (TransWeather task queries), not the tokens.

    The ``n_queries`` learned queries are resized (nearest) to the token count so the output has one row per token.
    """

    def __init__(self, dim: int, heads: int, n_queries: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(1, n_queries, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(self.query)  # project the few queries, then pick rows: same result, less work
        q = q[:, nearest_indices(n, q.shape[1], x.device)]
        q = _split_heads(q, self.heads).expand(b, -1, -1, -1)
        k, v = _split_heads(self.kv(x), 2 * self.heads).chunk(2, dim=1)
        return self.out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class TransformerBlock(nn.Module):
    """Pre-norm block: attention and conv-FFN, each with a residual and stochastic depth."""

    def __init__(self, attn: nn.Module, dim: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x), h, w), self.drop_path, self.training)
        return x + drop_path(self.ffn(self.norm2(x), h, w), self.drop_path, self.training)


def init_transformer_weights(module: nn.Module) -> None:
    """Initialisation of the transformer parts (SegFormer/TransWeather convention)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

"""KA_Net transformer decoder: one strided embedding below the deepest scale, then task-query attention blocks.

Its input is the bottleneck output at 1/32 scale; its output is a ``[B, C, H/64, W/64]`` map.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import PatchEmbed, QueryAttention, TransformerBlock, init_transformer_weights, tokens_to_map


class Decoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, n_queries: int,
                 drop_path_rate: float = 0.0, drop_path_span: int | None = None):
        super().__init__()
        # The reference spreads stochastic depth over a longer (unbuilt) schedule; ``drop_path_span`` keeps that.
        span = max((drop_path_span or depth) - 1, 1)
        self.embed = PatchEmbed(dim, dim, 3, 2)
        self.blocks = nn.ModuleList(
            TransformerBlock(QueryAttention(dim, heads, n_queries), dim, mlp_ratio, drop_path_rate * i / span)
            for i in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        init_transformer_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, h, w = self.embed(x)
        for blk in self.blocks:
            t = blk(t, h, w)
        return tokens_to_map(self.norm(t), h, w)

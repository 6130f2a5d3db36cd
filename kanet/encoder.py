"""KA_Net encoder: a four-stage hierarchical transformer with intra-patch side branches (TransWeather style).

Stage ``s`` embeds the previous feature map with an overlapping strided conv and runs ``depths[s]`` attention
blocks. For the first three stages a side branch embeds the stage *input* once more (3x3, stride 2), runs one
block on it at the next scale, and adds the result to the next stage's embedding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .layers import PatchEmbed, ReducedAttention, TransformerBlock, init_transformer_weights, tokens_to_map

if TYPE_CHECKING:
    from .model import KANetConfig


class EncoderStage(nn.Module):
    def __init__(self, in_dim: int, dim: int, kernel: int, stride: int, depth: int, heads: int, sr_ratio: int,
                 mlp_ratio: float, drop_paths: list[float]):
        super().__init__()
        self.embed = PatchEmbed(in_dim, dim, kernel, stride)
        self.blocks = nn.ModuleList(
            TransformerBlock(ReducedAttention(dim, heads, sr_ratio), dim, mlp_ratio, dp) for dp in drop_paths[:depth])
        self.norm = nn.LayerNorm(dim, eps=1e-6)


class IntraPatchBranch(nn.Module):
    """Side branch: one extra embedding (stride 2) and one block, producing features for the next stage."""

    def __init__(self, in_dim: int, dim: int, heads: int, sr_ratio: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.embed = PatchEmbed(in_dim, dim, 3, 2)
        self.block = TransformerBlock(ReducedAttention(dim, heads, sr_ratio), dim, mlp_ratio, drop_path)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x_map: torch.Tensor) -> torch.Tensor:
        t, h, w = self.embed(x_map)
        return self.norm(self.block(t, h, w))


class Encoder(nn.Module):
    """Returns the four feature maps ``[B, dims[s], H / 2^(s+2), W / 2^(s+2)]``."""

    def __init__(self, cfg: KANetConfig):
        super().__init__()
        dims = cfg.dims
        total = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(cfg.depths[:s]) for s in range(4)]
        self.stages = nn.ModuleList()
        for s in range(4):
            in_dim = cfg.in_chans if s == 0 else dims[s - 1]
            kernel, stride = (7, 4) if s == 0 else (3, 2)
            self.stages.append(EncoderStage(in_dim, dims[s], kernel, stride, cfg.depths[s], cfg.heads[s],
                                            cfg.sr_ratios[s], cfg.mlp_ratio, dpr[starts[s]:]))
        self.intra = nn.ModuleList(
            IntraPatchBranch(dims[s], dims[s + 1], cfg.intra_heads[s], cfg.intra_sr_ratios[s], cfg.mlp_ratio,
                             dpr[starts[s]])
            for s in range(3))
        # The official network builds a fourth side-branch embedding that its forward never calls. The paper's
        # parameter count includes it, so the official configurations keep it (checkpoints map 1:1).
        self.unused_intra_embed = PatchEmbed(dims[0], dims[3], 3, 2) if cfg.keep_unused else None
        init_transformer_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats: list[torch.Tensor] = []
        side: torch.Tensor | None = None
        for s, stage in enumerate(self.stages):
            t, h, w = stage.embed(x if s == 0 else feats[-1])
            if side is not None:
                t = t + side
            if s < 3:
                side = self.intra[s](tokens_to_map(t, h, w))
            for blk in stage.blocks:
                t = blk(t, h, w)
            feats.append(tokens_to_map(stage.norm(t), h, w))
        return feats

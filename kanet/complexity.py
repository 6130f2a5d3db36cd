"""Parameter and multiply-accumulate counts (for the docs table and the benchmark)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .model import KANet


def count_parameters(model: KANet) -> int:
    return sum(p.numel() for p in model.parameters())


def _attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    # q @ k^T and p @ v: 2 * (B h N M d) multiply-adds, 2 FLOPs each.
    b, h, n, d = query_shape
    m, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * n * m * (d + dv)


def count_macs(model: KANet, height: int, width: int) -> int:
    """Multiply-accumulates of one forward at ``height`` x ``width`` (padded to the multiple), batch 1.

    Counts convolutions, linear layers and both attention matmuls; elementwise ops, norms and activations are
    not counted, as usual for GMAC tables. Runs on the meta device: no memory, no compute.
    """
    m = model.size_multiple
    h, w = max(-(-height // m) * m, model.min_size), max(-(-width // m) * m, model.min_size)
    with torch.device("meta"):
        shadow = KANet(model.config, rff="parity").eval()
        x = torch.zeros(1, 3, h, w)
    # PyTorch's counter has no formula for the CPU flash-attention kernel; give it one.
    aten = torch.ops.aten
    custom = {aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}
    counter = FlopCounterMode(display=False, custom_mapping=custom)
    with torch.no_grad(), counter:
        shadow(x)
    return counter.get_total_flops() // 2

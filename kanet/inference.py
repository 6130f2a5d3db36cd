"""Inference helper: any image size in, same size out, tiled automatically above a memory budget."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import transform as coef
from .model import KANet
from .tiling import plan_tile_size, run_tiled

# Frames above this many pixels are processed in overlapping tiles: 2560x1440 runs whole, 4K and up are tiled.
# All attention goes through scaled_dot_product_attention, so the budget is about activations, not scores.
DEFAULT_MAX_PIXELS = 2560 * 1440
DEFAULT_OVERLAP = 128
# Coefficient models (ours) run on their input reflected outward by this many pixels on every side, then cropped:
# the zero padding of the network's convolutions otherwise leaves a lighter, less dehazed band along every edge
# (about 10 levels on real photos), and held-out PSNR and SSIM rise with it gone (BENCHMARKS.md). The official
# image models keep the official padding, so that they match the official outputs.
BORDER = 8


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad ``x`` ``[B, C, h, w]`` at the bottom/right to ``height`` x ``width`` by reflection.

    Reflection needs the pad to be smaller than the side; tiny inputs fall back to edge replication.
    """
    ph, pw = height - x.shape[-2], width - x.shape[-1]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def padded_size(model: KANet, height: int, width: int) -> tuple[int, int]:
    """The input size the network actually runs at for a ``height`` x ``width`` image."""
    m, lo = model.size_multiple, model.min_size
    return max(-(-height // m) * m, lo), max(-(-width // m) * m, lo)


def border(model: KANet, height: int, width: int) -> int:
    """How far ``model``'s input (a frame or a tile) is reflected outward before it runs."""
    return min(BORDER, height - 1, width - 1) if model.predicts_coefficients else 0


def _run_whole(model: KANet, rgb: torch.Tensor) -> torch.Tensor:
    h, w = rgb.shape[-2:]
    b = border(model, h, w)
    x = F.pad(rgb * 2 - 1, (b, b, b, b), mode="reflect") if b else rgb * 2 - 1
    y, _ = model(pad_to(x, *padded_size(model, h + 2 * b, w + 2 * b)))
    return y[..., b:b + h, b:b + w]


def dehaze(model: KANet, rgb: torch.Tensor, *, tile: int | None = None, max_pixels: int | None = None,
           overlap: int = DEFAULT_OVERLAP) -> torch.Tensor:
    """Dehaze ``rgb`` ``[B, 3, H, W]`` in [0, 1]; returns ``[B, 3, H, W]`` in [0, 1], same device and dtype.

    Normalises to [-1, 1], reflect-pads to the network's multiple, crops back and clamps. Runs on the model's
    device and parameter dtype (autocast applies if the caller enabled it). Tiling: ``tile`` forces square tiles of
    that side (rounded up to the multiple); otherwise frames whose padded size exceeds ``max_pixels`` (default
    ``DEFAULT_MAX_PIXELS``) are split into the fewest tiles that fit. Tiles overlap by ``overlap`` pixels and are
    cross-faded. ``torch.no_grad`` / ``inference_mode`` are the caller's business. A coefficient model's transform
    is applied at the input's resolution (:func:`coefficients` gives the transform itself).
    """
    x, y = _run(model, rgb, tile, max_pixels, overlap)
    if model.predicts_coefficients:
        y = coef.apply(x.float(), *coef.split(y.float()))
    return y.clamp(0, 1).to(device=rgb.device, dtype=rgb.dtype)


def coefficients(model: KANet, rgb: torch.Tensor, *, tile: int | None = None, max_pixels: int | None = None,
                 overlap: int = DEFAULT_OVERLAP) -> tuple[torch.Tensor, torch.Tensor]:
    """A coefficient model's transform of ``rgb`` ``[B, 3, h, w]`` in [0, 1]: float32 gains ``[B, 2, h, w]`` and
    offsets ``[B, 3, h, w]`` on the input's device, to be upsampled and applied to any resolution of the same image
    with :func:`kanet.transform.apply`. Arguments as for :func:`dehaze`."""
    if not model.predicts_coefficients:
        raise ValueError("this KA_Net predicts images, not coefficients (KANetConfig.output)")
    _, y = _run(model, rgb, tile, max_pixels, overlap)
    gain, offset = coef.split(y.float())
    return gain.to(rgb.device), offset.to(rgb.device)


def _run(model: KANet, rgb: torch.Tensor, tile: int | None, max_pixels: int | None,
         overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input on the model's device and dtype, raw network output at the input's size)."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected an RGB batch [B, 3, H, W], got shape {tuple(rgb.shape)}")
    param = next(model.parameters())
    x = rgb.to(device=param.device, dtype=param.dtype)
    h, w = x.shape[-2:]
    ph, pw = padded_size(model, h, w)
    m = model.size_multiple
    if tile is not None:
        side = max(-(-tile // m) * m, model.min_size)
        tiles = (side, side) if (h > side or w > side) else None
        overlap = min(overlap, side // 4)
    else:
        budget = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        overlap = min(overlap, int(budget**0.5) // 4)  # small budgets get proportionally smaller overlaps
        tiles = plan_tile_size(h, w, budget, overlap, m, model.min_size) if ph * pw > budget else None
    if tiles is None:
        return x, _run_whole(model, x)
    return x, run_tiled(lambda t: _run_whole(model, t), x, tiles[0], tiles[1], overlap)

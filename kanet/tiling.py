"""Overlapping tiles with linear blending, for frames above the memory budget.

Tiles overlap by at least ``overlap`` pixels; inside an overlap the two tiles' outputs are cross-faded with
complementary linear ramps, so no seam appears where one tile's context ends. Weights are normalised by their
sum, which also covers corners where four tiles meet.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spaced starts of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` shared."""
    if length <= tile:
        return [0]
    n = -(-(length - overlap) // (tile - overlap))
    n = max(n, 2)
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _split(length: int, n: int, overlap: int, multiple: int, min_size: int) -> int:
    """Tile side that covers ``length`` with ``n`` tiles overlapping by ``overlap`` (rounded up to ``multiple``)."""
    return max(_round_up(-(-(length + (n - 1) * overlap) // n), multiple), min_size)


def plan_tile_size(height: int, width: int, max_pixels: int, overlap: int, multiple: int, min_size: int
                   ) -> tuple[int, int]:
    """The ``(tile_h, tile_w)`` with ``tile_h * tile_w <= max_pixels`` that processes the fewest pixels in all."""
    smallest = max(min_size, _round_up(2 * overlap + 1, multiple))
    if smallest * smallest > max_pixels:
        raise ValueError(f"max_pixels={max_pixels} is too small for {smallest}x{smallest} tiles "
                         f"(overlap {overlap})")
    best: tuple[int, int, int] | None = None
    ny = 1
    while True:
        th = _split(height, ny, overlap, multiple, smallest)
        room = max_pixels // th // multiple * multiple  # widest tile that fits next to this height
        if room >= smallest:
            nx = 1 if room >= width else -(-(width - overlap) // (room - overlap))
            tw = _split(width, nx, overlap, multiple, smallest)
            while th * tw > max_pixels:  # rounding up to the multiple can overshoot by a little
                nx += 1
                tw = _split(width, nx, overlap, multiple, smallest)
            cost = len(tile_starts(height, th, overlap)) * len(tile_starts(width, tw, overlap)) * th * tw
            if best is None or cost < best[0]:
                best = (cost, th, tw)
        if th <= smallest:
            break
        ny += 1
    assert best is not None
    return best[1], best[2]


def _ramp(length: int, start: int, stops: list[int], tile: int, device: torch.device) -> torch.Tensor:
    """1-D blending weight of the tile at ``start``: rises over the overlap with the previous tile, falls over the
    overlap with the next one, 1 elsewhere (and at the frame border)."""
    size = min(tile, length)
    pos = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    w = torch.ones(size, device=device)
    i = stops.index(start)
    if i > 0:
        ov = stops[i - 1] + size - start
        w = torch.minimum(w, pos / ov)
    if i + 1 < len(stops):
        ov = start + size - stops[i + 1]
        w = torch.minimum(w, (size - pos) / ov)
    return w


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile_h: int, tile_w: int,
              overlap: int) -> torch.Tensor:
    """Apply ``fn`` (same-size image-to-image, ``[B, C, h, w] -> [B, C', h, w]``) tile by tile, blended."""
    b, _, h, w = x.shape
    ys, xs = tile_starts(h, tile_h, overlap), tile_starts(w, tile_w, overlap)
    out: torch.Tensor | None = None
    total = torch.zeros(1, 1, h, w, device=x.device)
    for y0 in ys:
        wy = _ramp(h, y0, ys, tile_h, x.device)
        for x0 in xs:
            wx = _ramp(w, x0, xs, tile_w, x.device)
            part = fn(x[..., y0:y0 + tile_h, x0:x0 + tile_w]).float()
            if out is None:
                out = torch.zeros(b, part.shape[1], h, w, device=x.device)
            weight = wy[:, None] * wx[None, :]
            out[..., y0:y0 + tile_h, x0:x0 + tile_w] += part * weight
            total[..., y0:y0 + tile_h, x0:x0 + tile_w] += weight
    assert out is not None
    return out / total

"""How blocky a frame is: the 8x8 grid that JPEG, MPEG-2 and H.264 leave in a compressed picture.

In a compressed frame's flat regions (a grey foggy sky), neighbouring blocks differ by a fraction of a level, and
the steps sit on the block grid. A dehazing gain of 2 to 4 makes that mosaic visible, and it flickers from frame to
frame. A clean picture has as much faint detail there, but nothing on the grid. So the engine's automatic noise
floor (``Engine``, ``noise_floor="auto"``) comes from this measure: frames with blocks have their flat regions'
detail kept as it was (``guided.damp_flat_regions``), clean ones are dehazed in full.

The measure: in flat parts of the luma (steps under ``FLAT`` levels), the mean step across the grid's boundaries
over the mean step inside the blocks. Measured on our evaluation sets (BENCHMARKS.md, "Compression blocks"): clean
pictures (PNGs, clean training JPEGs, our x264 pans) 1.01-1.30; web JPEGs 1.46-2.35; the real fog clip (1080p
H.264) 1.99-2.82.
"""

from __future__ import annotations

import torch

GRID = 8  # the transform block of JPEG and MPEG-2, and H.264's larger one
FLAT = 4.0  # levels: larger steps are edges and texture, not blocks
EVERY = 16  # steps are measured on every 16th row (column): the grid is the same on all of them
CLEAN = 1.3  # ratios up to this are a clean picture (measured up to 1.30)
BLOCKY = 2.0  # from this ratio on, the full floor
FLOOR = 0.5  # levels: the floor of a blocky frame (1 cleans a sky completely, but fades faint shapes in it too)


def lines(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows and the columns of ``frames`` (``[..., H, W]``) that the measure reads: every ``EVERY``-th of each,
    so that what the caller turns into luma is an eighth of the frame."""
    return frames[..., ::EVERY, :], frames[..., ::EVERY]


def grid_ratio(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Per frame ``[B]``: the mean flat step across the ``GRID`` boundaries over the mean flat step inside the blocks,
    from the luma of the frames' ``lines`` (rows ``[B,n,W]`` and columns ``[B,H,m]``, 8-bit levels, any dtype and
    device). The grid is looked for at every offset along each axis (a cropped picture's is not at 0). 1 where there
    is nothing to measure."""
    grid = torch.zeros(2, rows.shape[0], device=rows.device)  # total and count of the flat steps on the grid
    rest = torch.zeros(2, rows.shape[0], device=rows.device)  # and of those off it
    for line in (rows.float(), columns.float().transpose(1, 2)):
        n = (line.shape[-1] - 1) // GRID * GRID
        steps = (line[..., 1:n + 1] - line[..., :n]).abs().unflatten(-1, (-1, GRID))
        flat = steps < FLAT
        total = torch.where(flat, steps, 0.0).sum((1, 2))  # [B, GRID]: by position in the block
        count = flat.sum((1, 2)).float()
        mean = total / count.clamp(min=1)
        phase = mean.argmax(1, keepdim=True)  # where the grid is: the largest mean step
        on_total, on_count = total.gather(1, phase)[:, 0], count.gather(1, phase)[:, 0]
        grid += torch.stack((on_total, on_count))
        rest += torch.stack((total.sum(1) - on_total, count.sum(1) - on_count))
    on, off = (grid[0] / grid[1].clamp(min=1)), (rest[0] / rest[1].clamp(min=1))
    # a small constant: a flat frame (both 0) reads 1, and sub-level noise does not make a large ratio of tiny means
    return (on + 0.02) / (off + 0.02)


def noise_floor(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Per frame ``[B]``: the noise floor in 8-bit levels, from the luma of the frames' ``lines`` (as for
    ``grid_ratio``): 0 for a clean picture, ``FLOOR`` for a blocky one, in proportion between."""
    return FLOOR * ((grid_ratio(rows, columns) - CLEAN) / (BLOCKY - CLEAN)).clamp(0, 1)

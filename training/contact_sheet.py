"""Write a contact sheet of synthetic haze so a person can judge it.

Each row: the clean photo, its pseudo-depth (white = far), then ``--draws`` hazy versions from independent draws of
the hazy imaging model. With ``--real`` a last block of real hazy photos is added for comparison.

    python -m training.contact_sheet --out sheet.png [--images DIR] [--real DIR] [--rows 8] [--size 192] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from training.cli import UsageError, run_main
from training.depth import pseudo_depth
from training.images import list_images, read_rgb, to_tensor, to_uint8, write_png
from training.synthesis import HazeConfig, synthesize_haze

__all__ = ["contact_sheet", "main"]


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop after resizing the short side to ``size``: uint8 :math:`(size, size, 3)`."""
    h, w = image.shape[:2]
    s = size / min(h, w)
    image = cv2.resize(image, (max(size, round(w * s)), max(size, round(h * s))), interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return image[y:y + size, x:x + size]


def _label(width: int, titles: list[str], size: int) -> np.ndarray:
    strip = np.full((22, width, 3), 255, np.uint8)
    for i, title in enumerate(titles):
        cv2.putText(strip, title, (i * size + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def contact_sheet(clean_files: Sequence[Path], *, size: int = 192, draws: int = 3, seed: int = 0,
                  real_files: Sequence[Path] = (), config: HazeConfig = HazeConfig()) -> np.ndarray:
    """Compose the sheet: uint8 RGB :math:`(H, W, 3)`.

    Args:
        clean_files: one row per file.
        size: tile side in pixels.
        draws: hazy versions per row.
        seed: seed of the haze draws.
        real_files: real hazy photos for a comparison block (rows of ``draws + 2`` tiles).
        config: parameter ranges of the hazy imaging model.
    """
    clean = torch.stack([to_tensor(_square(read_rgb(f, size), size)) for f in clean_files])
    depth = pseudo_depth(clean)
    generator = torch.Generator().manual_seed(seed)
    columns = [clean, depth.expand(-1, 3, -1, -1)]
    columns += [synthesize_haze(clean, generator, depth=depth, config=config).hazy for _ in range(draws)]
    rows = [np.concatenate([to_uint8(c[i]) for c in columns], 1) for i in range(len(clean_files))]
    width = rows[0].shape[1]
    titles = ["clean", "pseudo-depth"] + [f"synthetic haze {k + 1}" for k in range(draws)]
    parts = [_label(width, titles, size)] + rows
    if real_files:
        tiles = [_square(read_rgb(f, size), size) for f in real_files]
        per_row = draws + 2
        tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % per_row)
        parts.append(_label(width, ["real hazy photos for comparison"], size * per_row))
        parts += [np.concatenate(tiles[i:i + per_row], 1) for i in range(0, len(tiles), per_row)]
    return np.concatenate(parts, 0)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.contact_sheet", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--images", type=Path, default=Path("../shared/data/clean"), help="folder of clean photos")
    parser.add_argument("--real", type=Path, default=None, help="folder of real hazy photos to show for comparison")
    parser.add_argument("--rows", type=int, default=8, help="number of clean photos (rows)")
    parser.add_argument("--real-count", type=int, default=10, help="number of real hazy photos shown")
    parser.add_argument("--draws", type=int, default=3, help="hazy versions per photo")
    parser.add_argument("--size", type=int, default=192, help="tile size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed for the choice of photos and the haze")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.rows < 1 or args.draws < 1 or args.size < 32:
        raise UsageError("--rows and --draws must be >= 1 and --size >= 32")
    if args.out.suffix.lower() != ".png":
        raise UsageError(f"--out must name a .png file: {args.out}")
    files = list_images(args.images)
    pick = np.random.default_rng(args.seed).permutation(len(files))[: args.rows]
    real = []
    if args.real is not None:
        real_all = list_images(args.real)
        real = [real_all[i] for i in np.random.default_rng(args.seed).permutation(len(real_all))[: args.real_count]]
    try:  # (as python -m streamdehaze.evaluate makes its --out: runs/ need not exist in a fresh clone)
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write into {args.out.parent}: {exc.strerror}") from None
    sheet = contact_sheet([files[i] for i in sorted(pick)], size=args.size, draws=args.draws, seed=args.seed,
                          real_files=real)
    write_png(args.out, sheet)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

"""Training data: a decoded in-memory image cache, a file-hash validation split, and batch sampling.

On a 2-core machine JPEG decoding would cost more than a tiny network's step, so every image is decoded once,
resized to a short side of ``cache_short_side`` and kept as uint8, with its (given or pseudo-) depth map next to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from training.cli import UsageError
from training.depth import normalise_depth, pseudo_depth
from training.images import list_images, read_rgb, to_tensor

__all__ = ["is_validation", "split_files", "ImageCache", "PairedCache", "random_windows"]


def is_validation(name: str, fraction: float) -> bool:
    """Deterministic split by file name: the first 8 bytes of SHA-1(name) as a fraction of 2^64."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def split_files(files: Sequence[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """(train, validation) lists, split by :func:`is_validation` on each file's name."""
    val = [f for f in files if is_validation(f.name, fraction)]
    train = [f for f in files if not is_validation(f.name, fraction)]
    return train, val


@dataclass
class ImageCache:
    """Decoded clean images with their depth: per image uint8 :math:`(4, H, W)`, RGB then depth (255 = far), kept
    in one tensor so crops cut both at once."""

    names: list[str]
    stacks: list[torch.Tensor]
    upscaled: list[str] = field(default_factory=list)  # those smaller than ``load``'s ``min_side``

    @classmethod
    def load(cls, files: Sequence[Path], short_side: int, depth_folder: Path | None = None,
             min_side: int = 0) -> ImageCache:
        """Decode ``files`` (resized to ``short_side``) with depth from ``depth_folder`` (same stem, any image
        format) or pseudo-depth.

        Images whose short side after resizing is under ``min_side`` are upscaled to it.
        """
        names, stacks, upscaled = [], [], []
        depth_files = {p.stem: p for p in list_images(depth_folder)} if depth_folder else {}
        for f in files:
            rgb = to_tensor(read_rgb(f, short_side))
            if min(rgb.shape[-2:]) < min_side:
                upscaled.append(f.name)
                s = min_side / min(rgb.shape[-2:])
                size = (max(min_side, round(rgb.shape[1] * s)), max(min_side, round(rgb.shape[2] * s)))
                rgb = F.interpolate(rgb[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1)
            if depth_folder:
                if f.stem not in depth_files:
                    raise UsageError(f"no depth map for {f.name} in {depth_folder}")
                d = torch.from_numpy(read_rgb(depth_files[f.stem], grey=True))[None, None]
                d = normalise_depth(F.interpolate(d, size=rgb.shape[-2:], mode="bilinear", align_corners=False))[0]
            else:
                d = pseudo_depth(rgb[None])[0]
            names.append(f.name)
            stacks.append((torch.cat([rgb, d]) * 255).round().byte())
        return cls(names, stacks, upscaled)

    def without_fog(self, max_fog: float) -> tuple[ImageCache, list[str]]:
        """The images whose FADE fog density (at the cached size) is at most ``max_fog``, and the names dropped.

        Some "haze-free" photos hold real haze (misty hills, dusty skylines): as targets they teach a model to keep
        distant haze. Measured on the cached copy, which is what training crops from.
        """
        from training.metrics import fade_density

        keep = [fade_density(s[:3].permute(1, 2, 0).numpy()) <= max_fog for s in self.stacks]
        dropped = [n for n, k in zip(self.names, keep) if not k]
        return ImageCache([n for n, k in zip(self.names, keep) if k],
                          [s for s, k in zip(self.stacks, keep) if k]), dropped

    def __len__(self) -> int:
        return len(self.stacks)


@dataclass
class PairedCache:
    """Decoded real hazy/clean pairs (uint8 :math:`(3, H, W)` each, same size), matched by file stem."""

    names: list[str]
    hazy: list[torch.Tensor]
    clean: list[torch.Tensor]

    @classmethod
    def load(cls, hazy_folder: Path, clean_folder: Path, short_side: int,
             keep: Callable[[str], bool] = lambda name: True) -> PairedCache:
        clean_files = {p.stem: p for p in list_images(clean_folder)}
        names, hazy, clean = [], [], []
        for f in list_images(hazy_folder):
            if not keep(f.name):
                continue
            if f.stem not in clean_files:
                raise UsageError(f"no clean image for {f.name} in {clean_folder}")
            h = to_tensor(read_rgb(f, short_side))
            c = to_tensor(read_rgb(clean_files[f.stem]))
            c = F.interpolate(c[None], size=h.shape[-2:], mode="area")[0] if c.shape != h.shape else c
            names.append(f.name)
            hazy.append((h * 255).round().byte())
            clean.append((c * 255).round().byte())
        return cls(names, hazy, clean)

    def __len__(self) -> int:
        return len(self.hazy)


def random_windows(stacks: Sequence[torch.Tensor], count: int, side: int,
                   generator: torch.Generator) -> torch.Tensor:
    """Random square windows with random horizontal flips from uint8 images of different sizes.

    Args:
        stacks: per image, uint8 :math:`(C, H, W)` with :math:`H, W \\ge side` (channels concatenated by the caller,
            e.g. RGB + depth, so they are cut together).
        count: windows to cut.
        side: window side.
        generator: randomness (CPU generator): image index, position and flip, in that order per window.

    Returns:
        float32 :math:`(count, C, side, side)` in [0, 1].
    """
    out = []
    for _ in range(count):
        i = int(torch.randint(len(stacks), (1,), generator=generator))
        c, h, w = stacks[i].shape
        if min(h, w) < side:
            raise ValueError(f"image {i} ({w}x{h}) is smaller than the {side} px window")
        y = int(torch.randint(h - side + 1, (1,), generator=generator))
        x = int(torch.randint(w - side + 1, (1,), generator=generator))
        flip = bool(torch.rand((), generator=generator) < 0.5)
        crop = stacks[i][:, y:y + side, x:x + side]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out).float().div_(255)

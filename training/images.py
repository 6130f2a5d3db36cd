"""Image files: listing, decoding to RGB arrays, tensors, and writing PNGs atomically."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from streamdehaze.truncation import truncated
from training.cli import UsageError, atomic_path

__all__ = ["IMAGE_SUFFIXES", "image_files", "list_images", "read_rgb", "to_tensor", "to_uint8", "write_png"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name, hidden ones left out (a Mac's ._NAME.jpg beside each
    photo holds its metadata, not a picture); none where the folder is missing."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def list_images(folder: str | Path) -> list[Path]:
    """``image_files``; ``UsageError`` if the folder is missing or has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"image folder not found: {folder}")
    files = image_files(folder)
    if not files:
        raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def read_rgb(path: str | Path, short_side: int | None = None, *, grey: bool = False) -> np.ndarray:
    """Decode an image file.

    Args:
        path: image file.
        short_side: if given and smaller than the image's, resize (area filter) so the shorter side has this length.
        grey: read one channel (depth maps), keeping 16-bit data as float.

    Returns:
        uint8 RGB :math:`(H, W, 3)`, or float32 :math:`(H, W)` in [0, 1] when ``grey``.
    """
    flag = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read image {path}: {exc.strerror}") from None
    if truncated(data):  # (libjpeg would pad it with grey, and a model learn grey from it)
        raise UsageError(f"cannot decode image: {path}: truncated (its data ends before the picture does)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise UsageError(f"cannot decode image: {path}")
    if grey:
        image = image.astype(np.float32) / float(np.iinfo(image.dtype).max if image.dtype.kind == "u" else 1.0)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if short_side is not None and min(image.shape[:2]) > short_side:
        h, w = image.shape[:2]
        s = short_side / min(h, w)
        image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return image


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 RGB :math:`(H, W, 3)` -> float32 :math:`(3, H, W)` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """float :math:`(3, H, W)` in [0, 1] (clamped) -> uint8 RGB :math:`(H, W, 3)`."""
    return image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write uint8 RGB :math:`(H, W, 3)` to ``path`` through a temporary name, renamed on success."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise UsageError(f"cannot write image: {path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

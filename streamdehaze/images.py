"""Image mode: one image in, one image out; a folder in, a folder out with the same file names."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .engine import Engine
from .errors import MediaError, UsageError
from .models import PredictsCoefficients
from .outputs import atomic_output, check_output

log = logging.getLogger("streamdehaze")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path) -> np.ndarray:
    """RGB ``[H,W,3]`` uint8 or uint16, upright (EXIF orientation applied)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if bgr is None:
        raise MediaError(f"cannot read image {path}: not an image, or corrupt")
    return bgr[..., ::-1]


def write_image(path: Path, rgb: np.ndarray) -> None:
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise MediaError(f"cannot write image {path}")


def image_engine(model: nn.Module, device: str | torch.device,
                 infer_size: int | str | None = "auto") -> Engine:
    """An engine for photos. ``auto``: a model that predicts its colour transform takes the video path, at the
    model's inference size, raised for large photos so that the transform is never stretched more than 4x (the
    range it was trained for; a 12-megapixel photo runs at a short side of 750). Other models (``dcp``) run at
    native resolution: a photo has no frame rate to keep, and a transform fitted at a small size carries over
    less of their haze removal (FADE on real hazy photos, dcp: 0.621 at 192, 0.558 native)."""
    if infer_size == "auto" and not isinstance(model, PredictsCoefficients):
        infer_size = None
    return Engine(model, device, infer_size, max_upscale=MAX_UPSCALE)


MAX_UPSCALE = 4.0


def dehaze_image_file(engine: Engine, src: Path, dst: Path) -> None:
    write_image(dst, engine.process_array(read_image(src)[None])[0])


def dehaze_images(engine: Engine, src: Path, dst: Path,
                  on_image: Callable[[int], None] | None = None) -> int:
    """Dehaze an image file or every image in a folder; returns the number of images written."""
    if src.is_dir():
        names = sorted(p.name for p in src.iterdir() if p.is_file() and is_image(p))
        if not names:
            raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {src}")
        if dst.exists() and not dst.is_dir():
            raise UsageError(f"input is a folder, so the output must be a folder too: {dst}")
        if dst.resolve() == src.resolve():
            raise UsageError(f"output folder {dst} is the input folder: refusing to overwrite the inputs")
        if not dst.parent.is_dir():
            raise UsageError(f"output folder's parent does not exist: {dst.parent}")
        dst.mkdir(exist_ok=True)
        if not os.access(dst, os.W_OK):
            raise UsageError(f"cannot write to {dst}")
        for name in names:
            dehaze_image_file(engine, src / name, dst / name)
            if on_image is not None:
                on_image(1)
        return len(names)
    if not is_image(dst):
        raise UsageError(f"input is an image, so the output must be an image file ({', '.join(sorted(IMAGE_SUFFIXES))}): {dst}")
    check_output(dst, src)
    dehaze_image_file(engine, src, dst)
    if on_image is not None:
        on_image(1)
    return 1

"""The compression-block measure behind the automatic noise floor: real JPEG blocks (libjpeg, through OpenCV) are
told from a clean picture, wherever the grid lies."""

from __future__ import annotations

import cv2
import numpy as np
import skimage.data
import torch

from streamdehaze import blocks


def _luma(rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The lines of the picture's luma that the measure reads."""
    return blocks.lines(torch.from_numpy(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))[None])


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


def test_jpeg_blocks_are_told_from_a_clean_picture():
    for name in ("astronaut", "coffee"):
        hazy = (getattr(skimage.data, name)() * 0.5 + 110).astype(np.uint8)
        clean = blocks.grid_ratio(*_luma(hazy)).item()
        compressed = blocks.grid_ratio(*_luma(_jpeg(hazy, 40))).item()
        assert clean < blocks.CLEAN < 1.4 < compressed, (name, clean, compressed)  # measured 1.04-1.05, 1.55-1.67
        assert blocks.noise_floor(*_luma(hazy)).item() == 0
        # cropped by 3 and 5 pixels: the grid is found where it is
        shifted = blocks.grid_ratio(*_luma(_jpeg(hazy, 40)[3:, 5:])).item()
        assert abs(shifted - compressed) < 0.15, (name, shifted, compressed)


def test_each_frame_of_a_batch_has_its_own_floor():
    rng = np.random.default_rng(0)
    sky = np.kron(rng.normal(0, 1.0, (30, 40)), np.ones((8, 8)))  # 1-level blocks, flat inside
    blocky = np.round(150 + sky)
    smooth = np.round(150 + cv2.GaussianBlur(rng.normal(0, 3.0, blocky.shape), (0, 0), 3))  # as faint, no grid
    floors = blocks.noise_floor(*blocks.lines(torch.from_numpy(np.stack([blocky, smooth, np.full_like(sky, 80)]))))
    assert floors.tolist() == [blocks.FLOOR, 0.0, 0.0]


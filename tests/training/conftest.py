"""Fixtures for the training tests: small synthetic outdoor-like photos written to a temp folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch


def scene(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A clean outdoor-like RGB uint8 image: bright smooth sky above a textured, darker ground."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = height * rng.uniform(0.3, 0.5)
    sky = np.stack([0.55 + 0.2 * yy / height, 0.7 + 0.15 * yy / height, 0.95 * np.ones_like(yy)], -1)
    freq = rng.uniform(0.1, 0.5, 3)
    texture = 0.5 + 0.25 * np.sin(xx[..., None] * freq + yy[..., None] * freq[::-1] + rng.uniform(0, 6, 3))
    ground = texture * rng.uniform(0.4, 0.9, 3) + 0.1 * rng.standard_normal((height, width, 3))
    image = np.where((yy < horizon)[..., None], sky, ground)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture
def clean_folder(tmp_path: Path) -> Path:
    """Twelve synthetic clean photos (PNG, 128x96)."""
    folder = tmp_path / "clean"
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"scene_{i:02d}.png"), cv2.cvtColor(scene(i), cv2.COLOR_RGB2BGR))
    return folder


def write_jpeg(path: Path, seed: int) -> Path:
    """A synthetic clean photo (as :func:`scene`) as a JPEG file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(scene(seed), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def evaluation_data(tmp_path: Path, monkeypatch) -> Path:
    """The evaluation's data where it is looked for (../shared/data): real hazy photos, and clean photos of which
    scene_16.jpg is held out (by its name's hash)."""
    data = tmp_path / "shared" / "data"
    write_jpeg(data / "real_hazy" / "fog.jpg", 100)
    for i in (15, 16, 17):
        write_jpeg(data / "clean" / f"scene_{i}.jpg", i)
    monkeypatch.chdir(write_jpeg(tmp_path / "work" / "x.jpg", 0).parent)
    return data


@pytest.fixture(scope="session")
def random_vgg(tmp_path_factory) -> Path:
    """A randomly initialised VGG19 saved like torchvision's ImageNet file (the real one is not available here)."""
    from torchvision.models import vgg19

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    torch.save(vgg19(weights=None).state_dict(), path)
    return path

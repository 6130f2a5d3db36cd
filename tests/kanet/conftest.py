"""Fixtures for the KA_Net tests: official key manifests (skipped when ../shared is absent), small models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kanet

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT.parent / "shared" / "reference"


def read_manifest(width: int) -> dict[str, tuple[int, ...]]:
    path = REFERENCE / f"kanet_official_state_dict_w{width}.tsv"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


@pytest.fixture
def manifest():
    """``manifest(width)`` -> ``{official key: shape}`` from ../shared/reference."""
    return read_manifest


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.fixture(scope="module")
def tiny_model() -> kanet.KANet:
    """A ``kanet-t`` with seeded random weights and non-trivial BN statistics, eval mode."""
    torch.manual_seed(0)
    model = kanet.create_model("kanet-t")
    randomise_batchnorm(model)
    return model.eval()


def hazy_rgb(height: int, width: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A smooth colourful scene under haze plus a little noise: ``[B, 3, H, W]`` in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    scene = torch.stack([0.5 + 0.4 * torch.sin(xx / 9), 0.5 + 0.4 * torch.sin(yy / 7 + 1),
                         0.5 + 0.4 * torch.cos((xx + yy) / 13)])
    t = 0.3 + 0.6 * yy / max(height - 1, 1)
    img = scene * t + 0.85 * (1 - t)
    noise = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    return (img + 0.05 * noise).clamp(0, 1)

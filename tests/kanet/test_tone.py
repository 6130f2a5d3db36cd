"""The global tone head (kanet.tone): identity when new, bounded, size-independent, one correction per picture."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import kanet
from kanet import KANet, dehaze
from kanet.model import CONFIGS
from kanet.tone import GlobalTone
from training.checkpoint import load_weights_into
from training.cli import UsageError

from .conftest import hazy_rgb, randomise_batchnorm


def toned(hidden: int = 16, bias: tuple[float, ...] = (0.8, 0.0, -0.8, 0.3, 0.0, -0.3), seed: int = 0) -> KANet:
    """A kanet-t with a tone head that reads its inputs (random first layer, non-zero last layer), eval mode."""
    torch.manual_seed(seed)
    model = KANet(dataclasses.replace(CONFIGS["kanet-t"], tone=hidden))
    randomise_batchnorm(model)
    with torch.no_grad():
        model.tone.mlp[-1].weight.normal_(0, 0.5)
        model.tone.mlp[-1].bias.copy_(torch.tensor(bias))
    return model.eval()


def test_a_new_head_is_the_identity() -> None:
    torch.manual_seed(0)
    plain = KANet(dataclasses.replace(CONFIGS["kanet-t"], tone=0)).eval()
    with_head = KANet(dataclasses.replace(CONFIGS["kanet-t"], tone=16)).eval()
    with_head.load_state_dict(plain.state_dict(), strict=False)
    x = hazy_rgb(64, 96) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(with_head(x)[0], plain(x)[0], atol=1e-6)


def test_the_correction_is_bounded() -> None:
    head = GlobalTone(8)
    y = torch.full((2, 3, 4, 4), 0.5)
    extreme = torch.tensor([[1e6] * 6, [-1e6] * 6])
    out = head.apply(y, extreme)
    # gain about mid-grey is at most exp(0.5); the offset at most 0.2
    assert torch.allclose(out[0], torch.full_like(out[0], 0.7)) and torch.allclose(out[1], torch.full_like(out[1], 0.3))
    dark = head.apply(torch.zeros(1, 3, 2, 2), extreme[:1])
    assert torch.allclose(dark, torch.full_like(dark, 0.5 - 0.5 * 1.6487213 + 0.2), atol=1e-5)


def test_statistics_do_not_depend_on_the_frame_size() -> None:
    head = GlobalTone(8)
    x = hazy_rgb(128, 192)
    big = torch.nn.functional.interpolate(x, scale_factor=2.5, mode="bilinear")
    assert torch.allclose(head.statistics(x, x), head.statistics(big, big), atol=0.02)
    assert not torch.allclose(head.statistics(x, x), head.statistics(x * 0.9, x), atol=0.02)


def test_the_head_changes_colour_per_picture() -> None:
    model = toned()
    dark, bright = hazy_rgb(64, 64) * 0.4, hazy_rgb(64, 64)
    with torch.no_grad():
        params = model.estimate_tone(torch.cat([dark, bright]) * 2 - 1)
    assert params.shape == (2, 6)
    assert (params[0] - params[1]).abs().max() > 1e-3  # it reads the picture, not just its bias


def test_tiles_share_the_whole_pictures_correction(monkeypatch: pytest.MonkeyPatch) -> None:
    model = toned()
    # one half much darker than the other: tiles judged on their own would get different corrections
    rgb = hazy_rgb(192, 384)
    rgb[..., :192] *= 0.3
    seen = []
    forward = model.forward

    def spy(x: torch.Tensor, tone: torch.Tensor | None = None):
        seen.append(tone)
        return forward(x, tone)

    monkeypatch.setattr(model, "forward", spy)
    with torch.no_grad():
        y = dehaze(model, rgb, tile=128, overlap=32)
        whole = model.estimate_tone(rgb * 2 - 1)
        dark_tile = model.estimate_tone(rgb[..., :128, :128] * 2 - 1)
    assert y.shape == rgb.shape and len(seen) > 2
    assert all(t is not None and torch.equal(t, seen[0]) for t in seen)
    # the shrunk copy reads like the whole picture, far more than a tile does
    assert (seen[0] - whole).abs().max() < 0.5 * (dark_tile - whole).abs().max()


def test_training_can_add_a_head_to_weights_saved_without_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = KANet(dataclasses.replace(CONFIGS["kanet-t"], tone=0), name=None)
    kanet.save_weights(plain, tmp_path / "plain.safetensors")
    model = toned(bias=(0.0,) * 6)
    load_weights_into(model, tmp_path / "plain.safetensors")
    assert torch.equal(model.head.out.weight, plain.head.out.weight)
    # the other way round is a mismatch: a head's weights would be dropped
    kanet.save_weights(toned(), tmp_path / "toned.safetensors")
    with pytest.raises(UsageError, match="does not match"):
        load_weights_into(KANet(dataclasses.replace(CONFIGS["kanet-t"], tone=0)), tmp_path / "toned.safetensors")


def test_onnx_export_keeps_the_correction_at_other_sizes(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from kanet.export import check_onnx, export_onnx

    model = toned()
    path = export_onnx(model, tmp_path / "toned.onnx")
    assert check_onnx(model, path, sizes=((80, 112), (125, 190), (200, 96))) < 1e-3

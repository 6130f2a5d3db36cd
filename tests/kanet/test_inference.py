"""dehaze(): any size in and out, tiling with blending, autocast and channels_last tolerances."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import kanet
from kanet import KANet, dehaze
from kanet.tiling import plan_tile_size, tile_starts

from .conftest import hazy_rgb

# Stated tolerances (docs/kanet.md), [0, 1] output vs fp32.
BF16_MAX, BF16_MEAN = 1e-2, 1e-3
FP16_MAX, FP16_MEAN = 2e-3, 2e-4


def test_matches_the_network_on_multiples(tiny_model: KANet) -> None:
    """A coefficient model runs on its input reflected outward by ``BORDER`` (no light band along the edges)."""
    rgb = hazy_rgb(64, 96, batch=2)
    b = kanet.inference.BORDER
    with torch.no_grad():
        y = dehaze(tiny_model, rgb)
        raw = tiny_model(F.pad(rgb * 2 - 1, (b, b, b, b), mode="reflect"))[0][..., b:-b, b:-b]
    gain, offset = kanet.transform.split(raw)
    assert torch.equal(y, kanet.transform.apply(rgb, gain, offset).clamp(0, 1))
    coefficients = kanet.coefficients(tiny_model, rgb)
    assert torch.equal(coefficients[0], gain) and torch.equal(coefficients[1], offset)


def test_image_models_give_their_image() -> None:
    model = kanet.KANet(dataclasses.replace(kanet.CONFIGS["kanet-t"], output="image")).eval()
    rgb = hazy_rgb(64, 96)
    with torch.no_grad():
        assert torch.equal(dehaze(model, rgb), model(rgb * 2 - 1)[0].clamp(0, 1))
        with pytest.raises(ValueError, match="predicts images"):
            kanet.coefficients(model, rgb)


@pytest.mark.parametrize("size", [(317, 241), (241, 317), (20, 30), (49, 48)])
def test_any_size_comes_back_at_the_same_size(tiny_model: KANet, size: tuple[int, int]) -> None:
    rgb = hazy_rgb(*size, batch=2)
    with torch.no_grad():
        y = dehaze(tiny_model, rgb)
    assert y.shape == rgb.shape and y.dtype == rgb.dtype
    assert 0 <= y.min() and y.max() <= 1 and y.std() > 1e-3


def test_dtype_of_the_input_is_kept(tiny_model: KANet) -> None:
    rgb = hazy_rgb(48, 64).half()
    with torch.no_grad():
        assert dehaze(tiny_model, rgb).dtype == torch.float16


def test_bad_shapes_are_rejected(tiny_model: KANet) -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        dehaze(tiny_model, torch.rand(3, 64, 64))


def test_tile_plans_cover_the_frame_within_budget() -> None:
    for h, w, budget in [(2160, 3840, 2560 * 1440), (4320, 7680, 2560 * 1440), (300, 5000, 320 * 320)]:
        th, tw = plan_tile_size(h, w, budget, 128, 16, 48)
        assert th * tw <= budget and th % 16 == 0 and tw % 16 == 0
        for length, tile in ((h, th), (w, tw)):
            starts = tile_starts(length, tile, 128)
            assert starts[0] == 0 and starts[-1] + min(tile, length) >= length
            assert all(b - a <= tile - 128 for a, b in zip(starts, starts[1:]))  # overlap at least 128
    with pytest.raises(ValueError, match="too small"):
        plan_tile_size(1000, 1000, 200 * 200, 128, 16, 48)


def test_tiled_output_matches_untiled_without_seams(tiny_model: KANet) -> None:
    rgb = hazy_rgb(320, 448)
    with torch.no_grad():
        full = dehaze(tiny_model, rgb, max_pixels=10**9)
        tiled = dehaze(tiny_model, rgb, tile=192, overlap=48)
        auto = dehaze(tiny_model, rgb, max_pixels=224 * 224, overlap=48)
    for out in (tiled, auto):
        assert not torch.equal(out, full)  # it really was tiled
        d = (out - full).abs()
        assert d.max() < 0.02 and d.mean() < 1e-3
        # No seams: no column or row jumps in the tiled frame that the untiled frame does not have.
        for dim, across in ((3, (0, 1, 2)), (2, (0, 1, 3))):
            jump_t = out.diff(dim=dim).abs().amax(dim=across)
            jump_f = full.diff(dim=dim).abs().amax(dim=across)
            assert (jump_t - jump_f).max() < 0.01


def test_autocast_and_channels_last_within_tolerance() -> None:
    from .conftest import randomise_batchnorm
    import kanet

    torch.manual_seed(1)
    model = kanet.create_model("kanet-t")
    randomise_batchnorm(model)
    model.eval()
    rgb = hazy_rgb(128, 192, batch=2)
    with torch.no_grad():
        ref = dehaze(model, rgb)
        with torch.autocast("cpu", dtype=torch.float16):
            fp16 = dehaze(model, rgb)
        model = model.to(memory_format=torch.channels_last)
        cl = dehaze(model, rgb.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = dehaze(model, rgb.contiguous(memory_format=torch.channels_last))
    assert (cl - ref).abs().max() < 1e-5
    assert (bf16 - ref).abs().max() < BF16_MAX and (bf16 - ref).abs().mean() < BF16_MEAN
    assert (fp16 - ref).abs().max() < FP16_MAX and (fp16 - ref).abs().mean() < FP16_MEAN
    assert not torch.equal(bf16, ref)  # autocast really ran in reduced precision

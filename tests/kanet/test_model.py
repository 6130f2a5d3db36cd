"""Model definition: named configurations, parameter counts, shapes, the RFF modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kanet
from kanet.model import KANetConfig


@pytest.mark.parametrize("name,count", [("kanet", 55_657_426), ("kanet-w256", 52_758_290)])
def test_official_parameter_counts(name: str, count: int) -> None:
    model = kanet.create_model(name)
    assert model.config_name == name and model.config == kanet.CONFIGS[name]
    assert sum(p.numel() for p in model.parameters()) == count


def test_names_and_config() -> None:
    assert set(kanet.MODEL_NAMES) == {"kanet", "kanet-w256", "kanet-s", "kanet-t"}
    for name in ("kanet-s", "kanet-t"):
        model = kanet.create_model(name)
        assert model.config_name == name and model.config == kanet.CONFIGS[name]
    for cfg in kanet.CONFIGS.values():
        assert isinstance(cfg, KANetConfig) and KANetConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown KA_Net model"):
        kanet.create_model("kanet-xl")
    with pytest.raises(ValueError, match="'image' or 'coefficients'"):
        kanet.KANet(KANetConfig(output="rgb"))


@pytest.mark.parametrize("name", ["kanet-t", "kanet-s", "kanet"])
def test_forward_shapes(name: str) -> None:
    model = kanet.create_model(name).eval()
    # 48 x 80: multiples of 16 but not of 32 or 64, so the head's crop path runs too.
    x = torch.rand(2, 3, 48, 80) * 2 - 1
    with torch.no_grad():
        y, z = model(x)
    # The paper's network gives a tanh image; the real-time ones the five coefficients of kanet.transform.
    coefficients = name != "kanet"
    assert model.predicts_coefficients == coefficients
    assert y.shape == (2, 5 if coefficients else 3, 48, 80)
    assert z.shape == (2, model.config.dims[3])
    assert (coefficients or y.abs().max() <= 1) and y.std() > 1e-3


def test_fixed_mode_is_deterministic_and_seeded() -> None:
    x = torch.rand(1, 3, 48, 64) * 2 - 1
    torch.manual_seed(0)
    a = kanet.create_model("kanet-t", seed=3).eval()
    torch.manual_seed(0)
    b = kanet.create_model("kanet-t", seed=4).eval()
    with torch.no_grad():
        y1, _ = a(x)
        torch.rand(10)  # the global generator must not matter in fixed mode
        y2, _ = a(x)
        y3, _ = b(x)
    assert torch.equal(y1, y2)
    assert not torch.allclose(y1, y3)  # same weights, different RFF seed


def test_parity_mode_draws_from_the_global_generator() -> None:
    model = kanet.create_model("kanet-t", rff="parity").eval()
    x = torch.rand(1, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        torch.manual_seed(7)
        y1, _ = model(x)
        y2, _ = model(x)
        torch.manual_seed(7)
        y3, _ = model(x)
    assert torch.equal(y1, y3)
    assert not torch.equal(y1, y2)
    assert "bottleneck.mrfe.rff.weight" not in model.state_dict()


@pytest.mark.parametrize("name", ["kanet-s", "kanet-t"])
def test_min_size_is_the_smallest_working_input(name: str) -> None:
    model = kanet.create_model(name).eval()
    m = model.min_size
    with torch.no_grad():
        assert model(torch.zeros(1, 3, m, m))[0].shape == (1, 5, m, m)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, m - model.size_multiple, m))


def test_reflect_pad1_is_reflection_padding() -> None:
    import torch.nn.functional as F

    from kanet.head import reflect_pad1

    x, y = torch.randn(2, 3, 5, 7), torch.randn(2, 4, 5, 7)
    for layout in (torch.contiguous_format, torch.channels_last):
        a, b = x.contiguous(memory_format=layout), y.contiguous(memory_format=layout)
        assert torch.equal(reflect_pad1(a), F.pad(a, (1, 1, 1, 1), mode="reflect"))
        joined = reflect_pad1(a, b)  # several parts: joined along the channels first
        assert torch.equal(joined, F.pad(torch.cat((a, b), 1), (1, 1, 1, 1), mode="reflect"))
        assert joined.is_contiguous(memory_format=layout)
    # and the gradients are those of pad(cat(...)), for training
    a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
    weights = torch.randn(2, 7, 7, 9)
    (reflect_pad1(a, b) * weights).sum().backward()
    ga, gb = a.grad, b.grad
    a.grad = b.grad = None
    (F.pad(torch.cat((a, b), 1), (1, 1, 1, 1), mode="reflect") * weights).sum().backward()
    assert torch.allclose(ga, a.grad) and torch.allclose(gb, b.grad)


def test_kanet_imports_neither_streamdehaze_nor_training() -> None:
    import subprocess
    import sys

    code = ("import sys, kanet, kanet.convert, kanet.export, kanet.bench; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('streamdehaze', 'training')]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_coefficient_maps_carry_no_checkerboard() -> None:
    from kanet.head import binomial3

    checker = (torch.arange(8)[:, None] + torch.arange(10)[None, :]) % 2 * 2.0 - 1  # the period-2 pattern
    flat = torch.full((1, 1, 8, 10), 3.0)
    out = binomial3(flat + checker[None, None])
    assert torch.allclose(out[..., 1:-1, 1:-1], flat[..., 1:-1, 1:-1])  # gone inside; borders are replicated
    ramp = torch.arange(10.0).expand(1, 1, 8, 10)
    assert torch.allclose(binomial3(ramp)[..., 1:-1], ramp[..., 1:-1])  # smooth maps pass unchanged
    # the filter the shipped weights were trained with: two 2x2 means, padded by replication top-left, then
    # bottom-right
    x = torch.randn(2, 5, 9, 12).contiguous(memory_format=torch.channels_last).requires_grad_()
    want = F.avg_pool2d(F.pad(x, (1, 0, 1, 0), mode="replicate"), 2, stride=1)
    want = F.avg_pool2d(F.pad(want, (0, 1, 0, 1), mode="replicate"), 2, stride=1)
    got = binomial3(x)
    assert torch.allclose(got, want, atol=1e-6)
    weights = torch.randn_like(want)  # and it trains the same: equal gradients
    assert torch.allclose(*(torch.autograd.grad((y * weights).sum(), x)[0] for y in (got, want)), atol=1e-6)


def test_the_documented_sizes_are_the_models():
    # The tables in the README and docs/kanet.md, against the models as built (they drifted once, with the head)
    import functools
    import re

    from kanet.complexity import count_macs, count_parameters

    root = Path(__file__).resolve().parents[2]
    sizes = {"256x256": (256, 256), "448x256": (256, 448), "512x512": (512, 512), "1280x720": (720, 1280),
             "1920x1080": (1080, 1920)}
    models = {name: kanet.create_model(name) for name in kanet.MODEL_NAMES}
    macs = functools.cache(lambda name, h, w: count_macs(models[name], h, w))
    for doc in ("README.md", "docs/kanet.md"):
        text = (root / doc).read_text()
        header = re.search(r"^\| model \| parameters \|(.*)\|$", text, re.M)
        columns = [sizes[c.strip().removeprefix("GMACs ")] for c in header.group(1).split("|")]
        rows = re.findall(r"^\| `(kanet[\w-]*)`[^|]*\| ([\d,]+) \|(.*)\|$", text[header.end():], re.M)
        assert sorted(name for name, _, _ in rows) == sorted(kanet.MODEL_NAMES), doc
        for name, parameters, gmacs in rows:
            assert int(parameters.replace(",", "")) == count_parameters(models[name]), (doc, name)
            shown = gmacs.split("|")
            assert len(shown) == len(columns), (doc, name)
            # (each count takes a second: the first column, which any change to a network moves as it moves all)
            assert float(shown[0]) == round(macs(name, *columns[0]) / 1e9, 2), (doc, name)

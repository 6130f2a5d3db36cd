"""Our safetensors weight files: round trips, metadata, fixed RFF buffers, refusal of foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import kanet
from kanet.model import KANet, KANetConfig


def _out(model: KANet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[0]


def test_round_trip_keeps_weights_config_and_rff(tiny_model: KANet, tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    kanet.save_weights(tiny_model, path, extra={"source": "runs/x/step-0000100.safetensors", "format": "other"})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "kanet" and meta["config_name"] == "kanet-t" and meta["rff"] == "fixed"
    assert meta["source"] == "runs/x/step-0000100.safetensors"  # extra keys travel, ours win on a clash
    assert path.stat().st_mode & 0o777 == 0o644  # readable by every user of an installed package
    assert KANetConfig(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in json.loads(meta["config"]).items()}) == tiny_model.config
    assert {"bottleneck.mrfe.rff.weight", "bottleneck.mrfe.rff.bias"} <= keys

    loaded = kanet.load_weights(path)
    assert loaded.config_name == "kanet-t" and loaded.rff_mode == "fixed" and not loaded.training
    x = torch.rand(1, 3, 48, 64) * 2 - 1
    assert torch.equal(_out(loaded, x), _out(tiny_model, x))
    # The RFF draw travels with the file: a different seed in a fresh model would not reproduce it.
    assert torch.equal(loaded.bottleneck.mrfe.rff.weight, tiny_model.bottleneck.mrfe.rff.weight)
    assert not list(tmp_path.glob(".*tmp*"))


def test_fp16_storage(tiny_model: KANet, tmp_path: Path) -> None:
    path = tmp_path / "half.safetensors"
    kanet.save_weights(tiny_model, path, dtype=torch.float16)
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("head.out.weight").dtype == torch.float16
        assert f.get_tensor("bottleneck.mrfe.rff.weight").dtype == torch.float32  # the draw stays exact
    loaded = kanet.load_weights(path)
    x = torch.rand(1, 3, 48, 64) * 2 - 1
    assert (_out(loaded, x) - _out(tiny_model, x)).abs().max() < 2e-3


def test_custom_config_and_parity_mode(tmp_path: Path) -> None:
    cfg = KANetConfig(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), heads=(1, 1, 1, 1), intra_heads=(1, 1, 1),
                      decoder_depth=1, decoder_heads=1, head_tail=(8, 4))
    model = KANet(cfg, rff="parity").eval()
    path = tmp_path / "custom.safetensors"
    kanet.save_weights(model, path)
    loaded = kanet.load_weights(path)
    assert loaded.config == cfg and loaded.config_name is None and loaded.rff_mode == "parity"
    x = torch.rand(1, 3, 48, 48) * 2 - 1
    torch.manual_seed(1)
    a = _out(model, x)
    torch.manual_seed(1)
    assert torch.equal(_out(loaded, x), a)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(kanet.WeightsError, match="no such file"):
        kanet.load_weights(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(kanet.WeightsError, match="not a KA_Net weight file"):
        kanet.load_weights(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 16)
    with pytest.raises(kanet.WeightsError, match="not a readable safetensors"):
        kanet.load_weights(junk)
    # an official checkpoint as downloaded (torch.save's zip): named, with the command that converts it
    official = tmp_path / "KANet.pk"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, official)
    with pytest.raises(kanet.WeightsError, match=r"KANet.pk: a PyTorch checkpoint, not a safetensors file: convert it "
                                                 r"with `python -m kanet.convert .*KANet.pk OUT.safetensors`$"):
        kanet.load_weights(official)

"""ONNX export (dynamic batch/height/width) checked against PyTorch with onnxruntime on CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kanet
from kanet.export import ImageToImage, main

ort = pytest.importorskip("onnxruntime")


def test_onnx_matches_pytorch_at_other_sizes(tiny_model: kanet.KANet, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "t.safetensors"
    kanet.save_weights(tiny_model, weights)
    onnx_path = tmp_path / "t.onnx"
    assert main(["--weights", str(weights), str(onnx_path)]) == 0
    assert capsys.readouterr().err.count("\n") == 1
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    graph = ImageToImage(tiny_model)
    # None of these is the export sample size; odd sizes exercise the in-graph padding and cropping.
    for batch, h, w in [(1, 48, 48), (2, 80, 112), (1, 125, 190), (1, 256, 448)]:
        rgb = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            ref, ref_coefficients = graph(rgb)
        # The coefficient head exports: the dehazed image and the coefficients that made it.
        out, coefficients = session.run(None, {"rgb": rgb.numpy()})
        assert out.shape == (batch, 3, h, w) and coefficients.shape == (batch, 5, h, w)
        assert np.abs(out - ref.numpy()).max() < 1e-4
        assert np.abs(coefficients - ref_coefficients.numpy()).max() < 1e-4
        with torch.no_grad():
            assert np.abs(out - kanet.dehaze(tiny_model, rgb).numpy()).max() < 1e-4
            gain, offset = kanet.coefficients(tiny_model, rgb)
        assert np.abs(coefficients - torch.cat((gain, offset), 1).numpy()).max() < 1e-4


def test_parity_mode_and_bad_inputs_are_refused(tmp_path: Path, capsys) -> None:
    model = kanet.create_model("kanet-t", rff="parity")
    with pytest.raises(ValueError, match="fixed"):
        ImageToImage(model)
    weights = tmp_path / "p.safetensors"
    kanet.save_weights(model, weights)
    out = tmp_path / "p.onnx"
    assert main(["--weights", str(weights), str(out)]) == 1
    assert main(["--weights", str(tmp_path / "missing.safetensors"), str(out)]) == 2  # (usage, as streamdehaze)
    data = weights.read_bytes()
    assert main(["--weights", str(weights), str(weights)]) == 2  # before the export, not over the weights
    assert weights.read_bytes() == data
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert lines[2] == f"error: {weights} is the input: give another output name"
    assert not out.exists()


@pytest.mark.parametrize("missing, check, said", [
    ("onnxscript", False, "error: ONNX export needs onnxscript (pip install 'streamdehaze[onnx]')"),
    ("onnxruntime", True, "error: --check needs onnxruntime (pip install 'streamdehaze[onnx]')"),
])
def test_a_missing_onnx_package_is_named_with_the_extra_before_anything_is_written(
        tmp_path: Path, capsys, monkeypatch, missing: str, check: bool, said: str) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # ``import`` fails, as where it is not installed
    out = tmp_path / "t.onnx"
    assert main(["--model", "kanet-t", str(out), *(["--check"] if check else [])]) == 2
    assert capsys.readouterr().err == said + "\n"
    assert not out.exists()

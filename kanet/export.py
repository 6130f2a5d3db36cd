"""ONNX export with dynamic batch, height and width.

The exported graph is image-to-image: input ``rgb`` float32 ``[B, 3, H, W]`` in [0, 1] (any H, W of at least
``model.min_size``), output ``dehazed`` ``[B, 3, H, W]`` in [0, 1]; normalisation, reflect padding (to the
multiple, and for coefficient models ``kanet.inference.BORDER`` on every side), cropping and clamping are inside the
graph. Models with the coefficient head (``kanet.transform``) have a second output, ``coefficients`` ``[B, 5, H,
W]``: luma gain, chroma gain and RGB offset, for a runtime that upsamples them and applies them to a larger frame
itself (``O = g_C I + (g_Y - g_C) Y(I) + o``, BT.709 luma). Tiling stays on the host (call the model tile by
tile). Only the ``fixed`` RFF mode can be exported (parity mode draws random numbers on the host at every call).

Command line::

    python -m kanet.export (--weights W.safetensors | --model kanet-t) OUT.onnx [--check]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import transform
from .inference import border
from .model import MODEL_NAMES, KANet, create_model
from .official import input_problem, output_problem
from .weights import WeightsError, load_weights

OPSET = 18


class ImageToImage(nn.Module):
    """``rgb`` [0, 1] -> dehazed [0, 1], same size (and the coefficients, for a coefficient model): the graph that
    gets exported."""

    def __init__(self, model: KANet):
        super().__init__()
        if model.rff_mode != "fixed":
            raise ValueError("only rff='fixed' models can be exported (parity mode draws on the host per call)")
        self.model = model
        self.multiple = model.size_multiple

    @property
    def output_names(self) -> list[str]:
        return ["dehazed", "coefficients"] if self.model.predicts_coefficients else ["dehazed"]

    def forward(self, rgb: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h, w = rgb.shape[-2:]
        b = border(self.model, h, w)  # as kanet.inference runs it
        m = self.multiple
        ph, pw = (m - (h + 2 * b) % m) % m, (m - (w + 2 * b) % m) % m
        x = F.pad(rgb * 2 - 1, (b, b, b, b), mode="reflect") if b else rgb * 2 - 1
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        y = self.model(x)[0][..., b:b + h, b:b + w]
        if not self.model.predicts_coefficients:
            return y.clamp(0, 1)
        gain, offset = transform.split(y)
        return transform.apply(rgb, gain, offset).clamp(0, 1), torch.cat((gain, offset), 1)


def export_onnx(model: KANet, path: str | os.PathLike, sample_size: tuple[int, int] = (96, 128)) -> Path:
    """Export ``model`` (eval mode, float32, CPU) to ``path`` atomically; returns the path."""
    path = Path(path)
    wrapper = ImageToImage(model.float().cpu().eval())
    sample = torch.rand(2, 3, *sample_size, generator=torch.Generator().manual_seed(0))  # (not the caller's stream)
    batch, height, width = torch.export.Dim("batch", min=1), torch.export.Dim("height", min=model.min_size), \
        torch.export.Dim("width", min=model.min_size)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        # The exporter narrates its steps on stdout; keep the CLI's output to one line.
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, (sample,), dynamo=True, opset_version=OPSET,
                                        input_names=["rgb"], output_names=wrapper.output_names,
                                        dynamic_shapes={"rgb": {0: batch, 2: height, 3: width}},
                                        external_data=False, verbose=False)
            program.save(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_onnx(model: KANet, path: str | os.PathLike, sizes: tuple[tuple[int, int], ...] = ((80, 112), (125, 190))
               ) -> float:
    """Max abs difference between onnxruntime (CPU) and PyTorch over a few input sizes."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapper = ImageToImage(model.float().cpu().eval())
    worst = 0.0
    for i, (h, w) in enumerate(sizes):
        rgb = torch.rand(1 + i % 2, 3, h, w, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            refs = wrapper(rgb)
        refs = [r.numpy() for r in (refs if isinstance(refs, tuple) else (refs,))]
        for out, ref in zip(session.run(None, {"rgb": rgb.numpy()}), refs):
            if out.shape != ref.shape:
                raise RuntimeError(f"ONNX output shape {out.shape} != PyTorch {ref.shape}")
            worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def missing_package(check: bool) -> str | None:
    """The first package of the ``onnx`` extra that the export (and with ``check``, the check) needs and that
    cannot be imported, or None."""
    for name in ("onnx", "onnxscript", *(("onnxruntime",) if check else ())):
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kanet.export",
                                description="Export KA_Net to ONNX (dynamic batch/height/width, [0,1] RGB in/out).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="our .safetensors weights (python -m kanet.convert makes them)")
    src.add_argument("--model", choices=MODEL_NAMES, help="export a configuration with fresh (untrained) weights")
    p.add_argument("output", help="output .onnx")
    p.add_argument("--seed", type=int, default=0, help="RFF seed for --model (default 0)")
    p.add_argument("--check", action="store_true", help="compare onnxruntime (CPU) with PyTorch after export")
    args = p.parse_args(argv)
    problem = input_problem(args.weights) or output_problem(args.output, args.weights)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    missing = missing_package(args.check)
    if missing:  # said before anything is written: --check without onnxruntime would leave an unchecked file
        needs = "--check needs" if missing == "onnxruntime" else "ONNX export needs"
        print(f"error: {needs} {missing} (pip install 'streamdehaze[onnx]')", file=sys.stderr)
        return 2
    try:
        model = load_weights(args.weights) if args.weights else create_model(args.model, seed=args.seed).eval()
        if model.rff_mode != "fixed":
            raise ValueError(f"{args.weights}: rff mode {model.rff_mode!r} cannot be exported (needs 'fixed')")
        out = export_onnx(model, args.output)
        msg = f"wrote {out} ({model.config_name or 'custom'}, opset {OPSET}, dynamic B/H/W)"
        if args.check:
            msg += f"; onnxruntime vs PyTorch max abs diff {check_onnx(model, out):.2e}"
    except (WeightsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # exporter failures: one line, not a traceback
        print(f"error: ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
              file=sys.stderr)
        return 1
    print(msg, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

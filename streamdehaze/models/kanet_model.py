"""KA_Net behind the model interface: RGB [B,3,H,W] in [0,1] -> same, with autocast and channels_last."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch
from torch import nn

import kanet

from ..errors import UsageError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def shipped_weights(name: str) -> Path | None:
    """The weights file that ships with the package for configuration ``name``, if there is one."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def _missing_weights(name: str) -> UsageError:
    return UsageError(
        f"no weights for --model {name}: pass --weights FILE (.safetensors from python -m training.train, or an "
        "official KA_Net checkpoint from the authors' GitHub page fyxnl/KA_Net, converted with "
        "python -m kanet.convert IN.pk OUT.safetensors), or train one: python -m training.train --config "
        "training/configs/kanet-t-cpu.toml")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), so that bf16 autocast pays off.

    Elsewhere (AVX2 alone: most laptops, many servers) oneDNN has no bf16 convolutions and PyTorch falls back to its
    reference ones: kanet-t ran 7.5 times slower in bf16 than in fp32 on an AVX2 EPYC (BENCHMARKS.md).
    """
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


class KANetModel(nn.Module):
    """Runs a KA_Net with channels_last, in fp16 autocast on CUDA and in bf16 autocast on a CPU that has bf16
    (``cpu_has_bf16``; fp32 on the others); any frame size. A KA_Net with the coefficient head also gives its
    transform (``coefficients``), which the engine applies at full resolution."""

    def __init__(self, net: kanet.KANet, name: str) -> None:
        super().__init__()
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.name = name

    def infer_size_for(self, device: torch.device) -> int:
        """Default short side the model runs at (the engine carries the result to full resolution).

        Coefficient models run at the size they are trained for, on every device: the network sees a short side
        of 256, a frame at 240 plus the border they are run with (``kanet.inference.BORDER``). Larger is not
        better for them: the shipped kanet-t at 720 left more fog in the real 1080p clip (FADE 2.06 against 1.62)
        and fitted held-out photos 0.2 dB worse (BENCHMARKS.md). Image models run at 540 on a GPU, 256 on a CPU.
        """
        if device.type == "cuda" and not self.net.predicts_coefficients:
            return 540
        return 256 - 2 * kanet.inference.border(self.net, 256, 256)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        with self._autocast(rgb):
            out = kanet.dehaze(self.net, rgb.contiguous(memory_format=torch.channels_last))
        return out.float()

    def _autocast(self, rgb: torch.Tensor) -> contextlib.AbstractContextManager:
        device = rgb.device.type
        if device == "cuda":
            return torch.autocast(device, dtype=torch.float16)
        if device == "cpu" and cpu_has_bf16():
            return torch.autocast(device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def compile(self, *args, **kwargs) -> None:
        """``torch.compile`` the network in place (both ``forward`` and ``coefficients`` run through it)."""
        self.net.compile(*args, **kwargs)


class CoefficientKANet(KANetModel):
    """A KA_Net with the coefficient head (``kanet.transform``)."""

    def coefficients(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast(rgb):
            return kanet.coefficients(self.net, rgb.contiguous(memory_format=torch.channels_last))


def load_kanet(name: str | None, weights: str | os.PathLike | None) -> KANetModel:
    """KA_Net configuration ``name`` with ``weights`` (ours or official), or the shipped weights; with
    ``name=None``, whatever configuration ``weights`` holds."""
    path = Path(weights) if weights is not None else shipped_weights(name) if name is not None else None
    if path is None:
        raise _missing_weights(name or "kanet")
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            net = kanet.load_weights(path)
        else:
            net = kanet.load_official(path)
    except (kanet.WeightsError, kanet.CheckpointError) as exc:
        raise UsageError(f"cannot load {path}: {exc}") from None
    if name is not None and net.config_name is not None and net.config_name != name:
        raise UsageError(f"{path.name} holds {net.config_name} weights, not {name}: use --model {net.config_name}")
    wrapper = CoefficientKANet if net.predicts_coefficients else KANetModel
    return wrapper(net, name or net.config_name or "kanet")

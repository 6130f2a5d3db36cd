"""KA_Net behind the model interface: RGB [B,3,H,W] in [0,1] -> same, with autocast and channels_last."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn

import kanet

from ..errors import UsageError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# The most a coefficient model's transform is stretched by default (photos: any model's): the largest scale the
# shipped weights were trained at (``train.scale``).
MAX_UPSCALE = 4.0


def shipped_weights(name: str) -> Path | None:
    """The weights file that ships with the package for configuration ``name``, if there is one."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def _missing_weights(name: str, option: str) -> UsageError:
    return UsageError(
        f"no weights for {option.format('model', name)}: pass {option.format('weights', 'FILE')} (.safetensors "
        "from python -m training.train, or an "
        "official KA_Net checkpoint from the authors' GitHub page fyxnl/KA_Net, converted with "
        "python -m kanet.convert IN.pk OUT.safetensors), or train one: python -m training.train --config "
        "training/configs/kanet-t-cpu.toml")


class KANetModel(nn.Module):
    """Runs a KA_Net with channels_last weights, in fp16 autocast on CUDA and in fp32 on a CPU; any frame size. A
    KA_Net with the coefficient head also gives its transform (``coefficients``), which the engine applies at full
    resolution.

    Not bf16 on a CPU: its rounding moves the gains from frame to frame with the source's noise (a fixed camera in
    dense haze flickered 1.8 times as much as in fp32), and without AVX-512 PyTorch's bf16 convolutions are
    reference code, 7.5 times slower than fp32 (BENCHMARKS.md, "fp32 on the CPU, and the network at 224").
    """

    def __init__(self, net: kanet.KANet, name: str) -> None:
        super().__init__()
        # Channels-last weights make the convolutions run channels-last whatever the input's layout; the input
        # stays as given because reflection padding it (kanet.inference) is faster in the plain layout.
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.name = name

    def infer_size_for(self, device: torch.device) -> int:
        """Default short side the model runs at (the engine carries the result to full resolution).

        Coefficient models run at 176 on every device (the network sees 192 with the border of
        ``kanet.inference.BORDER``), raised for large frames by ``max_upscale``. Against 208 (224 with the border,
        the size of the last training stage's crops) that is a quarter fewer pixels at 720p, which puts 720p in
        real time on a 2-core AVX2 CPU, for the same scores: held-out photos within 0.15 dB, real photos' FADE
        within 1 %, two more clip targets met (BENCHMARKS.md, "The network at 192"). At 160 (176 with the border)
        held-out SSIM fell below dcp's; at 720 the real 1080p clip kept more fog (FADE 2.06 against 1.62). Image
        models run at 540 on a GPU, 256 on a CPU.
        """
        if self.net.predicts_coefficients:
            return 192 - 2 * kanet.inference.border(self.net, 192, 192)
        return 540 if device.type == "cuda" else 256

    @property
    def max_upscale(self) -> float | None:
        """How far the engine stretches a coefficient model's transform at most by default: ``MAX_UPSCALE``, the
        largest scale it was trained at, so 720p runs at 180 and 1080p at 270. Stretched further it takes dark
        near objects for haze: at 176, 8 % of the real 1080p clip went black, most of it the road (BENCHMARKS.md)."""
        return MAX_UPSCALE if self.net.predicts_coefficients else None

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        with self._autocast(rgb):
            out = kanet.dehaze(self.net, rgb)
        return out.float()

    def _autocast(self, rgb: torch.Tensor) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.float16) if rgb.device.type == "cuda" else contextlib.nullcontext()

    def compile(self, *args, **kwargs) -> None:
        """``torch.compile`` the network in place (both ``forward`` and ``coefficients`` run through it)."""
        self.net.compile(*args, **kwargs)


class CoefficientKANet(KANetModel):
    """A KA_Net with the coefficient head (``kanet.transform``)."""

    def coefficients(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast(rgb):
            return kanet.coefficients(self.net, rgb)


def check_weights_file(path: str | os.PathLike) -> None:
    """A ``UsageError`` where ``path`` is not a weights file, saying what it is where that helps: a training run's
    folder, or a training state (its weights are the ``.safetensors`` beside it)."""
    path = Path(path)
    if path.is_dir():
        run = (path / "last.json").is_file()
        raise UsageError(f"{path} is a {'training run' if run else 'folder'}, not a weights file"
                         + (": give one of its step-N.safetensors" if run else ""))
    if path.name.endswith(".state.pt"):
        raise UsageError(f"{path} is a training state, not weights: they are in "
                         f"{path.name.removesuffix('.state.pt')}.safetensors beside it")
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")


def load_kanet(name: str | None, weights: str | os.PathLike | None, option: str = "--{} {}") -> KANetModel:
    """KA_Net configuration ``name`` with ``weights`` (ours or official), or the shipped weights; with
    ``name=None``, whatever configuration ``weights`` holds. ``option``: how messages name settings, as for
    ``create_model``."""
    path = Path(weights) if weights is not None else shipped_weights(name) if name is not None else None
    if path is None:
        raise _missing_weights(name or "kanet", option)
    check_weights_file(path)
    try:
        if path.suffix == ".safetensors":
            net = kanet.load_weights(path)
        else:
            net = kanet.load_official(path)
    except (kanet.WeightsError, kanet.CheckpointError) as exc:
        raise UsageError(f"cannot load {path}: {exc}") from None
    if name is not None and net.config_name is not None and net.config_name != name:
        raise UsageError(f"{path.name} holds {net.config_name} weights, not {name}: "
                         f"use {option.format('model', net.config_name)}")
    wrapper = CoefficientKANet if net.predicts_coefficients else KANetModel
    return wrapper(net, name or net.config_name or "kanet")

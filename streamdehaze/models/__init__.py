"""The one model interface: ``model(rgb [B,3,H,W] float in [0,1]) -> [B,3,H,W] in [0,1]`` (an nn.Module).

Models that predict their transform directly (:class:`PredictsCoefficients`: KA_Net's coefficient head) also give
``coefficients(rgb) -> (gain, offset)``, the transform that ``kanet.transform.apply`` carries to any resolution;
for every other model the engine fits that transform to the model's output (``guided.fit_gain_offset``).
``create_model(name, weights)`` builds any registered model; the engine knows nothing else about it but three
optional hints, read from any model that has them: ``infer_size`` or ``infer_size_for(device)`` (the short side it
runs at by default) and ``max_upscale`` (how far its transform may be stretched, at most).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

import kanet

from ..defaults import MODEL_NAMES
from ..errors import UsageError
from .dcp import DarkChannelPrior
from .kanet_model import load_kanet, shipped_weights


@runtime_checkable
class PredictsCoefficients(Protocol):
    def coefficients(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB ``[B,3,h,w]`` in [0,1] -> gains ``[B,2,h,w]`` (luma, chroma) and RGB offsets ``[B,3,h,w]``."""
        ...


def default_model(device: torch.device) -> str:
    """The best model whose weights ship with the package for this device; ``dcp`` when none do."""
    preference = ("kanet", "kanet-s", "kanet-t") if device.type == "cuda" else ("kanet-t",)
    return next((name for name in preference if shipped_weights(name) is not None), "dcp")


def model_name(name: str, weights: str | Path | None, device: torch.device) -> str:
    """The model that ``name`` runs on ``device``, to name it in summaries: ``auto`` is the shipped model for the
    device, or the KA_Net configuration a weight file of ours says it holds (``auto`` for another file)."""
    if name != "auto":
        return name
    if weights is None:
        return default_model(device)
    try:
        return kanet.weights.read_metadata(weights).get("config_name") or "auto"
    except kanet.WeightsError:
        return "auto"


def create_model(name: str, weights: str | Path | None = None, device: torch.device | None = None,
                 option: str = "--{} {}") -> nn.Module:
    """Build the model called ``name`` in eval mode on the CPU (the engine moves it); ``auto`` picks the best
    shipped model for ``device`` (or whatever configuration ``weights`` holds). ``option`` is how messages name a
    setting and its value: ``--{} {}`` on the command line, ``{}={}`` for the GStreamer element's properties.
    """
    if name == "auto":
        if weights is not None:  # the weights file says which configuration it is
            return load_kanet(None, weights, option)
        name = default_model(device or torch.device("cpu"))
    if name == "dcp":
        if weights is not None:
            weights_option = option.format("weights", "").strip(" =")  # --weights, weights
            raise UsageError(f"{weights_option} does not apply to {option.format('model', 'dcp')} (it has no weights)")
        return DarkChannelPrior().eval()
    if name in kanet.MODEL_NAMES:
        return load_kanet(name, weights, option)
    raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")

"""The one model interface: ``model(rgb [B,3,H,W] float in [0,1]) -> [B,3,H,W] in [0,1]`` (an nn.Module).

``create_model(name, weights)`` builds any registered model; the engine knows nothing else about it.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import UsageError
from .dcp import DarkChannelPrior

MODEL_NAMES = ("dcp",)


def create_model(name: str, weights: str | Path | None = None) -> nn.Module:
    """Build the model called ``name`` in eval mode on the CPU (the engine moves it)."""
    if name == "dcp":
        if weights is not None:
            raise UsageError("--weights does not apply to --model dcp (it has no weights)")
        return DarkChannelPrior().eval()
    raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")

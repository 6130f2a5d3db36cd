"""Gaussian perceptual contrastive loss on frozen VGG19 features (KA_Net / CGID training).

For VGG19 layers :math:`\\phi_i` = relu1_1 ... relu5_1 with weights :math:`w = (1/32, 1/16, 1/8, 1/4, 1)`:

.. math::

    L = \\sum_i w_i \\frac{d(\\phi_i(\\hat J), \\phi_i(J))}{d(\\phi_i(\\hat J), \\phi_i(I)) + 10^{-6}},
    \\qquad d(a, b) = \\operatorname{mean}\\left(1 - e^{-(a - b)^2 / 2\\sigma^2}\\right)

anchor :math:`\\hat J` = network output, positive :math:`J` = ground truth, negative :math:`I` = hazy input. The
Gaussian (correntropy-induced) distance saturates for large feature differences, so outliers do not dominate.
The ImageNet weights are read from a local file (torchvision's ``vgg19-dcbb9e9d.pth`` in the torch hub cache by
default); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import vgg19

from training.cli import UsageError

__all__ = ["VGG19_FILE", "default_vgg19_path", "load_vgg19_features", "gaussian_distance", "ContrastiveLoss"]

VGG19_FILE = "vgg19-dcbb9e9d.pth"
_RELU_X_1 = (1, 6, 11, 20, 29)  # indices of relu1_1 .. relu5_1 in torchvision's vgg19().features
LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def default_vgg19_path() -> Path:
    """Where torchvision caches its VGG19 ImageNet weights: ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def load_vgg19_features(path: str | Path | None = None) -> nn.Sequential:
    """Frozen VGG19 convolutional layers up to relu5_1, in eval mode.

    Args:
        path: a torchvision VGG19 state dict (``torch.save(vgg19().state_dict(), path)`` format); default
            :func:`default_vgg19_path`.

    Raises:
        UsageError: the file is missing (the message names the expected file and how to train without the term).
    """
    path = Path(path) if path else default_vgg19_path()
    if not path.is_file():
        raise UsageError(f"VGG19 ImageNet weights not found: {path} (torchvision's {VGG19_FILE}); "
                         "copy it there, set loss.vgg_weights to its path, or set loss.contrastive = 0 "
                         "to train without the contrastive term")
    with torch.device("meta"):  # no random initialisation of 143 M parameters that are overwritten anyway
        model = vgg19(weights=None)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), assign=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise UsageError(f"not a torchvision VGG19 state dict: {path} ({str(exc).splitlines()[0]})") from exc
    features = model.features[: _RELU_X_1[-1] + 1].eval()
    features.requires_grad_(False)
    return features


def gaussian_distance(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Correntropy-induced distance per sample: :math:`\\operatorname{mean}(1 - e^{-(a-b)^2 / 2\\sigma^2})`.

    Args:
        a: features :math:`(B, *)`.
        b: same shape.

    Returns:
        shape :math:`(B,)`, in [0, 1), 0 iff ``a == b``.
    """
    return (1 - torch.exp(-((a - b) ** 2) / (2 * sigma * sigma))).flatten(1).mean(1)


class ContrastiveLoss(nn.Module):
    """Gaussian perceptual contrastive loss; ``forward(output, positive, negative)`` on :math:`(B, 3, H, W)` images
    in [0, 1] returns :math:`(B,)`.

    Args:
        features: frozen VGG19 features from :func:`load_vgg19_features`.
        sigma: bandwidth of the Gaussian distance, in feature units.
    """

    def __init__(self, features: nn.Sequential, sigma: float = 1.0):
        super().__init__()
        self.features = features
        self.sigma = sigma
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def _taps(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = (image - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _RELU_X_1:
                taps.append(x)
        return taps

    def forward(self, output: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        b = output.shape[0]
        with torch.no_grad():
            refs = self._taps(torch.cat([positive, negative]).float())
        anchors = self._taps(output.float())
        loss = output.new_zeros(b, dtype=torch.float32)
        for w, a, r in zip(LAYER_WEIGHTS, anchors, refs):
            pos, neg = r[:b], r[b:]
            loss = loss + w * gaussian_distance(a, pos, self.sigma) / (gaussian_distance(a, neg, self.sigma) + 1e-6)
        return loss

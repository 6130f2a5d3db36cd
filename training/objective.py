"""The training objective: every loss term with its configured weight, and sample reweighting.

.. math::

    L = \\frac{1}{N} \\sum_{n} w_n \\big(\\lambda_{pix} \\ell_{pix} + \\lambda_{ms} (1 - \\text{MS-SSIM})
        + \\lambda_{cr} \\ell_{cr}\\big)_n + \\lambda_{tmp} L_{short} + \\lambda_{long} L_{long}

over the :math:`N = B T` frames of a batch of clips; :math:`w_n` are the StableNet weights (all 1 when reweighting
is off), positive and summing to N. The temporal terms compare consecutive outputs (and every output with the first,
for the long-term term) through the clips' exact flow.
"""

from __future__ import annotations

import torch

from training.clips import Clip
from training.config import LossConfig
from training.losses import ContrastiveLoss, charbonnier, l1, ms_ssim_loss, temporal_loss
from training.reweighting import SampleReweighter

__all__ = ["Objective"]


class Objective:
    """Callable: ``objective(output, z, clip, epoch) -> (loss, terms)``.

    Args:
        config: term weights.
        reweighter: StableNet weights for the per-image terms, or ``None`` for uniform weights.
        contrastive: the contrastive loss, required when ``config.contrastive > 0``.
    """

    def __init__(self, config: LossConfig, reweighter: SampleReweighter | None = None,
                 contrastive: ContrastiveLoss | None = None):
        if config.contrastive > 0 and contrastive is None:
            raise ValueError("loss.contrastive > 0 needs a ContrastiveLoss")
        if config.reconstruction not in ("l1", "charbonnier"):
            raise ValueError(f"loss.reconstruction must be l1 or charbonnier, got {config.reconstruction!r}")
        self.config = config
        self.reweighter = reweighter
        self.contrastive = contrastive

    def __call__(self, output: torch.Tensor, z: torch.Tensor, clip: Clip,
                 epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        """Compute the loss.

        Args:
            output: network outputs :math:`(B, T, 3, h, w)` (float32, read as [0, 1] images).
            z: pooled features :math:`(B T, D)` for reweighting.
            clip: the batch (targets, hazy inputs, flows).
            epoch: for the reweighting's lambda decay.

        Returns:
            the scalar loss (with gradient) and the value of every term (unweighted means) for logging.
        """
        cfg = self.config
        b, t = output.shape[:2]
        out, clean, hazy = output.flatten(0, 1), clip.clean.flatten(0, 1), clip.hazy.flatten(0, 1)
        pixel = (l1 if cfg.reconstruction == "l1" else charbonnier)(out, clean)
        per_image = cfg.pixel * pixel
        terms = {"pixel": pixel.mean().item()}
        if cfg.msssim > 0:
            ms = ms_ssim_loss(out, clean, scales=cfg.msssim_scales)
            per_image = per_image + cfg.msssim * ms
            terms["msssim"] = ms.mean().item()
        if cfg.contrastive > 0:
            cr = self.contrastive(out, clean, hazy)
            per_image = per_image + cfg.contrastive * cr
            terms["contrastive"] = cr.mean().item()
        if cfg.reweight and self.reweighter is not None:
            weights = self.reweighter(z, epoch)
            terms["weight_max"] = weights.max().item()
        else:
            weights = torch.ones_like(per_image)
        loss = (weights.to(per_image) * per_image).mean()
        if t > 1 and cfg.temporal > 0:
            short = torch.stack([temporal_loss(output[:, k], output[:, k + 1], clip.flow[:, k], clip.mask[:, k])
                                 for k in range(t - 1)]).mean()
            loss = loss + cfg.temporal * short
            terms["temporal"] = short.item()
        if t > 2 and cfg.temporal_long > 0:
            long = torch.stack([temporal_loss(output[:, 0], output[:, k + 1], clip.flow_first[:, k],
                                              clip.mask_first[:, k]) for k in range(1, t - 1)]).mean()
            loss = loss + cfg.temporal_long * long
            terms["temporal_long"] = long.item()
        terms["loss"] = loss.item()
        return loss, terms

"""StableNet-style sample reweighting (Zhang et al., CVPR 2021), as used by KA_Net's degradation-removal training.

Per batch, learn logits :math:`\\omega \\in \\mathbb R^B` whose softmax weights make the random-Fourier-feature
maps of the network's pooled features :math:`z` as decorrelated as possible across the batch, taking a memory of
previous batches (features :math:`\\bar z`, logits :math:`\\bar\\omega`) into account:

.. math::

    w = \\operatorname{softmax}([\\omega; \\bar\\omega]), \\qquad
    L_B = \\sum_{f=1}^{F} \\sum_{i \\ne j} \\operatorname{Cov}_w(u_{f,i}, u_{f,j})^2, \\qquad
    L = L_B / \\lambda + \\sum_b \\operatorname{softmax}(\\omega)_b^{\\,p}

with :math:`u_f = \\sqrt{2/F}\\,(\\cos m_f + \\sin m_f)` and :math:`m_f` the per-dimension random projection
:math:`z_i w_f + b_{f,i}` rescaled per sample to :math:`[0, \\pi/2]` (fresh :math:`w, b` each inner step);
:math:`\\lambda = \\lambda_p \\max(r^{\\lfloor e / E \\rfloor}, \\lambda_{min})` with decay rate :math:`r` every
:math:`E` epochs. :math:`\\omega` starts at 0 and takes ``inner_steps`` SGD steps (momentum 0.9, rate ``lrbl``,
divided by 10 for the second half). The memory is a running mean over the first 10 batches, then an exponential
average with ratio ``presave_ratio``. The returned weights are :math:`B \\operatorname{softmax}(\\omega)`: positive,
summing to the batch size, so a weighted mean of per-sample losses keeps the loss scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["ReweightConfig", "SampleReweighter", "decorrelation_loss"]


@dataclass(frozen=True)
class ReweightConfig:
    """StableNet hyper-parameters (defaults as in KA_Net's sibling code CGID)."""

    lambdap: float = 70.0
    decay_pow: float = 2.0
    num_f: int = 1
    lrbl: float = 1.0
    inner_steps: int = 20
    lambda_decay_rate: float = 1.0
    lambda_decay_epochs: int = 5
    min_lambda_times: float = 0.01
    presave_ratio: float = 0.9


def _fourier_features(z: torch.Tensor, num_f: int, generator: torch.Generator) -> torch.Tensor:
    """Random Fourier features of each dimension: :math:`(N, D)` -> :math:`(N, D, F)`."""
    n, d = z.shape
    w = torch.randn(num_f, generator=generator, device=generator.device).to(z)
    b = (2 * math.pi * torch.rand(d, num_f, generator=generator, device=generator.device)).to(z)
    mid = z[:, :, None] * w + b
    mid = mid - mid.amin(1, keepdim=True)
    mid = mid / mid.amax(1, keepdim=True).clamp_min(1e-12) * (math.pi / 2)
    return math.sqrt(2.0 / num_f) * (torch.cos(mid) + torch.sin(mid))


def decorrelation_loss(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal weighted covariances, summed over the Fourier features.

    Args:
        features: :math:`(N, D, F)`.
        weights: :math:`(N,)`, non-negative, summing to 1.
    """
    total = features.new_zeros(())
    for f in range(features.shape[-1]):
        u = features[..., f]
        mean = weights @ u
        cov = (weights[:, None] * u).T @ u - torch.outer(mean, mean)
        sq = cov * cov
        total = total + sq.sum() - sq.diagonal().sum()
    return total


class SampleReweighter:
    """Learns per-sample weights from pooled features; keeps the memory of previous batches.

    Args:
        config: hyper-parameters.
        generator: randomness of the Fourier features (its state belongs in checkpoints for exact resume).
    """

    def __init__(self, config: ReweightConfig = ReweightConfig(), generator: torch.Generator | None = None):
        self.config = config
        self.generator = generator if generator is not None else torch.Generator()
        self.memory_features: torch.Tensor | None = None
        self.memory_logits: torch.Tensor | None = None
        self.updates = 0

    def __call__(self, z: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        """Weights for one batch.

        Args:
            z: pooled features :math:`(B, D)` (detached internally; computed in float32).
            epoch: training epoch, for the decay of :math:`\\lambda`.

        Returns:
            weights :math:`(B,)`, positive, summing to B, no gradient.
        """
        cfg = self.config
        z = z.detach().float()
        b = z.shape[0]
        if self.memory_features is None:
            self.memory_features = z.clone()
            self.memory_logits = z.new_zeros(b)
        memory_z, memory_w = self.memory_features.to(z.device), self.memory_logits.to(z.device)
        everything = torch.cat([z, memory_z])
        logits = z.new_zeros(b, requires_grad=True)
        optimiser = torch.optim.SGD([logits], lr=cfg.lrbl, momentum=0.9)
        lam = cfg.lambdap * max(cfg.lambda_decay_rate ** (epoch // max(cfg.lambda_decay_epochs, 1)),
                                cfg.min_lambda_times)
        with torch.enable_grad():
            for step in range(cfg.inner_steps):
                for group in optimiser.param_groups:
                    group["lr"] = cfg.lrbl * (0.1 if step >= cfg.inner_steps / 2 else 1.0)
                weights = torch.softmax(torch.cat([logits, memory_w]), 0)
                loss_b = decorrelation_loss(_fourier_features(everything, cfg.num_f, self.generator), weights)
                loss_p = torch.softmax(logits, 0).pow(cfg.decay_pow).sum()
                optimiser.zero_grad()
                (loss_b / lam + loss_p).backward()
                optimiser.step()
        logits = logits.detach()
        self._remember(z, logits)
        return torch.softmax(logits, 0) * b

    def _remember(self, z: torch.Tensor, logits: torch.Tensor) -> None:
        k = min(z.shape[0], self.memory_features.shape[0])
        mem_z, mem_w = self.memory_features.to(z.device), self.memory_logits.to(z.device)
        if self.updates < 10:  # running mean while the memory is young
            mem_z[:k] = (mem_z[:k] * self.updates + z[:k]) / (self.updates + 1)
            mem_w[:k] = (mem_w[:k] * self.updates + logits[:k]) / (self.updates + 1)
        else:
            r = self.config.presave_ratio
            mem_z[:k] = mem_z[:k] * r + z[:k] * (1 - r)
            mem_w[:k] = mem_w[:k] * r + logits[:k] * (1 - r)
        self.memory_features, self.memory_logits = mem_z, mem_w
        self.updates += 1

    def state_dict(self) -> dict:
        """Memory, update count and generator state (for checkpoints)."""
        return {"memory_features": self.memory_features, "memory_logits": self.memory_logits,
                "updates": self.updates, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.memory_features = state["memory_features"]
        self.memory_logits = state["memory_logits"]
        self.updates = int(state["updates"])
        self.generator.set_state(state["generator"])

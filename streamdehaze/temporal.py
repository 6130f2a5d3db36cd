"""Temporal smoothing against flicker: an exponential moving average of the guided-upsampling coefficients.

Per-frame dehazing flickers: the estimated airlight and haze density wobble from frame to frame although the
fog does not (a headlight entering the frame drags the airlight estimate with it). The smoothing acts on the
low-resolution coefficients ``(a, b)`` of ``out = a * in + b`` (for ``dcp``, 1/t and A(1 - 1/t): transmission
and airlight), never on pixels, so it cannot smear detail. ``b`` is averaged relative to the frame's mean
brightness, so a global exposure change passes through exactly as it would frame by frame.

With S = L / mean(L) - 1 the gain-free structure of the low-resolution luma L:

    m = local mean of |S_t - S_(t-1)|,   w = strength * exp(-(m / motion_scale)^2)
    a_t <- w a_(t-1) + (1 - w) a_t,   b_t / mean(L_t) <- likewise
    reset when mean|S_t - S_(t-1)| > 0.5 (mean|S_t| + mean|S_(t-1)|): the structure is unrelated (a scene cut)

Where the picture moved, w falls to zero (moving objects do not ghost); a new frame size also resets.
"""

from __future__ import annotations

import torch

from .filters import box_filter, luminance


DEFAULT_STRENGTH = 0.6


class TemporalSmoother:
    """Stateful: feed frames in display order, one stream per instance."""

    def __init__(self, strength: float = DEFAULT_STRENGTH, motion_scale: float = 0.03) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError("temporal strength must be in [0, 1)")
        self.strength, self.motion_scale = strength, motion_scale
        self.reset()

    def reset(self) -> None:
        self._structure: torch.Tensor | None = None
        self._a: torch.Tensor | None = None
        self._b: torch.Tensor | None = None  # relative to the frame's mean luma

    def __call__(self, small: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``small`` [B,3,h,w] model input, gains ``a`` [B,1|2,h,w], offsets ``b`` [B,3,h,w] -> smoothed (a, b);
        B frames in order."""
        luma = luminance(small)
        level = luma.mean((-2, -1), keepdim=True).clamp(min=1e-3)
        structure = luma / level - 1.0
        out_a, out_b = [], []
        for i in range(small.shape[0]):
            ai, bi, si = a[i:i + 1], b[i:i + 1] / level[i:i + 1], structure[i:i + 1]
            prev = self._structure
            if prev is not None and prev.shape == si.shape and self._a.shape == ai.shape:
                change = (si - prev).abs()
                # The scene-cut test stays a tensor (w = 0 on a cut): a Python ``if`` on it would make the host
                # wait for the GPU on every frame and stall the batches queued behind this one.
                same_scene = change.mean() <= 0.5 * (si.abs().mean() + prev.abs().mean())
                w = self.strength * torch.exp(-(box_filter(change, 1) / self.motion_scale) ** 2) * same_scene
                ai = torch.lerp(ai, self._a, w)
                bi = torch.lerp(bi, self._b, w)
            self._structure, self._a, self._b = si, ai, bi
            out_a.append(ai)
            out_b.append(bi * level[i:i + 1])
        return torch.cat(out_a), torch.cat(out_b)

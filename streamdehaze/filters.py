"""Small image filters shared by the models and the engine (tensor functions, ``[B, C, H, W]``)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .constants import device_constant


def box_filter(x: torch.Tensor, radius: int, opencv: bool | None = None) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, shrinking at the borders; separable and exact to ~1e-7.

    On a CPU (``opencv`` None: CPU tensors without gradients) OpenCV's running-sum box filter does it: at the
    engine's low resolution it is ~10x faster than the torch operations below, which serve other devices.
    There, small radii add shifted slices (faster than depthwise convolutions); larger ones use prefix sums,
    which cost the same for any radius (the mean is removed first so fp32 prefix sums stay small and keep the
    tiny variances a guided filter needs).
    """
    counts = _window_counts(*x.shape[-2:], radius, x)
    if opencv is None:
        opencv = x.device.type == "cpu" and not x.requires_grad and x.dtype in (torch.float32, torch.float64)
    if opencv:
        return _window_means_opencv(x, radius, counts)
    if radius <= 3:
        return _shift_sum(_shift_sum(x, radius, -1), radius, -2) / counts
    mean = x.mean((-2, -1), keepdim=True)
    return _window_sum(_window_sum(x - mean, radius, -1), radius, -2) / counts + mean


def _window_means_opencv(x: torch.Tensor, radius: int, counts: torch.Tensor) -> torch.Tensor:
    """Sums over the windows with zeros outside the image (OpenCV accumulates float32 in float64), divided by
    ``counts`` a plane at a time, while it is in cache (a pass over the whole batch after cost as much again)."""
    planes = x.detach().reshape(-1, *x.shape[-2:]).contiguous().numpy()
    out = np.empty_like(planes)
    k = 2 * radius + 1
    counts = counts.numpy()
    for src, dst in zip(planes, out):
        cv2.boxFilter(src, -1, (k, k), dst=dst, normalize=False, borderType=cv2.BORDER_CONSTANT)
        np.divide(dst, counts, out=dst)
    return torch.from_numpy(out).view(x.shape)


def max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over a (2r+1)^2 window, shrinking at the borders (grey dilation). On a CPU without gradients,
    OpenCV's dilation: the same values as torch's max pooling, about 20 times faster at the engine's size."""
    if x.device.type == "cpu" and not x.requires_grad and x.dtype in (torch.float32, torch.float64):
        planes = x.reshape(-1, *x.shape[-2:]).contiguous().numpy()
        out = np.empty_like(planes)
        kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
        for src, dst in zip(planes, out):
            cv2.dilate(src, kernel, dst=dst)  # (its border, like the pooling's padding, never wins)
        return torch.from_numpy(out).view(x.shape)
    return F.max_pool2d(x.flatten(0, -3), 2 * radius + 1, 1, radius).view(x.shape)


def _shift_sum(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    padded = F.pad(x, (radius, radius) if dim == -1 else (0, 0, radius, radius))
    total = padded.narrow(dim, 0, n).clone()
    for k in range(1, 2 * radius + 1):
        total += padded.narrow(dim, k, n)
    return total


def _window_sum(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    csum = F.pad(x, (radius + 1, radius) if dim == -1 else (0, 0, radius + 1, radius)).cumsum(dim)
    return csum.narrow(dim, 2 * radius + 1, n) - csum.narrow(dim, 0, n)


def _window_counts(h: int, w: int, radius: int, like: torch.Tensor) -> torch.Tensor:
    """Pixels inside each (2r+1)^2 window that fall within the image, on ``like``'s device and dtype; made once
    per size (video repeats one size) and, on CUDA, per stream (``constants.py``)."""
    def build(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        def counts(n: int) -> torch.Tensor:
            i = torch.arange(n, device=device)
            return ((i + radius).clamp(max=n - 1) - (i - radius).clamp(min=0) + 1).to(dtype)
        return counts(h)[:, None] * counts(w)[None, :]
    return device_constant(("window_counts", h, w, radius), like, build)


def min_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Minimum over a (2r+1)^2 window with replicated borders (grey erosion), O(log r) per pixel."""
    return _min_1d(_min_1d(x, radius, -1), radius, -2)


def _min_1d(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Sliding minimum of width k = 2r+1: windows of width w double until w >= k/2, then two
    overlapping windows of width w cover k exactly."""
    k = 2 * radius + 1
    n = x.shape[dim]
    x = torch.cat((x.narrow(dim, 0, 1).expand_as(x.narrow(dim, 0, radius)), x,
                   x.narrow(dim, n - 1, 1).expand_as(x.narrow(dim, 0, radius))), dim)
    w = 1
    while 2 * w <= k:
        m = x.shape[dim]
        x = torch.minimum(x.narrow(dim, 0, m - w), x.narrow(dim, w, m - w))
        w *= 2
    if w < k:
        m = x.shape[dim]
        x = torch.minimum(x.narrow(dim, 0, m - (k - w)), x.narrow(dim, k - w, m - (k - w)))
    return x


def guided_coefficients(guide: torch.Tensor, src: torch.Tensor, radius: int,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """He et al.'s guided filter with a one-channel guide: ``src ~= a * guide + b`` locally.

    ``guide`` ``[B,1,h,w]``, ``src`` ``[B,C,h,w]``; returns smoothed ``(a, b)``, each ``[B,C,h,w]``.
    Computing them at low resolution and upsampling gives the fast guided filter (He & Sun 2015).
    """
    mean_i = box_filter(guide, radius)
    mean_p = box_filter(src, radius)
    cov_ip = box_filter(guide * src, radius) - mean_i * mean_p
    var_i = box_filter(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_filter(a, radius), box_filter(b, radius)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking) to ``size = (h, w)``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)

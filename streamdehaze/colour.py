"""YUV <-> RGB conversion as tensor functions, so frames cross to the device as compact YUV planes.

Shapes: luma ``[B, H, W]``, chroma ``[B, Hc, Wc]`` with ``Hc = ceil(H / sy)``, ``Wc = ceil(W / sx)``;
RGB ``[B, 3, H, W]`` float in [0, 1]. Plane dtypes: uint8 (8-bit) or int16 (9-16 bit samples, a zero-copy
view of FFmpeg's little-endian uint16 planes). Any device, any float dtype for the RGB side.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .constants import device_constant

# (Kr, Kb) luma coefficients per colour matrix.
_LUMA = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}


@dataclass(frozen=True)
class YUVFormat:
    """How YUV samples map to RGB: matrix, range, bit depth and chroma subsampling (sx, sy)."""

    matrix: str = "bt709"
    full_range: bool = False
    bits: int = 8
    subsampling: tuple[int, int] = (2, 2)

    def __post_init__(self) -> None:
        if self.matrix not in _LUMA:
            raise ValueError(f"unknown colour matrix {self.matrix!r}")

    def _offsets(self) -> tuple[float, float, float, float]:
        """(luma black, luma span, chroma zero, chroma span) in sample units."""
        s = float(1 << (self.bits - 8))
        if self.full_range:
            peak = float((1 << self.bits) - 1)
            return 0.0, peak, 128.0 * s, peak
        return 16.0 * s, 219.0 * s, 128.0 * s, 224.0 * s


def ycc_from_rgb(matrix: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """3x3 matrix from RGB to normalised (Y' in [0,1], Cb and Cr in [-0.5, 0.5]): float64 on the host, or with
    ``like`` on its device and dtype (made once there)."""
    if like is not None:
        return device_constant(("ycc_from_rgb", matrix), like, lambda d, t: ycc_from_rgb(matrix).to(d, t))
    return torch.linalg.inv(_rgb_from_ycc(matrix))


def _rgb_from_ycc(matrix: str) -> torch.Tensor:
    """3x3 matrix from normalised (Y', Cb, Cr) to RGB."""
    kr, kb = _LUMA[matrix]
    kg = 1.0 - kr - kb
    return torch.tensor([[1.0, 0.0, 2.0 * (1.0 - kr)],
                         [1.0, -2.0 * kb * (1.0 - kb) / kg, -2.0 * kr * (1.0 - kr) / kg],
                         [1.0, 2.0 * (1.0 - kb), 0.0]], dtype=torch.float64)


@functools.lru_cache(maxsize=64)
def _affine(fmt: YUVFormat) -> torch.Tensor:
    """``[3, 4]``: weight and bias columns mapping raw samples (Y, U, V) to RGB in [0, 1], before clamping."""
    y0, ys, c0, cs = fmt._offsets()
    weight = _rgb_from_ycc(fmt.matrix) @ torch.diag(torch.tensor([1 / ys, 1 / cs, 1 / cs], dtype=torch.float64))
    bias = -weight @ torch.tensor([y0, c0, c0], dtype=torch.float64)
    return torch.cat((weight, bias[:, None]), 1)


@functools.lru_cache(maxsize=64)
def _inverse_affine(fmt: YUVFormat) -> torch.Tensor:
    """``[3, 4]``: weight and bias columns mapping RGB to raw samples (Y, U, V)."""
    affine = _affine(fmt)
    inverse = torch.linalg.inv(affine[:, :3])
    return torch.cat((inverse, -inverse @ affine[:, 3:]), 1)


def _mix(x: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Per-pixel affine colour map ``weight @ x + bias`` over ``[B,C,H,W]``, ``affine = [weight | bias]`` on
    ``x``'s device and dtype (a batched matmul: on CPU it is an order of magnitude faster than the equivalent 1x1
    convolution)."""
    b, c, h, w = x.shape
    o = affine.shape[0]
    out = torch.baddbmm(affine[:, c:].view(1, o, 1).expand(b, o, 1), affine[:, :c].expand(b, o, c),
                        x.reshape(b, c, h * w))
    return out.view(b, o, h, w)


def _on(x: torch.Tensor, name: str, affine: Callable[[YUVFormat], torch.Tensor], fmt: YUVFormat) -> torch.Tensor:
    """A host constant of ``fmt`` on ``x``'s device and dtype, made once there (never copied per call)."""
    return device_constant((name, fmt), x, lambda device, dtype: affine(fmt).to(device, dtype))


def yuv_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, fmt: YUVFormat,
               dtype: torch.dtype = torch.float32, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Planes ``[B,H,W]``, ``[B,Hc,Wc]`` x2 -> RGB ``[B,3,H,W]`` in [0, 1] of ``dtype``.

    Chroma is upsampled bilinearly (centre-sited), as players do for display. With ``size = (h, w)`` all
    planes are resized straight to that size instead (area-averaged when shrinking): a small RGB image for
    low-resolution inference, without ever building the full-resolution one.
    """
    h, w = y.shape[-2:]
    luma, chroma = y.unsqueeze(1), torch.stack((u, v), 1)
    if size is not None:
        luma, chroma = _area(luma, size, dtype), _area(chroma, size, dtype)
    else:
        luma, chroma = luma.to(dtype), chroma.to(dtype)
        if chroma.shape[-2:] != (h, w):
            sx, sy = fmt.subsampling
            full = (chroma.shape[-2] * sy, chroma.shape[-1] * sx)
            chroma = F.interpolate(chroma, size=full, mode="bilinear", align_corners=False)[..., :h, :w]
    x = torch.cat((luma, chroma), 1)
    return _mix(x, _on(x, "yuv_to_rgb", _affine, fmt)).clamp_(0.0, 1.0)


def _area(x: torch.Tensor, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """Planes ``[B, C, H, W]`` of any dtype -> ``dtype`` at ``size``: an integer box average first (cheap,
    alias-free), then a bilinear step to the exact size."""
    h, w = x.shape[-2:]
    k = min(h // size[0], w // size[1])
    if k > 1 and h % k == 0 and w % k == 0 and x.device.type == "cpu" and dtype == torch.float32:
        x = _box_average_opencv(x, k)  # the same averages, 3-4x faster than converting and pooling in torch
    elif k > 1:
        x = F.avg_pool2d(x.to(dtype), k, ceil_mode=True)
    x = x.to(dtype)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _box_average_opencv(x: torch.Tensor, k: int) -> torch.Tensor:
    """Means of the k x k blocks of ``x`` (whose sides are multiples of k), as float32, by OpenCV's area resize."""
    b, c, h, w = x.shape
    planes = x.reshape(b * c, h, w).numpy()
    out = np.empty((b * c, h // k, w // k), np.float32)
    for src, dst in zip(planes, out):
        cv2.resize(src.astype(np.float32), (w // k, h // k), dst=dst, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(out).view(b, c, h // k, w // k)


def rgb_to_yuv(rgb: torch.Tensor, fmt: YUVFormat) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB ``[B,3,H,W]`` in [0, 1] -> quantised planes (uint8 for 8 bits, else int16).

    Chroma is box-averaged over each subsampling cell (partial cells at odd edges average what exists);
    the transform is linear, so averaging RGB first and converting the small image is the same and cheaper.
    """
    x = rgb.float()
    affine = _on(x, "rgb_to_yuv", _inverse_affine, fmt)
    sx, sy = fmt.subsampling
    small = F.avg_pool2d(x, (sy, sx), ceil_mode=True) if (sx, sy) != (1, 1) else x
    luma = _mix(x, affine[:1])
    chroma = _mix(small, affine[1:])
    peak = float((1 << fmt.bits) - 1)
    out_dtype = torch.uint8 if fmt.bits == 8 else torch.int16
    yq = luma[:, 0].round_().clamp_(0, peak).to(out_dtype)
    cq = chroma.round_().clamp_(0, peak).to(out_dtype)
    return yq, cq[:, 0], cq[:, 1]

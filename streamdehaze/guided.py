"""Guided upsampling in the YUV domain: run the model small, transfer its effect to the full-resolution planes.

Coefficient models predict their transform (``kanet.transform``: a luma gain, a chroma gain, an RGB offset). For
the others, at low resolution we fit, in every window, ``out_c ~= a * in_c + b_c`` (one gain shared by the three
RGB channels, one offset per channel) between the model's input and output: the fast guided filter (He & Sun
2015) with a shared-gain colour model. That model is exactly the haze model ``J = (I - A) / t + A`` (gain 1/t,
offset A (1 - 1/t)). Either way the map stays per-plane in YUV: ``plane_out = g * plane_in + d``, so the
full-resolution work is an upsample and a multiply-add per plane, with no full-resolution RGB at all.

Shapes: RGB ``[B,3,h,w]`` in [0,1]; gain ``[B,1|2,h,w]``; offsets ``[B,3,h,w]``; planes as in ``colour``.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F

import kanet

from .colour import YUVFormat, ycc_from_rgb
from .filters import box_filter, max_filter, resize


def fit_gain_offset(src: torch.Tensor, dst: torch.Tensor, radius: int,
                    eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``dst ~= a * src + b`` in each (2r+1)^2 window, ridge ``eps`` on ``a``, then smoothed."""
    c = src.shape[1]
    # The shared gain needs only channel sums of the products: 8 planes to filter instead of 12.
    products = torch.stack(((src * dst).sum(1), (src * src).sum(1)), 1)
    stats = box_filter(torch.cat((src, dst, products), 1), radius)
    mean_s, mean_d, mean_sd, mean_ss = stats.split((c, c, 1, 1), 1)
    cov = mean_sd - (mean_s * mean_d).sum(1, keepdim=True)
    var = mean_ss - (mean_s * mean_s).sum(1, keepdim=True)
    a = cov / (var + eps)
    b = mean_d - a * mean_s
    smooth = box_filter(torch.cat((a, b), 1), radius)
    return smooth[:, :1], smooth[:, 1:]


def plane_coefficients(a: torch.Tensor, b: torch.Tensor, src: YUVFormat,
                       dst: YUVFormat) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Turn an RGB-domain transform into per-plane ``(gain, offset)`` in sample units: ``out = gain * in + offset``.

    ``a``: gains ``[B,2,h,w]`` (luma, chroma; ``kanet.transform``) or ``[B,1,h,w]`` shared; ``b``: RGB offsets.
    The luma gain scales Y and the chroma gain U and V, exactly, for the stream's own matrix (``kanet.transform``
    defines them with BT.709 luma: on a BT.601 stream a luma/chroma split of the gain differs by the matrices'
    small difference). Input and output share the colour matrix; range and bit depth may differ.
    """
    offset_ycc = torch.einsum("oc,bchw->bohw", ycc_from_rgb(src.matrix, like=b), b)
    si, so = src._offsets(), dst._offsets()
    out = []
    for i in range(3):
        in_zero, in_span = (si[0], si[1]) if i == 0 else (si[2], si[3])
        out_zero, out_span = (so[0], so[1]) if i == 0 else (so[2], so[3])
        gain = (a[:, :1] if i == 0 else a[:, -1:]) * (out_span / in_span)
        out.append((gain, offset_ycc[:, i:i + 1] * out_span + out_zero - gain * in_zero))
    return out


def apply_planes(planes: tuple[torch.Tensor, ...], coefficients: list[tuple[torch.Tensor, torch.Tensor]],
                 dst: YUVFormat, opencv: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply per-plane coefficients (upsampled to each plane's size) and quantise to ``dst``'s layout.

    ``opencv`` (default: on CPU, when the planes already have ``dst``'s layout) does the full-resolution work
    with OpenCV, one frame at a time: its SIMD resize and saturating arithmetic cost about a fifth of the
    equivalent torch operations on a CPU (720p: ~1.2 vs ~6.6 ms a frame). Both give the same samples up to
    rounding (a test holds them to one level).
    """
    y_size, c_size = planes[0].shape[-2:], planes[1].shape[-2:]
    h, w = y_size
    sx, sy = dst.subsampling
    sizes = ((h, w), (-(-h // sy), -(-w // sx)), (-(-h // sy), -(-w // sx)))
    if opencv is None:
        opencv = planes[0].device.type == "cpu" and all(tuple(p.shape[-2:]) == s for p, s in zip(planes, sizes))
    if opencv:
        return _apply_opencv(planes, coefficients, dst)
    (gain_y, offset_y), (gain_c, offset_u), (_, offset_v) = coefficients  # U and V share the gain
    gain_y, offset_y = resize(torch.cat((gain_y, offset_y), 1), y_size).split(1, 1)
    gain_c, offset_u, offset_v = resize(torch.cat((gain_c, offset_u, offset_v), 1), c_size).split(1, 1)
    outs = (torch.addcmul(offset_y, gain_y, planes[0].unsqueeze(1).float()),
            torch.addcmul(offset_u, gain_c, planes[1].unsqueeze(1).float()),
            torch.addcmul(offset_v, gain_c, planes[2].unsqueeze(1).float()))
    peak = float((1 << dst.bits) - 1)
    dtype = torch.uint8 if dst.bits == 8 else torch.int16
    out = []
    for plane, size in zip(outs, sizes):
        if tuple(plane.shape[-2:]) != size:  # e.g. 4:4:4 in, 4:2:0 out
            plane = F.adaptive_avg_pool2d(plane, size)
        out.append(plane[:, 0].round_().clamp_(0, peak).to(dtype))
    return out[0], out[1], out[2]


def _apply_opencv(planes: tuple[torch.Tensor, ...], coefficients: list[tuple[torch.Tensor, torch.Tensor]],
                  dst: YUVFormat) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CPU path of :func:`apply_planes`, for planes already in ``dst``'s layout."""
    (gain_y, offset_y), (gain_c, offset_u), (_, offset_v) = coefficients
    maps = [m.float().contiguous().numpy() for m in (gain_y, offset_y, gain_c, offset_u, offset_v)]
    depth = cv2.CV_8U if dst.bits == 8 else cv2.CV_16S
    outs: tuple[list, list, list] = ([], [], [])
    for i in range(len(planes[0])):
        g_y, o_y, g_c, o_u, o_v = (m[i, 0] for m in maps)
        y, u, v = (p[i].numpy() for p in planes)
        up_y = functools.partial(cv2.resize, dsize=y.shape[::-1], interpolation=cv2.INTER_LINEAR)
        up_c = functools.partial(cv2.resize, dsize=u.shape[::-1], interpolation=cv2.INTER_LINEAR)
        gain = up_c(g_c)
        # Saturating conversion rounds to nearest and clamps to [0, 255] for 8 bits.
        for out, plane, g, o in ((outs[0], y, up_y(g_y), up_y(o_y)), (outs[1], u, gain, up_c(o_u)),
                                 (outs[2], v, gain, up_c(o_v))):
            out.append(cv2.add(cv2.multiply(plane, g, dtype=cv2.CV_32F), o, dtype=depth))
    peak = (1 << dst.bits) - 1
    result = [torch.from_numpy(np.stack(o)) for o in outs]
    if dst.bits > 8:
        result = [r.clamp_(0, peak) for r in result]
    return result[0], result[1], result[2]


STATS_SIDE = 256  # the largest short side the flatness of a frame is judged at (smaller frames: their own)
GREY_SPREAD = 2 / 255  # the most a grey picture's colour channels differ by (rounding in YUV to RGB, in JPEG)
# The share of a grey picture's pixels that may have colour: a camera's name or clock burnt in, in yellow, took an
# infrared camera's whole night picture for a colour one (and so tinted it).
GREY_EXCEPT = 0.03


def grey_stays_grey(rgb: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``offset`` ``[B,3,h,w]`` with no colour for the frames of ``rgb`` (at its size) that have none, but for a
    few pixels (``GREY_EXCEPT``): an infrared camera's night picture, a greyscale photo. The offsets carry the
    airlight's colour, which a network estimates only nearly grey even there (up to 11 levels between channels): it
    would tint them. Tensor operations only."""
    coloured = ((rgb.amax(1) - rgb.amin(1)) > GREY_SPREAD).float().mean((-2, -1))
    grey = coloured <= GREY_EXCEPT
    if rgb.device.type == "cpu" and not grey.any():  # (on a GPU, the test would wait for the device)
        return offset
    return torch.where(grey[:, None, None, None], kanet.transform.luma(offset).expand_as(offset), offset)


# A learned transform's maps are smoothed over (2r+1)^2 windows at the inference size, where the picture varies by
# less than a luma variance of about ``SMOOTH_EPS`` (a standard deviation of 2.5 levels): ``smooth_transform``.
SMOOTH_RADIUS = 3
SMOOTH_EPS = 1e-4


def smooth_transform(rgb: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor, radius: int = SMOOTH_RADIUS,
                     eps: float = SMOOTH_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """A network's transform of ``rgb`` (what it was predicted from, at its size) with its maps guided-filtered by
    ``rgb``'s luma (He et al. 2010): where the picture is flat they take their local mean, and across its edges they
    follow them. The network leaves a grid of its 4-pixel patches in its maps, which the transform printed on flat
    fog and sky (at 4x, a 16-pixel checker, 1.5 levels, as plain as the picture's own detail there). Tensor
    operations only; gains of either form."""
    if rgb.device.type == "cpu" and rgb.shape[0] > 1:  # a frame at a time: its planes stay in cache (1.4 ms a frame)
        parts = [smooth_transform(*frame, radius, eps) for frame in zip(rgb.split(1), gain.split(1), offset.split(1))]
        return torch.cat([g for g, _ in parts]), torch.cat([o for _, o in parts])
    y = kanet.transform.luma(rgb.float())
    maps = torch.cat((gain, offset), 1)
    n = maps.shape[1]
    stats = box_filter(torch.cat((y, y * y, maps, y * maps), 1), radius)
    mean_y, mean_yy, mean_m, mean_ym = stats.split((1, 1, n, n), 1)
    a = (mean_ym - mean_y * mean_m) / (mean_yy - mean_y * mean_y + eps)
    a, b = box_filter(torch.cat((a, mean_m - a * mean_y), 1), radius).split(n, 1)
    smooth = torch.addcmul(b, a, y)
    return smooth[:, :gain.shape[1]], smooth[:, gain.shape[1]:]


# The least share of a pixel's darkest channel that a learned transform keeps there (``keep_shadows``), and the
# darkest channel of a pixel that is black (a mask's, after rounding in YUV).
SHADOW_SHARE = 0.15
BLACK = 2 / 255


def keep_shadows(rgb: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor,
                 share: float = SHADOW_SHARE) -> torch.Tensor:
    """``offset`` ``[B,3,h,w]`` raised, the same in every channel, where the transform would take the darkest channel
    of ``rgb`` (what it was predicted from, at its size) below ``share`` of what it was: a dark building under haze
    went to black (a quarter of some real photos' pixels), which no haze does to it. The rise is spread over the
    neighbourhood (a 5x5 maximum, then a 9x9 mean) so that it leaves no edge of its own; pixels far from any such
    shadow keep the transform as it was. Tensor operations only."""
    out = kanet.transform.apply(rgb, gain, offset)
    low = rgb.amin(1, keepdim=True)
    # (a black pixel, a privacy mask's, a letterbox's, stays black whatever the offsets: it asks for no rise, which
    # greyed it and lifted its neighbourhood)
    deficit = torch.where(low > BLACK, share * low - out.amin(1, keepdim=True), 0).clamp_(min=0)
    deficit = box_filter(max_filter(deficit, 2), 4)
    return offset + deficit


def damp_flat_regions(rgb: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor,
                      floor: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The transform, changed so that where ``rgb`` (what it was predicted from, at the transform's resolution) is
    flat to within ``floor`` (a standard deviation, [0, 1] units) it gives the input's own fine detail plus the
    correction's local mean: the fog is lifted there as before, but nothing finer than a neighbourhood is made.

    Where a region varies no more than a camera's noise and compression blocks, any gain above 1, and offsets that
    follow the input, amplify only those: a grey foggy sky turns into flickering blocks. The blend between the
    transform and its flat form is the Wiener weight ``s2 / (s2 + floor^2)``, ``s2`` the local luma variance above
    ``floor^2`` (5x5 windows at a short side of at most ``STATS_SIDE``), so textured regions keep their transform; the
    local mean is a 13x13 tent there (a box leaves square blobs in a smooth sky). The transform is linear in
    ``gain - 1`` and ``offset``, so the blend is one too. Gains of either form (``[B,2|1,h,w]``) and ``[B,3,h,w]``
    offsets at ``rgb``'s size. ``floor``: one for all frames, or each frame's ``[B]``.
    """
    noise = (floor.float().reshape(-1, 1, 1, 1) if isinstance(floor, torch.Tensor) else
             torch.full((1, 1, 1, 1), float(floor), device=rgb.device)).square()
    if noise.device.type == "cpu" and not noise.any():  # (on a GPU, the test would wait for the device)
        return gain, offset
    size = tuple(rgb.shape[-2:])
    scale = min(1.0, STATS_SIDE / min(size))
    stats_size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    small = resize(rgb.float(), stats_size)
    y = kanet.transform.luma(small)
    mean, mean_sq = box_filter(torch.cat((y, y * y), 1), 2).split(1, 1)
    signal = (mean_sq - mean * mean - noise).clamp_(min=0)
    weight = box_filter(torch.where(noise > 0, signal / (signal + noise), 1.0), 2)  # floor 0: the transform
    change = kanet.transform.apply(small, resize(gain, stats_size), resize(offset, stats_size)).sub_(small)
    lift = box_filter(box_filter(change, 3), 3)
    if stats_size != size:
        weight, lift = resize(torch.cat((weight, lift), 1), size).split((1, 3), 1)
    return torch.lerp(torch.ones_like(weight), gain, weight), torch.lerp(lift, offset, weight)

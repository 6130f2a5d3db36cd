"""Quality metrics for dehazing: PSNR, SSIM, temporal warping error and (optional) FADE fog density.

Importable by the product's benchmarks and tests: depends on torch, kornia, numpy and OpenCV only (``pyfade``
when FADE is asked for), never on ``streamdehaze``'s I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from kornia.metrics import ssim as _ssim_map

__all__ = ["psnr", "ssim", "optical_flow", "occlusion_mask", "warping_error", "fade_density", "mean_chroma",
           "colour_cast", "detail_retention"]


def _as_float(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 :math:`(H, W, 3)` / :math:`(N, H, W, 3)` arrays -> float :math:`(N, 3, H, W)` in [0, 1]; tensors
    :math:`(B, C, H, W)` pass through."""
    if isinstance(image, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(image))
        t = t[None] if t.dim() == 3 else t
        return t.permute(0, 3, 1, 2).float() / (255.0 if image.dtype == np.uint8 else 1.0)
    return image.float()


def psnr(output: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (peak 1 for floats in [0, 1], 255 for uint8 arrays).

    Args:
        output: :math:`(B, C, H, W)` floats in [0, 1], or uint8 :math:`(H, W, 3)` / :math:`(N, H, W, 3)`.
        target: same shape and kind.

    Returns:
        :math:`(B,)` (100 dB for identical images).
    """
    x, y = _as_float(output), _as_float(target)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp(max=100.0)


def ssim(output: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, window: int = 11) -> torch.Tensor:
    """Mean SSIM per image (Gaussian window 11, sigma 1.5, over all channels); inputs as for :func:`psnr`.

    Returns:
        :math:`(B,)` in [-1, 1], 1 for identical images.
    """
    return _ssim_map(_as_float(output), _as_float(target), window).flatten(1).mean(1)


def optical_flow(reference: np.ndarray, current: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow ``current -> reference`` between two uint8 RGB frames :math:`(H, W, 3)`.

    Args:
        method: ``dis`` (OpenCV DIS, medium preset) or ``farneback``.

    Returns:
        float32 :math:`(H, W, 2)` in pixels: pixel p of ``current`` is at p + flow(p) in ``reference``.
    """
    a = cv2.cvtColor(current, cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(reference, cv2.COLOR_RGB2GRAY)
    if method == "dis":
        return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 21, 3, 7, 1.5, 0)
    raise ValueError(f"unknown flow method {method!r} (dis or farneback)")


def _remap(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def occlusion_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Forward-backward consistency (Ruder et al. 2016, as used by Lai et al. 2018).

    Args:
        forward: flow current -> reference :math:`(H, W, 2)`.
        backward: flow reference -> current :math:`(H, W, 2)`.

    Returns:
        float32 :math:`(H, W)`: 1 where the flow is consistent and stays inside the frame, 0 where occluded.
    """
    h, w = forward.shape[:2]
    back = _remap(backward, forward)
    round_trip = forward + back
    bad = (round_trip ** 2).sum(-1) > 0.01 * ((forward ** 2).sum(-1) + (back ** 2).sum(-1)) + 0.5
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    x, y = gx + forward[..., 0], gy + forward[..., 1]
    outside = (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)
    return (~(bad | outside)).astype(np.float32)


def video_flow(frames_in: Sequence[np.ndarray], method: str = "dis") -> list[tuple[np.ndarray, np.ndarray]]:
    """Per consecutive pair of input frames, the flow ``t -> t-1`` and its non-occlusion mask: what
    :func:`warping_error` needs, computed once for every output of the same input."""
    flows = []
    for t in range(1, len(frames_in)):
        fwd = optical_flow(frames_in[t - 1], frames_in[t], method)
        flows.append((fwd, occlusion_mask(fwd, optical_flow(frames_in[t], frames_in[t - 1], method))))
    return flows


def warping_error(frames_in: Sequence[np.ndarray], frames_out: Sequence[np.ndarray], *, method: str = "dis",
                  per_frame: bool = False, flow: list[tuple[np.ndarray, np.ndarray]] | None = None
                  ) -> float | list[float]:
    """Temporal warping error of a processed video (Lai et al., ECCV 2018).

    Flow is computed on the INPUT frames (the output may flicker or be wrong); each output frame is compared with
    the previous output frame warped onto it, over non-occluded pixels:
    :math:`E = \\frac{1}{T-1} \\sum_t \\sum_p M_t(p) \\lVert O_t(p) - \\hat O_{t-1}(p) \\rVert_2^2 / \\sum_p M_t(p)`
    with frames in [0, 1].

    Args:
        frames_in: input video, uint8 RGB :math:`(H, W, 3)` each.
        frames_out: processed video, same count; resized to the input size if it differs.
        method: flow method (see :func:`optical_flow`).
        per_frame: return the T-1 per-pair errors instead of their mean.
        flow: :func:`video_flow` of ``frames_in``, when already computed.

    Returns:
        the mean error (or the per-pair list); 0 for a perfectly consistent video.
    """
    if len(frames_in) != len(frames_out):
        raise ValueError(f"{len(frames_in)} input frames but {len(frames_out)} output frames")
    if len(frames_in) < 2:
        raise ValueError("warping error needs at least two frames")
    h, w = frames_in[0].shape[:2]
    errors = []
    for t, (fwd, mask) in enumerate(flow if flow is not None else video_flow(frames_in, method), start=1):
        prev, cur = frames_out[t - 1], frames_out[t]
        if prev.shape[:2] != (h, w):
            prev = cv2.resize(prev, (w, h), interpolation=cv2.INTER_AREA)
            cur = cv2.resize(cur, (w, h), interpolation=cv2.INTER_AREA)
        warped = _remap(prev.astype(np.float32) / 255, fwd)
        diff = ((cur.astype(np.float32) / 255 - warped) ** 2).sum(-1)
        errors.append(float((diff * mask).sum() / max(mask.sum(), 1.0)))
    return errors if per_frame else float(np.mean(errors))


def fade_density(image: np.ndarray) -> float:
    """FADE fog density (Choi et al., TIP 2015) of a uint8 RGB image through the optional ``fade-python`` package
    (lower = less fog).

    Raises:
        ImportError: ``fade-python`` is not installed (``pip install fade-python``).
    """
    try:
        import pyfade
    except ImportError as exc:
        raise ImportError("FADE needs the optional package fade-python (pip install fade-python)") from exc
    return float(pyfade.fade_array(image))


def video_fade(frames: Sequence[np.ndarray], every: int = 10) -> float:
    """Mean FADE fog density of every ``every``-th frame of a clip (raises ``ImportError`` like
    :func:`fade_density`)."""
    return float(np.mean([fade_density(f) for f in frames[::every]]))


def mean_chroma(image: np.ndarray) -> np.ndarray:
    """Mean CIELAB (a*, b*) of a uint8 RGB image :math:`(H, W, 3)` (D65, OpenCV's sRGB conversion)."""
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    return lab[..., 1:].reshape(-1, 2).mean(0)


def colour_cast(image_in: np.ndarray, image_out: np.ndarray) -> float:
    """How far dehazing moved the picture's overall colour: the CIELAB distance between the mean (a*, b*) of the
    output and of the input (uint8 RGB :math:`(H, W, 3)` each). Grey fog dehazed without a cast moves it little;
    a blue tint on grey fog moves it along b*. 0 for an unchanged picture; about 2.3 is a just-noticeable
    difference."""
    return float(np.linalg.norm(mean_chroma(image_out) - mean_chroma(image_in)))


def detail_retention(image_in: np.ndarray, image_out: np.ndarray, *, sigma: float = 1.5, radius: int = 7,
                     textured: float = 0.3) -> dict[str, float]:
    """How much of the input's fine detail the output keeps, in textured regions (uint8 RGB, same size).

    Fine detail is the luma minus its Gaussian blur (``sigma`` px). In every (2r+1)^2 window we compare the
    input's detail with the output's by their squared correlation :math:`R^2 = cov^2 / (var_{in} var_{out})`:
    1 where the output's detail is the input's, scaled by any local contrast gain (what dehazing does), lower where
    it was smoothed away or replaced by synthesised texture. Noise the input had counts as kept; new noise does
    not. The score is the mean over the ``textured`` fraction of windows with the most input detail, weighted by
    that detail's variance (flat sky carries little and decides nothing).

    Returns:
        ``retention`` (the weighted mean :math:`R^2`, in [0, 1]) and ``gain`` (median ratio of output to input
        detail amplitude in those windows: above 1 means dehazing made detail more visible).
    """
    def detail(image: np.ndarray) -> np.ndarray:
        luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0  # float64: variances of
        return luma - cv2.GaussianBlur(luma, (0, 0), sigma)                          # fine detail are tiny

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)

    d_in, d_out = detail(image_in), detail(image_out)
    m_in, m_out = box(d_in), box(d_out)
    var_in = np.maximum(box(d_in * d_in) - m_in * m_in, 0.0)
    var_out = np.maximum(box(d_out * d_out) - m_out * m_out, 0.0)
    cov = box(d_in * d_out) - m_in * m_out
    keep = var_in >= max(np.quantile(var_in, 1.0 - textured), (1.0 / 255.0) ** 2)
    if not keep.any():
        return {"retention": 1.0, "gain": 1.0}
    r2 = np.clip(cov[keep] ** 2 / (var_in[keep] * var_out[keep] + 1e-20), 0.0, 1.0)
    weight = var_in[keep]
    return {"retention": float((r2 * weight).sum() / weight.sum()),
            "gain": float(np.median(np.sqrt(var_out[keep] / var_in[keep])))}


def crushed_shadows(image_in: np.ndarray, image_out: np.ndarray, level: int = 4) -> float:
    """Share of the pixels the output takes to black (luma at most ``level`` of 255) that the input had above it:
    shadow detail lost. The haze model's inverse :math:`(I - A)/t + A` pushes dark near objects below zero; what
    is clipped there no longer flickers, nor shows anything (uint8 RGB, same size)."""
    def luma(image: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)

    return float(((luma(image_out) <= level) & (luma(image_in) > level)).mean())


def stretch_curve(frames: Sequence[np.ndarray], gains: Sequence[float] = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0),
                  every: int = 10, flow: list[tuple[np.ndarray, np.ndarray]] | None = None
                  ) -> list[tuple[float, float]]:
    """``(FADE, warping error)`` of a clip stretched by each of ``gains`` about its mean colour, the same transform
    for every frame: how much a perfectly steady transform flickers for each amount of fog it removes. The
    warping error of any contrast gain grows with its square (the source's noise and the flow's residuals are
    amplified with the picture), so a method's flicker means something only against this curve."""
    mean = np.mean([f.reshape(-1, 3).mean(0) for f in frames], axis=0)
    flow = flow if flow is not None else video_flow(frames)
    curve = []
    for gain in gains:
        out = [np.clip(mean + gain * (f.astype(np.float32) - mean) + 0.5, 0, 255).astype(np.uint8) for f in frames]
        curve.append((video_fade(out, every), warping_error(frames, out, flow=flow)))
    return curve


def flicker_against_stretch(fade: float, warp: float, curve: Sequence[tuple[float, float]]) -> float | None:
    """A method's warping error over that of the steady stretch leaving as much fog (log-interpolated along
    ``stretch_curve``): below 1, it removes fog with less flicker than contrast alone brings; None outside the
    curve's range of FADE."""
    fades, warps = zip(*sorted(curve))
    if not fades[0] <= fade <= fades[-1]:
        return None
    return float(warp / np.exp(np.interp(fade, fades, np.log(np.maximum(warps, 1e-12)))))

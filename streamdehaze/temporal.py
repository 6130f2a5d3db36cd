"""Temporal smoothing against flicker: a motion-compensated moving average of the guided-upsampling coefficients.

Per-frame dehazing flickers: the estimated airlight and haze density wobble from frame to frame although the
fog does not (a headlight entering the frame drags the airlight estimate with it). The smoothing acts on the
low-resolution coefficients ``(a, b)`` of ``out = a * in + b`` (for ``dcp``, 1/t and A(1 - 1/t): transmission
and airlight), never on pixels, so it cannot smear detail. ``b`` is averaged relative to the frame's mean
brightness, so a global exposure change passes through as it would frame by frame where the model's gains stay
as they were; where the model answers it with other gains, those follow at the average's pace (an exposure jump
up by a third, with the shipped model: within 2 levels in 6 frames).

The average follows the camera: the previous frame's state is first warped onto this frame by the optical flow
between the two low-resolution lumas (OpenCV's DIS, about a millisecond at the engine's inference size), so a
panning, zooming or driving camera is smoothed as a fixed one is; without it the motion test below switched the
smoothing off wherever the camera moved. The flow runs on the host, so on the CPU only. On a GPU, where a copy
back to the host would stall the device's pipeline, W is a smooth field of the shifts of 3x4 tiles, each found on
the device by phase correlation (``phase_shifts``): it follows pans, tilts, zooms and a driving camera's view as
the flow does, and where it explains the picture no better than no motion (an object crossing a fixed camera),
the state stays in place.

With S = L / mean(L) - 1 the gain-free structure of the luma L and ``W`` the warp:

    m = local mean of |S_t - W(S_(t-1))|,   w = strength * exp(-(m / motion_scale)^2)
    a_t <- w W(a_(t-1)) + (1 - w) a_t,   b_t / mean(L_t) <- likewise
    reset when mean|S_t - W(S_(t-1))| > 0.5 (mean|S_t| + mean|S_(t-1)|): the structure is unrelated (a scene cut)

Where the flow does not explain the picture (objects moving against it, newly uncovered ground: next to a jump in
the flow), w falls to zero: nothing ghosts. A new frame size also resets. Where the background did not move (a
fixed camera, cars passing), W is the identity, and after 8 such frames the flow is looked for only every 8th
frame, so a fixed camera costs about what ``static`` does. A still camera's coefficients change only with the fog
and the camera's noise, so there (and always with ``static``) the average runs ``STILL_LONGER`` times longer:
strength s becomes 1 - (1 - s) / 4, 0.95 by default.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import torch

from kanet import transform

from .defaults import STILL_LONGER, TEMPORAL_MODES, TEMPORAL_STRENGTH
from .errors import UsageError
from .filters import box_filter


MIN_FLOW_SIDE = 32  # below it the frames are not moved (OpenCV's DIS crashes on some smaller ones)
NEAR = np.ones((5, 5), np.uint8)  # how far from a motion boundary the past is not trusted
STILL_FLOW = 0.05  # px at the inference size: a median flow below it is a camera that does not move
STILL_FRAMES, PROBE_EVERY = 8, 8  # after that many still frames, look for motion only every 8th frame
TILES = (3, 4)  # rows, columns of the shifts that follow the camera on a GPU


def check_mode(mode: str) -> None:
    """``UsageError`` unless ``mode`` is a ``--temporal`` mode."""
    if mode not in TEMPORAL_MODES:
        raise UsageError(f"unknown temporal mode {mode!r}; choose {', '.join(TEMPORAL_MODES)}")


def smoother(mode: str, strength: float = TEMPORAL_STRENGTH) -> "TemporalSmoother | None":
    """One stream's smoother for a ``--temporal`` mode: none for ``off``; ``static`` never looks for the camera's
    motion (for cameras known not to move; ``ema`` finds that out itself, at some cost in its first frames)."""
    check_mode(mode)
    return None if mode == "off" else TemporalSmoother(strength, follow=mode == "ema")


class TemporalSmoother:
    """Stateful: feed frames in display order, one stream per instance. ``follow`` moves the state along the
    camera's motion (its optical flow on the CPU, the shifts of its tiles on a GPU)."""

    def __init__(self, strength: float = TEMPORAL_STRENGTH, motion_scale: float = 0.03, follow: bool = True,
                 *, device_motion: bool = False) -> None:
        """``device_motion`` follows the camera as on a GPU (``_motion_field``) even for CPU tensors: for tests and
        comparisons."""
        if not 0.0 <= strength < 1.0:
            raise ValueError("temporal strength must be in [0, 1)")
        self.strength, self.motion_scale, self.follow = strength, motion_scale, follow
        self.device_motion = device_motion
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # one per stream: it has state
        self.reset()

    def reset(self) -> None:
        self._structure: torch.Tensor | None = None
        self._a: torch.Tensor | None = None
        self._b: torch.Tensor | None = None  # relative to the frame's mean luma
        self._luma8: np.ndarray | None = None  # the previous frame's luma, for the flow
        self._luma: torch.Tensor | None = None  # the same on the device, for its motion there
        self._grid: torch.Tensor | None = None  # each pixel's sampling position, for the device's warp
        self._pixels: np.ndarray | None = None  # each pixel's (x, y), for the warp
        self._still = 0  # consecutive frames in which the camera did not move
        self._skip = 0  # frames left before the next look for motion

    def __call__(self, small: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``small`` [B,3,h,w] model input, gains ``a`` [B,1|2,h,w], offsets ``b`` [B,3,h,w] -> smoothed (a, b);
        B frames in order."""
        luma = transform.luma(small)
        level = luma.mean((-2, -1), keepdim=True).clamp(min=1e-3)
        structure = luma / level - 1.0
        # The flow runs on the host, so only for CPU tensors: on a GPU, copying the lumas back would stall the
        # batches queued behind this one (tests/streamdehaze/test_no_sync.py): phase correlation stands in.
        on_host = self.follow and small.device.type == "cpu" and not self.device_motion
        lumas8 = luma.mul(255).round_().clamp_(0, 255).to(torch.uint8).numpy()[:, 0] if on_host else [None] * len(luma)
        out_a, out_b = [], []
        for i in range(small.shape[0]):
            ai, bi, si = a[i:i + 1], b[i:i + 1] / level[i:i + 1], structure[i:i + 1]
            if self._structure is not None and self._structure.shape == si.shape and self._a.shape == ai.shape:
                prev, prev_a, prev_b, tracked, still = self._warped(lumas8[i], luma[i:i + 1], si)
                change = (si - prev).abs()
                # The scene-cut test stays a tensor (w = 0 on a cut): a Python ``if`` on it would make the host
                # wait for the GPU on every frame and stall the batches queued behind this one.
                same_scene = change.mean() <= 0.5 * (si.abs().mean() + prev.abs().mean())
                strength = self.strength + (1.0 - self.strength) * (1.0 - 1.0 / STILL_LONGER) * still
                w = strength * torch.exp(-(box_filter(change, 1) / self.motion_scale) ** 2) * same_scene * tracked
                ai = torch.lerp(ai, prev_a, w)
                bi = torch.lerp(bi, prev_b, w)
            self._structure, self._a, self._b, self._luma8, self._luma = si, ai, bi, lumas8[i], luma[i:i + 1]
            out_a.append(ai)
            out_b.append(bi * level[i:i + 1])
        return torch.cat(out_a), torch.cat(out_b)

    def _warped(self, luma8: np.ndarray | None, luma: torch.Tensor, structure: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | float, torch.Tensor | float]:
        """The state (structure, a, b) of the previous frame, moved onto the frame whose luma is ``luma``
        ``[1,1,h,w]`` (on the host when ``luma8``, its 8-bit copy, is given; ``structure``: its structure), where
        that move can be trusted (1) or not (0), and whether the camera was still (1; with ``static``, by the
        user's word) or moved or cannot be told (0)."""
        unmoved = self._structure, self._a, self._b, 1.0
        if not self.follow:
            return *unmoved, 1.0
        if min(luma.shape[-2:]) < MIN_FLOW_SIDE:
            return *unmoved, 0.0
        if luma8 is None:
            return self._shifted(luma, structure)
        if self._luma8 is None:
            return *unmoved, 0.0
        if self._skip:  # a fixed camera (most surveillance): the flow costs more than the rest of the smoothing
            self._skip -= 1
            return *unmoved, 1.0
        flow = self._flow.calc(luma8, self._luma8, None)  # this frame -> previous, pixels
        if np.median(_squared_norm(flow[::4, ::4])) < STILL_FLOW ** 2:  # the background did not move
            self._still += 1
            if self._still >= STILL_FRAMES:
                self._skip = PROBE_EVERY - 1
            return *unmoved, 1.0
        self._still = 0
        h, w = luma8.shape
        state = torch.cat((self._structure, self._a, self._b), 1)
        sizes = (self._structure.shape[1], self._a.shape[1], self._b.shape[1])
        # Next to a motion boundary (an object moving against its background) the previous frame held something
        # else: uncovered ground there would take the object's coefficients, which on a smooth background the
        # structure test alone does not catch. The 3x3 Sobel is 8x the gradient: 16 is a change of 0.5 px per px.
        jump = _squared_norm(cv2.Sobel(flow, -1, 1, 0)) + _squared_norm(cv2.Sobel(flow, -1, 0, 1))
        tracked = torch.from_numpy((cv2.dilate(jump, NEAR) <= 16).astype(np.float32))[None, None]
        if self._pixels is None or self._pixels.shape[:2] != (h, w):
            self._pixels = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
        where = self._pixels + flow
        moved = torch.empty_like(state)
        for src, dst in zip(state[0].numpy(), moved[0].numpy()):
            cv2.remap(src, where, None, cv2.INTER_LINEAR, dst=dst, borderMode=cv2.BORDER_REPLICATE)
        return (*moved.split(sizes, 1), tracked, 0.0)

    def _shifted(self, luma: torch.Tensor, structure: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``_warped`` on a device: the state moved along the camera's motion (``_motion_field``), in tensor
        operations only, so nothing waits for the device. The field is the camera's motion only if it explains the
        whole picture better than no motion (not a car crossing a fixed camera's view), and then only where it
        does: each pixel takes whichever of the moved and the unmoved state matches the new frame's structure
        (the clock burnt into a panning camera's picture stays). Where the field is below ``STILL_FLOW``, nothing
        moves; what it brings in from outside the frame is not trusted."""
        h, w = luma.shape[-2:]
        field, still = self._motion_field(self._luma[:, 0], luma[:, 0])  # [1,2,h,w] pixels
        if self._grid is None or self._grid.shape[1:3] != (h, w) or self._grid.device != luma.device:
            identity = torch.eye(2, 3, device=luma.device)[None]
            self._grid = torch.nn.functional.affine_grid(identity, [1, 1, h, w], align_corners=False)
        scale = 2.0 / torch.stack((field.new_full((), w), field.new_full((), h)))
        grid = self._grid + field.permute(0, 2, 3, 1) * scale
        state = torch.cat((self._structure, self._a, self._b), 1)
        moved = torch.nn.functional.grid_sample(state, grid, mode="bilinear", padding_mode="border",
                                                align_corners=False)
        mismatch = box_filter(torch.cat((structure - moved[:, :1], structure - state[:, :1]), 1).abs(), 1)
        better = mismatch[:, :1] < mismatch[:, 1:]
        camera = mismatch[:, 0].mean() < mismatch[:, 1].mean()  # not an object moving in front of a fixed camera
        use = camera & (field.square().sum(1, keepdim=True) >= STILL_FLOW ** 2) & better
        inside = (grid.abs() <= 1.0).all(-1, keepdim=True).permute(0, 3, 1, 2)
        sizes = (self._structure.shape[1], self._a.shape[1], self._b.shape[1])
        return (*torch.where(use, moved, state).split(sizes, 1), (inside | ~use).float(), still)

    @staticmethod
    def _motion_field(previous: torch.Tensor, current: torch.Tensor, rows: int = TILES[0], cols: int = TILES[1]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each pixel of ``current`` was in ``previous`` (lumas ``[1,h,w]``), as a smooth field ``[1,2,h,w]``
        of the shifts of ``rows`` x ``cols`` tiles: a zoom, a turn or a dashcam's view is a translation in each
        tile, not across the frame. A tile too plain for a sure shift takes the whole frame's, if sure, else none.
        Also whether the camera was still (1, a tensor): the whole frame's shift is sure and under ``STILL_FLOW``
        (an object moving in one tile does not move the whole frame's)."""
        h, w = current.shape[-2:]
        th, tw = h // rows, w // cols
        frames = torch.cat((previous, current))
        tiles = frames[:, :rows * th, :cols * tw].reshape(2, rows, th, cols, tw).transpose(2, 3).reshape(2, -1, th, tw)
        shifts, sure = phase_shifts(tiles[0], tiles[1])
        whole, whole_sure = phase_shifts(previous, current)
        fallback = whole * whole_sure[:, None]
        shifts = torch.where(sure[:, None], shifts, fallback)
        grid = shifts.T.reshape(1, 2, rows, cols)
        still = (whole_sure & (whole.square().sum(1) < STILL_FLOW ** 2)).float()[0]
        return torch.nn.functional.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False), still


def phase_shifts(previous: torch.Tensor, current: torch.Tensor, sure_peak: float = 0.1
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The translation between each of ``N`` pairs of lumas ``[N,h,w]`` by phase correlation: ``(dx, dy)``
    ``[N,2]`` in pixels, where a pixel of ``current`` was in ``previous`` (``p + shift``), to a tenth of a pixel;
    and ``[N]`` whether the correlation peak is clear enough (``sure_peak`` of a perfect match) to trust it.
    Tensor operations only (no value comes back to the host), for devices where the optical flow of ``_warped``
    would stall the pipeline."""
    h, w = current.shape[-2:]
    window, shape, perfect = _phase_constants(h, w, current.device)
    a, b = ((x - x.mean((-2, -1), keepdim=True)) * window for x in (previous, current))
    cross = torch.fft.rfft2(a) * torch.fft.rfft2(b).conj()
    surface = torch.fft.irfft2(cross / (cross.abs() + 1e-12) * shape, s=(h, w)).flatten(1)
    peak = surface.argmax(1, keepdim=True)  # (indexed by tensors throughout: a Python index would be read back)
    y, x = peak // w, peak % w
    centre = surface.gather(1, peak)
    log = surface.clamp(min=1e-6 * centre.clamp(min=1e-12)).log()

    def at(dy: int, dx: int) -> torch.Tensor:
        return log.gather(1, (y + dy) % h * w + (x + dx) % w)

    offsets = []
    for (before, after), size, index in (((at(0, -1), at(0, 1)), w, x), ((at(-1, 0), at(1, 0)), h, y)):
        curve = before - 2 * at(0, 0) + after
        fraction = torch.where(curve < 0, 0.5 * (before - after) / curve.clamp(max=-1e-12), 0.0).clamp(-0.5, 0.5)
        whole = torch.where(index > size // 2, index - size, index)
        offsets.append(whole + fraction)
    return torch.cat(offsets, 1), centre[:, 0] >= sure_peak * perfect


@functools.lru_cache(maxsize=16)
def _phase_constants(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``phase_shifts``' Hann window ``[h,w]``, the shape of its spectrum ``[h,w//2+1]`` and the height of a
    perfect match's peak, made once per size and device (a stream's frames, and its tiles, share a size). The
    normalised cross-power spectrum (only the phase: the shift) is shaped so that the peak is a Gaussian of 1 px,
    whose log a parabola fits exactly: the fraction of a pixel comes out to a few hundredths instead of a sinc
    peak's tenths."""
    window = torch.outer(torch.hann_window(h, periodic=False, device=device),
                         torch.hann_window(w, periodic=False, device=device))
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    shape = torch.exp(-2 * math.pi ** 2 * (fx * fx + fy * fy))
    return window, shape, shape.sum() * 2 / (h * w)  # (the half spectrum counted twice: the whole one's mean)


def _squared_norm(flow: np.ndarray) -> np.ndarray:
    """|v|^2 of an [h,w,2] vector field (numpy's sum over a last axis of 2 is several times slower)."""
    return flow[..., 0] * flow[..., 0] + flow[..., 1] * flow[..., 1]

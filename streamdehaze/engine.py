"""The engine: turns batches of decoded frames into dehazed frames on one device.

Frames cross to the device as YUV planes (1.5 bytes a pixel for 4:2:0 instead of 12 for float RGB); colour
conversion both ways runs on the device, so the host never touches full-resolution RGB.

Video frames and photos take one path: the model sees the frame at the inference size and gives a per-pixel
colour transform (predicted by coefficient models, fitted to the output of the others), smoothed over time for
video, then applied to the full-resolution frame: to its YUV planes for video, to its RGB for photos and arrays.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from collections.abc import Callable, Sequence

import av
import numpy as np
import torch
from torch import nn

import kanet

from .colour import YUVFormat, rgb_to_yuv, yuv_to_rgb
from .errors import UsageError
from .filters import resize
from .frames import frame_from_planes, planes_of, yuv_format
from .guided import apply_planes, fit_gain_offset, plane_coefficients
from .models import PredictsCoefficients
from .temporal import TemporalSmoother
from .transfer import Lanes


def compile_model(model: nn.Module, device: torch.device) -> None:
    """``torch.compile`` the model in place: kernels fused for this device, built on the first call of each input
    shape (a minute or more for KA_Net), so it pays off on long videos. On CPU, inductor builds C++ and needs a
    compiler; without one that is a usage error now rather than a failure at the first frame."""
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++")):
        raise UsageError("--compile on CPU needs a C++ compiler (g++ or clang++; or set CXX)")
    model.compile()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available (use --device cpu or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise UsageError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


class Engine:
    """Runs ``model`` (RGB [B,3,H,W] in [0,1] -> same) on ``device`` under inference mode.

    ``infer_size``: frames whose short side exceeds it go through the model at that short side, and the result
    reaches full resolution through the model's colour transform (``kanet.transform``, ``guided.py``); ``None``
    runs the model at native resolution. ``"auto"`` takes the model's own ``infer_size`` hint; ``max_upscale``
    raises the inference size of large frames so the transform is never stretched more than that. ``temporal``
    smooths the transforms of consecutive video frames (``temporal.py``); it then runs the transform path even
    at native resolution.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "auto",
                 infer_size: int | str | None = "auto", guide_eps: float = 1e-4,
                 temporal: TemporalSmoother | None = None, compile: bool = False,
                 max_upscale: float | None = None) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        if compile:
            compile_model(self.model, self.device)
        self._predicts = isinstance(model, PredictsCoefficients)
        if infer_size == "auto":
            hint = getattr(model, "infer_size_for", None)
            infer_size = hint(self.device) if hint is not None else getattr(model, "infer_size", None)
        self.infer_size = infer_size
        self.max_upscale = max_upscale
        self.guide_eps = guide_eps
        self.temporal = temporal
        # On CUDA, batches overlap on copy and compute streams: up to ``depth`` more wait behind the oldest.
        self._lanes = Lanes(self.device) if self.device.type == "cuda" else None
        self.depth = 2 if self._lanes is not None else 0

    def infer_shape(self, height: int, width: int) -> tuple[int, int] | None:
        """The (h, w) the model runs at for a frame of this size, or None for native resolution."""
        n = self.infer_size
        if n is not None and self.max_upscale is not None:
            n = max(n, math.ceil(min(height, width) / self.max_upscale))
        if n is None or min(height, width) <= n:
            return None
        scale = n / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def coefficients(self, small: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's colour transform of RGB ``[B,3,h,w]``: gains ``[B,2|1,h,w]`` and offsets ``[B,3,h,w]``,
        predicted by coefficient models, fitted to the output of the others (``out ~= a * in + b`` per window)."""
        if self._predicts:
            return self.model.coefficients(small)
        return fit_gain_offset(small, self.model(small), radius=max(1, min(small.shape[-2:]) // 128),
                               eps=self.guide_eps)

    @torch.inference_mode()
    def process_rgb(self, rgb: torch.Tensor) -> torch.Tensor:
        """Dehaze RGB ``[B,3,H,W]`` float in [0,1] (any device); the result is on the engine's device.

        Frames above ``infer_size`` go through the model small, and its transform is applied at full size, as
        for video; with ``temporal`` set, consecutive frames are one stream, smoothed as video is.
        """
        rgb = rgb.to(self.device, torch.float32)
        size = self.infer_shape(*rgb.shape[-2:])
        if size is None and self.temporal is None:
            return self.model(rgb)
        small = resize(rgb, size) if size is not None else rgb
        gain, offset = self.coefficients(small)
        if self.temporal is not None:
            gain, offset = self.temporal(small, gain, offset)
        return kanet.transform.apply(rgb, gain, offset).clamp_(0.0, 1.0)

    @torch.inference_mode()
    def process_array(self, rgb: np.ndarray) -> np.ndarray:
        """Dehaze RGB images ``[B,H,W,3]`` uint8 or uint16 on the host; returns the same shape and dtype."""
        peak = float(np.iinfo(rgb.dtype).max)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(0, 3, 1, 2).float().div_(peak)
        y = self.process_rgb(x).mul_(peak).round_().clamp_(0, peak)
        return y.permute(0, 2, 3, 1).cpu().numpy().astype(rgb.dtype)

    @torch.inference_mode()
    def process_frames(self, frames: Sequence[av.VideoFrame], out_format: YUVFormat,
                       out_pix_fmt: str) -> list[av.VideoFrame]:
        """Dehaze planar YUV frames; returns new frames in ``out_pix_fmt`` carrying the inputs' pts and time base."""
        return self.submit(frames, out_format, out_pix_fmt).frames()

    @torch.inference_mode()
    def submit(self, frames: Sequence[av.VideoFrame], out_format: YUVFormat, out_pix_fmt: str) -> "Batch":
        """Start dehazing ``frames``; ``Batch.frames()`` returns the results. On CUDA this only enqueues the work
        (see ``transfer.py``), so up to ``self.depth`` more batches can be submitted before waiting for this
        one; elsewhere the work is done on return. Consecutive frames of one size and format go through the
        model together."""
        batch = Batch(out_pix_fmt)
        for (*_, fmt), group in itertools.groupby(frames, key=lambda f: (f.width, f.height, f.format.name,
                                                                           yuv_format(f))):
            group = list(group)
            planes = list(zip(*(planes_of(f) for f in group)))

            def dehaze(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, fmt: YUVFormat = fmt):
                return self._dehaze_planes(y, u, v, fmt, out_format)

            if self._lanes is None:
                y, u, v = (torch.from_numpy(np.stack(p)).to(self.device) for p in planes)
                out = [p.cpu() for p in dehaze(y, u, v)]
                batch.add(group, lambda consume, out=out: consume(*out), lambda: True)
            else:
                host = [self._lanes.pool.take((len(group), *p[0].shape), _TORCH_DTYPE[p[0].dtype]) for p in planes]
                for buffer, plane in zip(host, planes):
                    np.stack(plane, out=buffer.numpy())  # straight into page-locked memory
                transfer = self._lanes.run(host, dehaze)
                batch.add(group, transfer.collect, transfer.ready)
        return batch

    def _dehaze_planes(self, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, fmt: YUVFormat,
                       out_format: YUVFormat) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = self.infer_shape(*y.shape[-2:])
        if size is None and self.temporal is None:
            return rgb_to_yuv(self.model(yuv_to_rgb(y, u, v, fmt)), out_format)
        small = yuv_to_rgb(y, u, v, fmt, size=size or tuple(y.shape[-2:]))
        gain, offset = self.coefficients(small)
        if self.temporal is not None:
            gain, offset = self.temporal(small, gain, offset)
        return apply_planes((y, u, v), plane_coefficients(gain, offset, fmt, out_format), out_format)


_TORCH_DTYPE = {np.dtype(np.uint8): torch.uint8, np.dtype(np.int16): torch.int16}


class Batch:
    """Frames handed to ``Engine.submit``; ``frames()`` waits for their dehazed versions, in order."""

    def __init__(self, pix_fmt: str) -> None:
        self.pix_fmt = pix_fmt
        self._parts: list[tuple[list[av.VideoFrame], Callable, Callable[[], bool]]] = []

    def add(self, sources: list[av.VideoFrame], collect: Callable, ready: Callable[[], bool]) -> None:
        """``collect(consume)`` calls ``consume(y, u, v)`` with the group's output planes on the host;
        ``ready()`` says, without waiting, whether they are there."""
        self._parts.append((sources, collect, ready))

    def ready(self) -> bool:
        """Whether ``frames()`` would return without waiting."""
        return all(ready() for *_, ready in self._parts)

    def __len__(self) -> int:
        return sum(len(sources) for sources, *_ in self._parts)

    def frames(self) -> list[av.VideoFrame]:
        out: list[av.VideoFrame] = []
        for sources, collect, _ in self._parts:
            out += collect(lambda y, u, v, sources=sources: self._build(sources, y, u, v))
        return out

    def _build(self, sources: list[av.VideoFrame], y: torch.Tensor, u: torch.Tensor,
               v: torch.Tensor) -> list[av.VideoFrame]:
        planes = [p.numpy() for p in (y, u, v)]
        frames = []
        for i, src in enumerate(sources):
            frame = frame_from_planes(planes[0][i], planes[1][i], planes[2][i], self.pix_fmt)  # copies
            frame.pts, frame.time_base = src.pts, src.time_base
            frames.append(frame)
        return frames

"""The engine: turns batches of decoded frames into dehazed frames on one device.

Frames cross to the device as YUV planes (1.5 bytes a pixel for 4:2:0 instead of 12 for float RGB); colour
conversion both ways runs on the device, so the host never touches full-resolution RGB.

Video frames and photos take one path: the model sees the frame at the inference size and gives a per-pixel
colour transform (predicted by coefficient models, fitted to the output of the others), smoothed over time for
video, then applied to the full-resolution frame: to its YUV planes for video, to its RGB for photos and arrays.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av
import numpy as np
import torch
from torch import nn

import kanet

from . import blocks
from .colour import YUVFormat, rgb_to_yuv, yuv_to_rgb
from .errors import UsageError
from .filters import resize
from .frames import frame_from_planes, planes_of, yuv_format
from .guided import (apply_planes, damp_flat_regions, fit_gain_offset, grey_stays_grey, keep_shadows,
                     plane_coefficients, smooth_transform)
from .models import PredictsCoefficients
from .shared_calls import SharedCalls
from .temporal import TemporalSmoother
from .transfer import Lanes


def compile_model(model: nn.Module, device: torch.device) -> None:
    """``torch.compile`` the model in place: kernels fused for this device, built on the first call of each input
    shape (a minute or more for KA_Net), so it pays off on long videos. Inductor builds C++ on CPU and Triton
    kernels on CUDA, whose launchers are compiled C: without a compiler (or Triton) that is a usage error now rather
    than a failure at the first frame."""
    if device.type == "cpu" and not _which(os.environ.get("CXX"), "g++", "clang++"):
        raise UsageError("--compile on CPU needs a C++ compiler (g++ or clang++; or set CXX)")
    if device.type == "cuda":
        if not _which(os.environ.get("CC"), "cc", "gcc", "clang"):
            raise UsageError("--compile on CUDA needs a C compiler for Triton's kernel launchers (gcc or clang; "
                             "or set CC)")
        if importlib.util.find_spec("triton") is None:
            raise UsageError("--compile on CUDA needs Triton (pip install triton)")
    model.compile()


def _which(*names: str | None) -> bool:
    return any(shutil.which(name) for name in names if name)


def check_strength(strength: float) -> float:
    """``strength`` if it is from 0 to 1, else a ``UsageError`` saying so."""
    if not 0.0 <= strength <= 1.0:
        raise UsageError(f"strength must be from 0 to 1, not {strength}")
    return strength


def check_noise_floor(levels: float | str) -> float | str:
    """``levels`` if it is ``"auto"`` or from 0 to 255, else a ``UsageError`` saying so."""
    if levels == "auto":
        return levels
    if isinstance(levels, str) or not 0.0 <= levels <= 255.0:
        raise UsageError(f"noise floor must be from 0 to 255 levels, not {levels}")
    return levels


def resolve_device(name: str, option: str = "--device ") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a usage error. ``option`` is how messages
    name the setting: ``--device `` on the command line, ``device=`` for the GStreamer element's property."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"{option}{name}: no CUDA GPU is available (use {option}cpu or auto)")
    if name.partition(":")[0] not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return torch.device("cpu")  # (cpu:0, as torch.device("cpu", 0) names itself: the one CPU device)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"{option}{name}: there are {torch.cuda.device_count()} CUDA GPUs here (cuda:0 .. "
                         f"cuda:{torch.cuda.device_count() - 1})")
    return device


@dataclass(frozen=True)
class Correction:
    """How much of the model's correction one stream gets (see ``Engine``): ``strength`` from 0 to 1, and
    ``noise_floor`` in 8-bit levels (0: off) or ``"auto"``; checked when made."""

    strength: float = 1.0
    noise_floor: float | str = "auto"

    def __post_init__(self) -> None:
        check_strength(self.strength)
        check_noise_floor(self.noise_floor)


class Engine:
    """Runs ``model`` (RGB [B,3,H,W] in [0,1] -> same) on ``device`` under inference mode.

    ``infer_size``: frames whose short side exceeds it go through the model at that short side, and the result
    reaches full resolution through the model's colour transform (``kanet.transform``, ``guided.py``); ``None``
    runs the model at native resolution. ``"auto"`` takes the model's own ``infer_size`` hint; ``max_upscale``
    raises the inference size of large frames so the transform is never stretched more than that (``"auto"``: the
    model's own ``max_upscale`` with the auto size, else none).

    ``strength`` is how much of the model's correction is applied: 0 gives the input back, 1 (the default) all of
    it; in between, the output is that blend of input and full output (the transform's gains and offsets are
    blended toward the identity), which lowers fog removal and the noise it amplifies together.

    ``noise_floor`` (8-bit levels; 0 is off): where the frame's luma varies by no more than that, the output is the
    input's own fine detail plus the correction's local mean (``guided.damp_flat_regions``): a noisy or blocky
    camera's flat grey sky is lifted out of the fog without its blocks being amplified, at the price of faint detail
    there. ``"auto"`` (the default) sets each frame's floor from its compression blocks (``blocks.py``): up to 0.5
    level for a blocky frame, none for a clean one, whose faint distant detail is as flat as a compressed sky.

    An engine holds no state of any stream: several streams share it (``submit_many``), each passing its own
    temporal smoother (``temporal.py``), whose use runs the transform path even at native resolution (coefficient
    models always run it), and, where it differs from the engine's, its own ``Correction`` (strength and noise
    floor: a slider per camera). Streams calling it from several threads at once share its model calls
    (``SharedCalls``).
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "auto",
                 infer_size: int | str | None = "auto", guide_eps: float = 1e-4, compile: bool = False,
                 max_upscale: float | str | None = "auto", strength: float = 1.0,
                 noise_floor: float | str = "auto") -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        if compile:
            compile_model(self.model, self.device)
        self._predicts = isinstance(model, PredictsCoefficients)
        if max_upscale == "auto":
            max_upscale = getattr(model, "max_upscale", None) if infer_size == "auto" else None
        if infer_size == "auto":
            hint = getattr(model, "infer_size_for", None)
            infer_size = hint(self.device) if hint is not None else getattr(model, "infer_size", None)
        self.infer_size = infer_size
        self.max_upscale = max_upscale
        self.guide_eps = guide_eps
        self.strength = check_strength(strength)  # (a stream's ``Correction`` goes before these two)
        self.noise_floor = check_noise_floor(noise_floor)
        # On CUDA, batches overlap on copy and compute streams: up to ``depth`` more wait behind the oldest.
        self._lanes = Lanes(self.device) if self.device.type == "cuda" else None
        self.depth = 2 if self._lanes is not None else 0
        self._shared = SharedCalls()

    def infer_shape(self, height: int, width: int) -> tuple[int, int] | None:
        """The (h, w) the model runs at for a frame of this size, or None for native resolution."""
        n = self.infer_size
        if n is not None and self.max_upscale is not None:
            n = max(n, math.ceil(min(height, width) / self.max_upscale))
        if n is None or min(height, width) <= n:
            return None
        scale = n / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    @property
    def correction(self) -> Correction:
        """What a stream that brings no ``Correction`` of its own gets: the engine's ``strength`` and
        ``noise_floor``."""
        return Correction(self.strength, self.noise_floor)

    def coefficients(self, small: torch.Tensor, floors: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The colour transform of RGB ``[B,3,h,w]`` that the engine smooths over time: the model's
        (``transform``, its calls shared with other threads'), under each frame's noise floor (8-bit levels ``[B]``,
        from ``Engine.floors``; None: none). ``at_strength`` then gives what is applied."""
        return self.adjust(small, *self._shared(self.transform, small), floors)

    def transform(self, small: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's colour transform of RGB ``[B,3,h,w]``: gains ``[B,2|1,h,w]`` and offsets ``[B,3,h,w]``,
        predicted by coefficient models, fitted to the output of the others (``out ~= a * in + b`` per window)."""
        if self._predicts:
            return self.model.coefficients(small)
        return fit_gain_offset(small, self.model(small), radius=max(1, min(small.shape[-2:]) // 128),
                               eps=self.guide_eps)

    def adjust(self, small: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor,
               floors: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A transform of ``small`` under the frames' noise floors (levels ``[B]`` or None). A network's transform
        is first rid of the grid of its patches (``smooth_transform``: dcp's is fitted smooth), and last takes no
        shadow to black (``keep_shadows``: dcp's own floor is its ``t_min``)."""
        if self._predicts:
            gain, offset = smooth_transform(small, gain, offset)
        if floors is not None:
            gain, offset = damp_flat_regions(small, gain, offset, floors / 255)
        if self._predicts:
            offset = keep_shadows(small, gain, offset)
        return gain, offset

    @staticmethod
    def smoothed(small: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor,
                 temporal: TemporalSmoother | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The transform of ``small`` smoothed over time by ``temporal`` (None: as it is), a grey frame's offsets made
        grey last: before the smoothing, its memory of colour frames tinted a camera's first frames in night vision
        (six to twelve of them)."""
        if temporal is not None:
            gain, offset = temporal(small, gain, offset)
        return gain, grey_stays_grey(small, offset)

    @staticmethod
    def at_strength(gain: torch.Tensor, offset: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The transform at ``strength``: applied after temporal smoothing (which is linear in it), so that a new
        strength (a slider) shows on the next frame, not over the smoother's memory."""
        if strength == 1.0:
            return gain, offset
        return 1.0 + (gain - 1.0) * strength, offset * strength

    @staticmethod
    def floors(frames: torch.Tensor, levels: Callable[[torch.Tensor], torch.Tensor],
               noise_floor: float | str) -> torch.Tensor | None:
        """Each frame's noise floor in 8-bit levels ``[B]`` (``noise_floor``: levels, or ``"auto"``), or None when
        the floor is off. ``frames``: the full-resolution frames ``[B,...,H,W]``; ``levels`` turns some of their
        rows or columns into luma in 8-bit levels ``[B,n,W]`` (only those ``blocks.lines`` reads are converted)."""
        if noise_floor == "auto":
            return blocks.noise_floor(*(levels(part) for part in blocks.lines(frames)))
        if noise_floor > 0:
            return torch.full((frames.shape[0],), float(noise_floor), device=frames.device)
        return None

    def _native(self, size: tuple[int, int] | None, temporal: TemporalSmoother | None, strength: float) -> bool:
        """Whether a frame goes through the model whole, for its own output: at native resolution (``size``
        None), with no temporal smoothing, for a model that gives images (coefficient models always give their
        transform, so ``noise_floor`` holds everywhere). At strength 0 the transform, the identity, gives the input
        back exactly, where the model's own RGB output would pass the chroma through an RGB round trip."""
        return size is None and temporal is None and not self._predicts and strength > 0

    @staticmethod
    def _blend(rgb: torch.Tensor, out: torch.Tensor, strength: float) -> torch.Tensor:
        """The model's own output ``out`` for ``rgb``, at ``strength``."""
        return out if strength == 1.0 else torch.lerp(rgb, out, strength)

    @torch.inference_mode()
    def process_rgb(self, rgb: torch.Tensor, temporal: TemporalSmoother | None = None) -> torch.Tensor:
        """Dehaze RGB ``[B,3,H,W]`` float in [0,1] (any device); the result is on the engine's device.

        Frames above ``infer_size`` go through the model small, and its transform is applied at full size, as
        for video; with a ``temporal`` smoother (the caller's: its state is one stream's), consecutive frames are
        one stream, smoothed as video is. Calls from several threads at once share model calls (``SharedCalls``).
        """
        rgb = rgb.to(self.device, torch.float32)
        size = self.infer_shape(*rgb.shape[-2:])
        correction = self.correction
        if self._native(size, temporal, correction.strength):
            return self._blend(rgb, self._shared(self.model, rgb), correction.strength)
        small = resize(rgb, size) if size is not None else rgb
        floors = self.floors(rgb, lambda part: kanet.transform.luma(part)[:, 0] * 255, correction.noise_floor)
        gain, offset = self.smoothed(small, *self.coefficients(small, floors), temporal)
        return kanet.transform.apply(rgb, *self.at_strength(gain, offset, correction.strength)).clamp_(0.0, 1.0)

    @torch.inference_mode()
    def process_array(self, rgb: np.ndarray, temporal: TemporalSmoother | None = None) -> np.ndarray:
        """Dehaze RGB images ``[B,H,W,3]`` on the host, uint8 or uint16, or float in [0, 1]; returns the same shape
        and dtype."""
        integer = rgb.dtype.kind in "ui"
        peak = float(np.iinfo(rgb.dtype).max) if integer else 1.0
        # A copy where the tensor would share the caller's memory (float32, which .float() keeps) or torch would warn
        # of it (a read-only array, such as a memory-mapped file).
        array = np.ascontiguousarray(rgb) if integer and rgb.flags.writeable else np.array(rgb, order="C")
        x = torch.from_numpy(array).to(self.device).permute(0, 3, 1, 2).float().div_(peak)
        y = self.process_rgb(x, temporal)
        if integer:
            y = y.mul_(peak).round_().clamp_(0, peak)
        return y.permute(0, 2, 3, 1).cpu().numpy().astype(rgb.dtype)

    def process_frames(self, frames: Sequence[av.VideoFrame], out_format: YUVFormat, out_pix_fmt: str,
                       temporal: TemporalSmoother | None = None,
                       correction: Correction | None = None) -> list[av.VideoFrame]:
        """Dehaze planar YUV frames; returns new frames in ``out_pix_fmt`` carrying the inputs' pts and time base."""
        return self.submit(frames, out_format, out_pix_fmt, temporal, correction).frames()

    def submit(self, frames: Sequence[av.VideoFrame], out_format: YUVFormat, out_pix_fmt: str,
               temporal: TemporalSmoother | None = None, correction: Correction | None = None) -> "Batch":
        """``submit_many`` for the frames of one stream."""
        return self.submit_many([Request(list(frames), out_format, out_pix_fmt, temporal, correction)])[0]

    @torch.inference_mode()
    def submit_many(self, requests: Sequence[Request]) -> list["Batch"]:
        """Start dehazing the frames of several streams, one ``Request`` each; ``Batch.frames()`` of each returns
        its results. Frames of every request that share an inference shape go through the model together. On CUDA
        this only enqueues the work (see ``transfer.py``), so up to ``self.depth`` more calls can be submitted
        before waiting for this one. On CPU the shared work (model, temporal smoothing) is done on return, and each
        batch's ``frames()`` does its stream's full-resolution part."""
        groups: list[_Group] = []
        for index, request in enumerate(requests):
            for (*_, fmt), frames in itertools.groupby(
                    request.frames, key=lambda f: (f.width, f.height, f.format.name, yuv_format(f))):
                groups.append(_Group(index, list(frames), fmt, request))
        planes = [list(zip(*(planes_of(f) for f in g.frames))) for g in groups]  # per group: Y, U, V frame lists
        if self._lanes is None:
            inputs = [torch.from_numpy(np.stack(p)).to(self.device) for group in planes for p in group]
            shared = self._model_groups(groups, inputs)
            work = [[(g, inputs[3 * i: 3 * i + 3], shared[i]) for i, g in enumerate(groups) if g.request_index == r]
                    for r in range(len(requests))]
            return [Batch(len(r.frames), lambda w=w: self._frames_of(w)) for r, w in zip(requests, work)]
        host = [self._lanes.pool.take((len(p), *p[0].shape), _TORCH_DTYPE[p[0].dtype])
                for group in planes for p in group]
        for buffer, p in zip(host, (p for group in planes for p in group)):
            np.stack(p, out=buffer.numpy())  # straight into page-locked memory
        transfer = self._lanes.run(host, lambda *inputs: self._dehaze_groups(groups, list(inputs)))
        call = _Call(groups, len(requests), transfer.collect)
        return [Batch(len(r.frames), lambda i=i: call.results()[i], transfer.ready, call.results)
                for i, r in enumerate(requests)]

    def _dehaze_groups(self, groups: list[_Group], planes: list[torch.Tensor]) -> list[torch.Tensor]:
        """The per-batch device work: the Y, U, V planes of each group (three tensors each, in order) -> its output
        planes. Nothing here copies from the host or waits for the device (``tests/streamdehaze/test_no_sync.py``)."""
        shared = self._model_groups(groups, planes)
        return self._finish_groups([(g, planes[3 * i: 3 * i + 3], shared[i]) for i, g in enumerate(groups)])

    def _model_groups(self, groups: list[_Group], planes: list[torch.Tensor]) -> list:
        """The shared part of a call, done once for all its streams, in their order: model inputs of one shape
        from any group (any stream) go through one model call; then each stream's temporal smoothing and
        strength. Per group: ``(True, rgb)``, the model's own full-resolution output, or ``(False, (gain,
        offset))``, its transform."""
        inputs, kinds, floors, strengths = [], [], [], []
        for i, group in enumerate(groups):
            y, u, v = planes[3 * i: 3 * i + 3]
            correction = group.request.correction or self.correction
            size = self.infer_shape(*y.shape[-2:])
            direct = self._native(size, group.request.temporal, correction.strength)  # the model's own output
            inputs.append(yuv_to_rgb(y, u, v, group.fmt) if direct else
                          yuv_to_rgb(y, u, v, group.fmt, size=size or tuple(y.shape[-2:])))
            scale = 255 / ((1 << group.fmt.bits) - 1)
            floors.append(None if direct else self.floors(y, lambda part: part if scale == 1 else part * scale,
                                                          correction.noise_floor))
            # (one model call per shape; streams with the noise floor off and on, which differ there, in two)
            kinds.append((direct, *inputs[-1].shape[-2:], floors[-1] is None))
            strengths.append(correction.strength)
        results: list = [None] * len(groups)
        for kind in dict.fromkeys(kinds):  # each shape once, in order of first appearance
            members = [i for i, k in enumerate(kinds) if k == kind]
            x = torch.cat([inputs[i] for i in members]) if len(members) > 1 else inputs[members[0]]
            sizes = [inputs[i].shape[0] for i in members]
            if kind[0]:
                for i, out in zip(members, self._shared(self.model, x).split(sizes)):
                    results[i] = (True, self._blend(inputs[i], out, strengths[i]))
            else:
                gains, offsets = self.coefficients(x, None if kind[-1] else torch.cat([floors[i] for i in members]))
                for i, gain, offset in zip(members, gains.split(sizes), offsets.split(sizes)):
                    gain, offset = self.smoothed(inputs[i], gain, offset, groups[i].request.temporal)
                    results[i] = (False, self.at_strength(gain, offset, strengths[i]))
        return results

    @torch.inference_mode()
    def _finish_groups(self, work: list[tuple[_Group, list[torch.Tensor], tuple]]) -> list[torch.Tensor]:
        """The per-stream, full-resolution part: each group's transform applied to its planes (or the model's RGB
        converted), giving its output planes. On CPU each stream's writer thread does its own (``Batch.frames``)."""
        outputs: list[torch.Tensor] = []
        for group, planes, (direct, result) in work:
            out_format = group.request.out_format
            if direct:
                outputs += rgb_to_yuv(result, out_format)
            else:
                outputs += apply_planes(tuple(planes), plane_coefficients(*result, group.fmt, out_format), out_format)
        return outputs

    def _frames_of(self, work: list[tuple[_Group, list[torch.Tensor], tuple]]) -> list[av.VideoFrame]:
        """One request's output frames, when the engine works on return (``Batch.frames``)."""
        planes = [p.cpu() for p in self._finish_groups(work)]  # (a no-op on the CPU)
        return [f for i, (group, *_) in enumerate(work) for f in _frames(group, planes[3 * i: 3 * i + 3])]


@dataclass
class Request:
    """One stream's frames for an engine call: its output layout, its temporal smoother (its own state), and its
    ``Correction`` (None: the engine's)."""

    frames: list[av.VideoFrame]
    out_format: YUVFormat
    pix_fmt: str
    temporal: TemporalSmoother | None = None
    correction: Correction | None = None


@dataclass
class _Group:
    """Consecutive frames of one request with one size and format (one tensor per plane)."""

    request_index: int
    frames: list[av.VideoFrame]
    fmt: YUVFormat
    request: Request


_TORCH_DTYPE = {np.dtype(np.uint8): torch.uint8, np.dtype(np.int16): torch.int16}


class _Call:
    """One ``submit_many`` on CUDA: every request's frames, collected from the device once, when first asked for."""

    def __init__(self, groups: list[_Group], requests: int, collect: Callable) -> None:
        """``collect(consume)`` calls ``consume(*planes)`` with every group's output planes on the host (Y, U, V
        per group, in order)."""
        self._groups, self._collect, self._requests = groups, collect, requests
        self._results: list[list[av.VideoFrame]] | None = None
        self._lock = threading.Lock()

    def results(self) -> list[list[av.VideoFrame]]:
        with self._lock:
            if self._results is None:
                self._results = self._collect(self._build)
            return self._results

    def _build(self, *planes: torch.Tensor) -> list[list[av.VideoFrame]]:
        out: list[list[av.VideoFrame]] = [[] for _ in range(self._requests)]
        for i, group in enumerate(self._groups):
            out[group.request_index] += _frames(group, planes[3 * i: 3 * i + 3])
        return out


def _frames(group: _Group, planes: Sequence[torch.Tensor]) -> list[av.VideoFrame]:
    """A group's output frames from its host planes, carrying the inputs' pts and time base."""
    y, u, v = (p.numpy() for p in planes)
    out = []
    for k, src in enumerate(group.frames):
        frame = frame_from_planes(y[k], u[k], v[k], group.request.pix_fmt)  # copies
        frame.pts = src.pts
        if src.time_base is not None:
            frame.time_base = src.time_base
        out.append(frame)
    return out


class Batch:
    """One request's frames of an engine call; ``frames()`` returns their dehazed versions, in order.

    On CUDA, ``wait()`` waits for the device (the engine's thread calls it, so no more calls are in flight than
    it allows) and ``frames()`` builds the frames. On CPU the shared work (the model, temporal smoothing) is done
    on submission, and ``frames()`` does this stream's full-resolution work: called from each stream's writer
    thread, it runs beside the engine's thread instead of queueing in it.
    """

    def __init__(self, size: int, make: Callable[[], list[av.VideoFrame]],
                 ready: Callable[[], bool] = lambda: True, wait: Callable[[], object] = lambda: None) -> None:
        self._size, self._make, self._ready, self._wait = size, make, ready, wait
        self._frames: list[av.VideoFrame] | None = None
        self._lock = threading.Lock()

    def ready(self) -> bool:
        """Whether ``wait()`` would return without waiting."""
        return self._ready()

    def wait(self) -> None:
        self._wait()

    def __len__(self) -> int:
        return self._size

    def frames(self) -> list[av.VideoFrame]:
        with self._lock:
            if self._frames is None:
                self._frames = self._make()
            return self._frames

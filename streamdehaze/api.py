"""The Python API: what the CLI calls, and what pipelines embed.

    from streamdehaze import Dehazer, dehaze_video
    dehaze_video("in.mp4", "out.mp4")                 # a whole file, audio copied, timestamps kept
    clear = Dehazer()(hazy_bgr_frame)                 # one frame (or a batch), same type back
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .engine import Engine
from .models import create_model
from .outputs import atomic_output, check_output
from .pipeline import RunResult, run_video
from .sinks import VideoFileSink
from .sources import VideoFileSource


class Dehazer:
    """Dehaze frames in memory.

    Call it with a numpy image ``[H,W,3]`` or batch ``[B,H,W,3]`` (uint8 or uint16; BGR as OpenCV gives it
    unless ``bgr=False``), or a torch tensor ``[3,H,W]``/``[B,3,H,W]`` (uint8, or float in [0,1]; RGB) on any
    device. The result has the input's type, shape, dtype and device.
    """

    def __init__(self, model: str = "dcp", *, weights: str | os.PathLike | None = None, device: str = "auto",
                 bgr: bool = True) -> None:
        self.engine = Engine(create_model(model, weights), device)
        self.bgr = bgr

    def __call__(self, frames: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if isinstance(frames, torch.Tensor):
            return self._tensor(frames)
        batch = frames[None] if frames.ndim == 3 else frames
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected an image [H,W,3] or a batch [B,H,W,3], got shape {frames.shape}")
        if self.bgr:
            batch = batch[..., ::-1]
        out = self.engine.process_array(batch)
        if self.bgr:
            out = np.ascontiguousarray(out[..., ::-1])
        return out[0] if frames.ndim == 3 else out

    def _tensor(self, frames: torch.Tensor) -> torch.Tensor:
        batch = frames.unsqueeze(0) if frames.dim() == 3 else frames
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a tensor [3,H,W] or [B,3,H,W], got shape {tuple(frames.shape)}")
        integer = not batch.is_floating_point()
        x = batch.float() / 255.0 if integer else batch
        y = self.engine.process_rgb(x)
        y = y.mul(255.0).round_().to(frames.dtype) if integer else y.to(frames.dtype)
        y = y.to(frames.device)
        return y[0] if frames.dim() == 3 else y


def dehaze_video(input: str | os.PathLike, output: str | os.PathLike, *, model: str = "dcp",
                 weights: str | os.PathLike | None = None, device: str = "auto", batch: int = 1,
                 codec: str = "libx264", crf: int = 18, preset: str = "veryfast", max_frames: int | None = None,
                 on_frames: Callable[[int], None] | None = None,
                 on_start: Callable[[VideoFileSource], None] | None = None) -> RunResult:
    """Dehaze a video file into ``output`` (written under a temporary name, renamed when complete).

    Every frame keeps its pts and time base; audio and subtitle streams are copied packet for packet.
    On Ctrl-C the frames done so far are kept and ``RunResult.interrupted`` is set.
    """
    src, dst = str(input), Path(output)
    with VideoFileSource(src, max_frames=max_frames) as source:
        check_output(dst, None if "://" in src else Path(src))
        engine = Engine(create_model(model, weights), device)
        if on_start is not None:
            on_start(source)
        with atomic_output(dst) as tmp:
            sink = VideoFileSink(tmp, source.info, codec=codec, crf=crf, preset=preset)
            return run_video(source, engine, sink, batch_size=batch, on_frames=on_frames)

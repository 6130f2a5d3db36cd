"""The Python API: what the CLI calls, and what pipelines embed.

    from streamdehaze import Dehazer, process, read_frames
    process("in.mp4", "out.mp4")                            # a file or a stream, audio copied, timestamps kept
    dehaze = Dehazer()                                      # frames in memory: numpy (BGR) or torch, any device
    for t, frame in read_frames("rtsp://cam/stream"): show(dehaze(frame))
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator

import av
import numpy as np
import torch

from .config import StreamConfig, check_callbacks, check_flags, checked_option
from .engine import Engine, resolve_device
from .defaults import TEMPORAL_STRENGTH
from .errors import UsageError
from .frames import to_image, upright
from .images import image_engine
from .job import FILE_BATCH, Job, Source, open_source
from .live import LiveOptions, Stopped, is_live
from .models import create_model
from .pipeline import RunResult, deferred_signals, drive
from .records import FrameRecord
from .stats import RunStats
from .temporal import TemporalSmoother, smoother

KEYWORD = "{}={}"  # how messages name a setting here: as the keyword argument it is (device=cuda), not --device

__all__ = ["FILE_BATCH", "Dehazer", "FrameRecord", "Source", "dehazed", "open_source", "process", "read_frames"]


class Dehazer:
    """Dehaze frames in memory: consecutive calls are frames of one stream.

    Call it with a numpy image ``[H,W,3]`` or batch ``[B,H,W,3]`` (BGR as OpenCV gives it unless ``bgr=False``),
    or a torch tensor ``[3,H,W]``/``[B,3,H,W]`` (RGB) on any device. Accepted: uint8 and uint16, and float32 or
    float64 in [0, 1] (tensors: any float type; values from -0.5 to 1.5 are clipped to [0, 1], others refused);
    the result has the input's type, shape, dtype and device.

    Frames go through the video path the command line runs: the model at the inference size, its colour transform
    applied at full resolution, smoothed from frame to frame (``temporal="ema"``, the default, following the
    camera's motion, or ``"static"`` for a camera that does not move; call ``reset()`` at a scene cut), with
    ``temporal_strength`` the weight of the past in [0, 1), as ``--temporal-strength``.
    ``temporal="off"`` is for unrelated images: each call then takes the path of
    ``streamdehaze in.jpg out.jpg``. ``strength`` (0 to 1): how much of the model's correction is applied, as
    ``--strength``; ``noise_floor`` (8-bit levels, 0: off; ``"auto"``, the default: from each frame's compression
    blocks) as ``--noise-floor``. ``stream()`` gives another stream on the same loaded model. Calls of one stream
    from several threads at once take turns (its temporal state goes from call to call); those of several streams,
    or with ``temporal="off"``, run together.
    """

    def __init__(self, model: str = "auto", *, weights: str | os.PathLike | None = None,
                 device: str | torch.device = "auto", bgr: bool = True, temporal: str = "ema",
                 infer_size: int | str | None = "auto", strength: float = 1.0,
                 noise_floor: float | str = "auto", temporal_strength: float = TEMPORAL_STRENGTH) -> None:
        check_flags(bgr=bgr)
        # (a torch.device too: checked against the GPUs there are)
        dev = resolve_device(str(device), KEYWORD.format("device", ""))
        if infer_size is not None:
            infer_size = checked_option("infer_size", infer_size)
        # (before the model loads, and as process() and serve take them: "0.5" as 0.5)
        temporal_strength = checked_option("temporal_strength", temporal_strength)
        strength, noise_floor = checked_option("strength", strength), checked_option("noise_floor", noise_floor)
        self.engine, self.temporal = _stream_engine(create_model(model, weights, dev, KEYWORD), dev, temporal,
                                                    infer_size, strength, noise_floor, temporal_strength)
        self.bgr = bgr
        self._turn = threading.Lock()  # a stream's calls, one at a time: each reads and moves its temporal state

    def stream(self) -> "Dehazer":
        """Another stream (its own temporal state) on this one's engine: the model is shared, not copied, and
        calls of several streams from several threads at once share its model calls."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.temporal = None if self.temporal is None else TemporalSmoother(self.temporal.strength,
                                                                             follow=self.temporal.follow)
        other._turn = threading.Lock()
        return other

    def __reduce_ex__(self, protocol: object) -> object:
        # (pickle's own message named a lock deep inside: "cannot pickle '_thread.RLock' object")
        raise TypeError("a Dehazer cannot be pickled or sent to another process: make one in each process")

    def reset(self) -> None:
        """Forget the previous frames (a scene cut, or another camera)."""
        if self.temporal is not None:
            with self._turn:
                self.temporal.reset()

    def __call__(self, frames: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if self.temporal is None:  # (unrelated images: calls from several threads share the model's calls)
            return self._call(frames)
        with self._turn:  # (frames of one stream: calls from several threads at once take turns)
            return self._call(frames)

    def _call(self, frames: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if isinstance(frames, torch.Tensor):
            return self._tensor(frames)
        if not isinstance(frames, np.ndarray):
            raise TypeError(f"expected a numpy array or a torch tensor, not {type(frames).__name__}")
        batch = frames[None] if frames.ndim == 3 else frames
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected an image [H,W,3] or a batch [B,H,W,3], got shape {frames.shape}")
        if frames.dtype.newbyteorder("=") not in _NUMPY_TYPES:
            raise TypeError(f"expected uint8, uint16, float32 or float64 images, not {frames.dtype}")
        if not frames.dtype.isnative:  # big-endian (a FITS or network buffer's): the engine reads native order
            batch = batch.astype(batch.dtype.newbyteorder("="))
        floats = frames.dtype.kind == "f"
        _check_values(batch.size, (lambda: (float(batch.min()), float(batch.max()))) if floats else None)
        if self.bgr:
            batch = batch[..., ::-1]
        out = self.engine.process_array(batch, self.temporal)
        if self.bgr:
            out = np.ascontiguousarray(out[..., ::-1])
        out = out.astype(frames.dtype, copy=False)  # (in the input's byte order)
        return out[0] if frames.ndim == 3 else out

    def _tensor(self, frames: torch.Tensor) -> torch.Tensor:
        batch = frames.unsqueeze(0) if frames.dim() == 3 else frames
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a tensor [3,H,W] or [B,3,H,W], got shape {tuple(frames.shape)}")
        if frames.dtype not in (torch.uint8, torch.uint16) and not frames.is_floating_point():
            raise TypeError(f"expected a uint8, uint16 or float tensor, not {frames.dtype}")
        integer = not batch.is_floating_point()
        _check_values(batch.numel(), None if integer else lambda: tuple(torch.stack(torch.aminmax(batch)).tolist()))
        peak = float(torch.iinfo(frames.dtype).max) if integer else 1.0
        x = batch.to(self.engine.device).float() / peak
        y = self.engine.process_rgb(x, self.temporal)
        y = y.mul(peak).round_().to(frames.dtype) if integer else y.to(frames.dtype)
        y = y.to(frames.device)
        return y[0] if frames.dim() == 3 else y


_NUMPY_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))


# Float images outside these bounds are refused: beyond a resampling's overshoot (bicubic gives about -0.1 to 1.1),
# which is clipped, and far short of an image of 0-255 given as floats (98 % of it came out white).
FLOAT_RANGE = (-0.5, 1.5)


def _check_values(size: int, extremes: Callable[[], tuple[float, float]] | None) -> None:
    """Refuse an empty input, and a float one (``extremes``: its lowest and highest value, NaN if it holds one)
    holding NaN, infinities or values far outside [0, 1]."""
    if size == 0:
        raise ValueError("empty input: no pixels")
    if extremes is None:
        return
    low, high = extremes()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("the input holds NaN or infinite values")
    if low < FLOAT_RANGE[0] or high > FLOAT_RANGE[1]:
        reach = float(f"{high if high > FLOAT_RANGE[1] else low:.6g}")  # (-0.6, not float32's -0.6000000238418579)
        peak = next((peak for peak in (255, 65535) if 0 <= low and high <= peak * FLOAT_RANGE[1]), None)
        hint = f"divide an image of 0-{peak} by {peak}" if peak else "scale it to 0-1"
        raise ValueError(f"float images hold values from 0 to 1; this one reaches {reach} ({hint})")


def _stream_engine(model: torch.nn.Module, device: torch.device, temporal: str, infer_size: int | str | None,
                   strength: float, noise_floor: float | str,
                   temporal_strength: float = TEMPORAL_STRENGTH) -> tuple[Engine, TemporalSmoother | None]:
    """The video path for one stream and its temporal smoother, or the photo path for unrelated images."""
    state = smoother(temporal, temporal_strength)
    if state is None:
        return image_engine(model, device, infer_size, strength, noise_floor), None
    return Engine(model, device, infer_size, strength=strength, noise_floor=noise_floor), state


def read_frames(input: str | os.PathLike, *, bgr: bool = True, max_frames: int | None = None,
                duration: float | None = None, live: LiveOptions | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(seconds, image)`` for every frame of a file or stream; images are numpy ``[H,W,3]`` uint8, upright
    (turned by the video's rotation tag, as players and OpenCV show them)."""
    check_flags(bgr=bgr)
    with open_source(input, max_frames=max_frames, duration=duration, live=live) as source:
        for item in source:
            if isinstance(item, av.VideoFrame):
                t = float(item.pts * item.time_base) if item.time_base is not None else 0.0
                yield t, upright(to_image(item, bgr), item.rotation)


def dehazed(input: str | os.PathLike, *, queue_frames: int = 2, **options: object) -> Iterator[FrameRecord]:
    """Iterate over the dehazed frames of a file or live stream as ``FrameRecord``s, with the pipeline's reader
    thread, batching and device overlap (``options``: those of ``process``, without ``output`` and ``on_frame``;
    ``bgr=False`` for RGB images).

    A file is read no faster than the loop takes its frames. A live stream runs at the camera's pace whatever the
    loop does: while the loop is busy, the oldest of the ``queue_frames`` waiting for it are dropped, so it always
    sees recent frames. Leaving the loop early stops the run.
    """
    if isinstance(input, StreamConfig) and set(options) - {"bgr"}:
        raise TypeError(f"dehazed(StreamConfig) takes its options from the config, not as "
                        f"{', '.join(k for k in options if k != 'bgr')}")
    if isinstance(input, StreamConfig) and input.output is not None:  # (it was written, without a word)
        raise TypeError(f"dehazed() takes no output: it yields the frames; StreamConfig({input.input!r}, None, ...), "
                        "or process() to write them")
    if "output" in options or "on_frame" in options:
        raise TypeError("dehazed() takes no output or on_frame: it yields the frames (process() writes them, and "
                        "hands them to on_frame)")
    if queue_frames < 1:
        raise UsageError(f"queue_frames must be at least 1, not {queue_frames}")
    records: queue.Queue = queue.Queue(queue_frames)
    closed = threading.Event()  # the loop was left: nothing takes frames any more
    # The run stops when the loop is left or the caller's ``stop`` is set. Leaving it had been seen only at the next
    # frame: a camera that went away as the loop was left was dialled again for ever, and the loop's end waited on it.
    ended, stop = threading.Event(), options.pop("stop", None)
    live = is_live(input.input if isinstance(input, StreamConfig) else str(input))

    def put(item: object) -> None:
        if closed.is_set():
            raise _LoopLeft
        while live and isinstance(item, FrameRecord):  # never wait for the loop: drop the oldest record
            try:
                records.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    records.get_nowait()
        while not closed.is_set():
            try:
                records.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _LoopLeft

    def watch() -> None:  # the caller's stop, passed on to the run
        while not ended.wait(0.1):
            if stop.is_set():  # type: ignore[union-attr]
                ended.set()

    def run() -> None:
        try:
            process(input, None, on_frame=put, stop=ended, **options)  # type: ignore[arg-type]
        except _LoopLeft as left:
            # Its traceback's frames hold the run (frames, buffers) in reference cycles with the objects that kept
            # it (the stream, its writer): let go of them now, not at the next full garbage collection (an
            # application that leaves the loop at every reconnection grew by hundreds of MB).
            left.__traceback__ = left.__context__ = None
        except BaseException as exc:  # handed to the loop, which raises it
            with contextlib.suppress(_LoopLeft):
                put(_Failed(exc))
            return
        with contextlib.suppress(_LoopLeft):
            put(_END)

    threads = [threading.Thread(target=run, name="dehazed", daemon=True)]
    if stop is not None:
        threads.append(threading.Thread(target=watch, name="dehazed stop", daemon=True))
    for thread in threads:
        thread.start()
    try:
        while (item := records.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        closed.set()
        ended.set()
        for thread in threads:
            thread.join()


class _LoopLeft(Exception):
    """The loop over ``dehazed()`` ended early: the run stops."""


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def process(input: str | bytes | os.PathLike | StreamConfig, output: str | bytes | os.PathLike | None = None, *,
            model: str = "auto", weights: str | os.PathLike | None = None, device: str | torch.device = "auto",
            infer_size: int | str | None = "auto",
            strength: float = 1.0, noise_floor: float | str = "auto", temporal: str = "ema",
            temporal_strength: float = TEMPORAL_STRENGTH,
            batch: int | None = None, hwaccel: str = "auto", compile: bool = False, codec: str | None = None,
            crf: int | None = None,
            preset: str | None = None, max_frames: int | None = None, duration: float | None = None,
            live: LiveOptions | None = None, max_latency: float | None = None, segment_time: float | None = None,
            strict: bool = False, on_frame: Callable[[FrameRecord], np.ndarray | None] | None = None,
            bgr: bool = True, stats: RunStats | None = None, on_frames: Callable[[int], None] | None = None,
            on_start: Callable[[Source], None] | None = None, stop: threading.Event | None = None,
            _option: str = KEYWORD) -> RunResult:
    """Dehaze a file or live stream into ``output``: a file, a segment series (``segment_time``), a URL to
    publish to, or None with only ``on_frame``.

    A file input's output is all or nothing: complete at the target, or, when interrupted, the frames done so far
    in ``NAME.partial.EXT`` (``RunResult.output``), or nothing. A live recording is written to the target as it
    goes and kept whatever happens; an earlier file there is moved aside (``outputs.py``). Every frame keeps its
    timestamp (live streams: one monotonic clock across reconnects); a file's audio and subtitle streams are
    copied packet for packet; corrupt packets are skipped and counted (``RunResult.corrupt``) unless ``strict``.
    ``strength`` (0 to 1): how much of the model's correction is applied, and ``noise_floor`` (8-bit levels, 0: off;
    ``"auto"``: from each frame's compression blocks) how flat a region must be to keep its own fine detail
    (``Engine``). ``temporal="ema"`` smooths flicker between frames, following the camera's motion (``"static"``:
    for cameras that do not move, cheaper). ``batch``: frames per model call (default: 4 for files, 1 for live
    streams). ``crf`` and ``preset``: the encoder's quality and speed (default 18, and veryfast for x264/x265).
    ``hwaccel``: ``auto`` decodes with NVDEC and encodes with NVENC when the model runs on CUDA and they work,
    ``cuda`` requires them, ``none`` never uses them. ``compile``: the model through ``torch.compile``.
    ``on_frame(record)`` sees each dehazed frame (a ``FrameRecord``: image, original, seconds, index, stream), in
    the writer thread; an image it returns is written instead (BGR, as OpenCV draws, unless ``bgr=False``). On
    Ctrl-C the frames done so far are kept and ``RunResult.interrupted`` is set; ``stop``, an event set from any
    thread (Ctrl-C reaches only the main thread), does the same, and ends the dialling of a camera that does not
    answer (with no frames). Many streams sharing one engine: ``serve``. (``_option``: how messages name a
    setting; the command line's ``--{} {}``.)
    """
    check_callbacks(on_frame=on_frame, on_frames=on_frames, on_start=on_start)
    check_flags(bgr=bgr)
    if isinstance(input, StreamConfig):
        given = {name: value for name, value in locals().items() if name in _OPTION_DEFAULTS}
        beside = [name for name, value in given.items() if value != _OPTION_DEFAULTS[name]]
        if output is not None or beside:
            raise TypeError("process(StreamConfig) takes the output and options from the config, not as "
                            + ", ".join((["output"] if output is not None else []) + beside))
    config = input.checked() if isinstance(input, StreamConfig) else StreamConfig.from_options(
        _name(input), None if output is None else _name(output), live=live, model=model,
        weights=None if weights is None else str(weights), device=str(device), infer_size=infer_size, strength=strength,
        noise_floor=noise_floor, compile=compile, temporal=temporal, temporal_strength=temporal_strength,
        batch=batch, hwaccel=hwaccel, codec=codec, crf=crf, preset=preset, segment_time=segment_time,
        max_frames=max_frames, duration=duration, max_latency=max_latency, strict=strict)
    job = Job(config, stats=stats, on_frame=on_frame, on_frames=on_frames, bgr=bgr, option=_option)
    job.check()  # before a camera is dialled or a model loaded
    began = time.perf_counter()
    try:
        source = job.open_interruptibly(stop)
    except Stopped:
        return RunResult(frames=0, seconds=time.perf_counter() - began, interrupted=True)
    with source:
        m = config.model
        engine = Engine(create_model(m.model, m.weights, job.device, _option), job.device, m.infer_size,
                        compile=m.compile, strength=m.strength, noise_floor=m.noise_floor)
        if on_start is not None:
            on_start(source)
        stream = job.start()
        settings = job.settings(engine.infer_shape)
        # From the first frame to the output's last byte, Ctrl-C is taken only where drive() and complete() look for
        # it: anywhere else it would stop the writer's join half-way (Python 3.11 then takes the writer for ended) and
        # the output would be closed under the writer, or thrown away.
        with deferred_signals() as signals:
            asked: list[bool] = []

            def run_handlers() -> None:  # (``stop`` is taken as a first Ctrl-C is, once)
                signals()
                if stop is not None and stop.is_set() and not asked:
                    asked.append(True)
                    raise KeyboardInterrupt
            try:
                interrupted = drive(stream, engine, run_handlers)
            except BaseException:
                job.abort()
                raise
            result = job.complete(interrupted, run_handlers)
            try:
                run_handlers()  # (one that came as the output was closed and named)
            except KeyboardInterrupt:
                result.interrupted = True
        result.settings = settings
        return result


def _name(given: str | os.PathLike | bytes) -> str:
    """A file name or URL as given: a path, or bytes as the file system spells them (``str(b"in.mp4")`` is
    "b'in.mp4'", and was looked for as such)."""
    return os.fsdecode(given) if isinstance(given, (bytes, os.PathLike)) else str(given)


# process()'s stream options and their defaults: a StreamConfig brings its own, so none may be given beside it.
_OPTION_DEFAULTS = {name: p.default for name, p in inspect.signature(process).parameters.items()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY
                    and name not in ("on_frame", "bgr", "stats", "on_frames", "on_start", "stop", "_option")}

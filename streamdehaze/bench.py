"""Throughput benchmark: ``python -m streamdehaze.bench [--sizes 720p 1080p] [--model NAME]``; with ``--streams N ...``
the capacity benchmark of many live cameras in one process against one process each (``bench_streams.py``).

For each size it makes a clip from the bundled sample (rescaled, re-encoded), then measures in one invocation:
decode only, model only (frames already decoded), encode only, a plain transcode (decode + encode through the
same threads, no processing) and the end-to-end dehaze. Prints fps for each, end-to-end / transcode, the
pipeline efficiency (end-to-end fps over the slowest single stage's fps), and each one's CPU time per frame
summed over the process's threads (on a saturated CPU the fps ratios follow from those).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

if __name__ == "__main__":  # as the command line does for its own process (tuning.py); only before torch loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import av
import torch

from .api import FILE_BATCH, process
from .defaults import HWACCEL_MODES, TEMPORAL_MODES
from .encoders import choose_encoding, quality_options
from .engine import Engine, resolve_device
from .errors import MediaError, StreamDehazeError, UsageError
from .hwaccel import use_cuda
from .models import create_model, model_name
from .options import Parser, parse_infer_size
from .sample import SAMPLE, benchmark_input
from .sinks import VideoSink
from .sources import VideoFileSource, main_video
from .threads import Prefetch, Worker
from .tuning import tuned

DESCRIPTION = ("Throughput of decode, model, encode, a plain transcode and the end-to-end dehaze, on clips made from "
               "the bundled sample; with --streams, live cameras on one shared engine against a process each.")
SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080), "2160p": (3840, 2160)}


def make_clip(path: Path, width: int, height: int, frames: int, source: Path = SAMPLE) -> None:
    """``source`` (the bundled sample by default) rescaled to ``width`` x ``height``, looped to ``frames`` frames
    (no audio)."""
    with av.open(str(path), "w") as dst:
        out = dst.add_stream("libx264", rate=25)
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        out.codec_context.options = {"crf": "18", "preset": "veryfast"}
        for n, frame in zip(range(frames), _looped(source)):
            scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
            scaled.pts, scaled.time_base = n, Fraction(1, 25)  # not the source's time base
            for packet in out.encode(scaled):
                dst.mux(packet)
        for packet in out.encode(None):
            dst.mux(packet)


def _looped(source: Path) -> Iterator[av.VideoFrame]:
    """The pictures of ``source``'s main video, over and over."""
    while True:
        count = 0
        try:
            with av.open(str(source)) as src:
                for frame in src.decode(main_video(src)):
                    count += 1
                    yield frame
        except av.FFmpegError as exc:  # damaged past its start (its start was read when it was checked)
            raise MediaError(f"cannot read {source}: {exc.strerror or exc}") from None
        if not count:  # (would loop for ever)
            raise MediaError(f"no pictures could be decoded from {source}")


def _fps(frames: int, seconds: float) -> float:
    return frames / seconds if seconds > 0 else float("inf")


def measure(clip: Path, model: str, device: str, preset: str, batch: int, hwaccel: str = "auto",
            weights: Path | None = None, infer_size: int | str | None = "auto",
            compile: bool = False) -> dict[str, tuple[float, float]]:
    """(fps, CPU ms per frame of the whole process) for each stage, the transcode and the end-to-end run."""
    tmp = clip.parent
    result = {}
    dev = resolve_device(device)
    nvidia = use_cuda(hwaccel, dev)
    with VideoFileSource(str(clip), nvdec=nvidia) as source:
        with _Timer(result, "decode") as timer:
            frames = [item for item in source if isinstance(item, av.VideoFrame)]
            timer.frames = len(frames)
        info = source.info
    engine = Engine(create_model(model, weights, dev), dev, infer_size, compile=compile)
    encoding = choose_encoding(info, preset=preset, nvenc=nvidia)
    fmt, pix_fmt = encoding.yuv_format, encoding.pix_fmt
    with tuned(dev):  # the tuning of a real (command-line) video run
        engine.process_frames(frames[:batch], fmt, pix_fmt)  # warm-up (allocations, kernels)
        with _Timer(result, "model", len(frames)):  # batches in flight as in a real run
            dehazed, in_flight = [], deque()
            for i in range(0, len(frames), batch):
                in_flight.append(engine.submit(frames[i:i + batch], fmt, pix_fmt))
                while len(in_flight) > engine.depth:
                    dehazed += in_flight.popleft().frames()
            while in_flight:
                dehazed += in_flight.popleft().frames()
    sink = VideoSink(tmp / "encode.mp4", info, encoding)
    with _Timer(result, "encode", len(frames)):
        for frame in dehazed:
            sink.write(frame)
        sink.close()
    del frames, dehazed
    with _Timer(result, "transcode") as timer:
        timer.frames = _transcode(clip, tmp / "transcode.mp4", preset, nvidia)
    with tuned(dev), _Timer(result, "end_to_end") as timer:
        timer.frames = process(clip, tmp / "dehazed.mp4", model=model, weights=weights, device=device,
                               infer_size=infer_size, preset=preset, batch=batch, hwaccel=hwaccel,
                               compile=compile).frames
    return result


class _Timer:
    """Wall and CPU time (all threads of the process) of a block; stores (fps, CPU ms / frame)."""

    def __init__(self, into: dict, name: str, frames: int = 0) -> None:
        self.into, self.name, self.frames = into, name, frames

    def __enter__(self) -> _Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        self.into[self.name] = (_fps(self.frames, wall), 1000 * cpu / max(1, self.frames))


def _transcode(clip: Path, out: Path, preset: str, nvidia: bool) -> int:
    """Decode + encode with the pipeline's reader and writer threads and no processing."""
    with VideoFileSource(str(clip), nvdec=nvidia) as source:
        sink = VideoSink(out, source.info, choose_encoding(source.info, preset=preset, nvenc=nvidia))
        reader = Prefetch(source, maxsize=8, name="decode")
        writer: Worker = Worker(sink.write, maxsize=8, name="encode")
        n = 0
        for item in reader:
            if isinstance(item, av.VideoFrame):
                writer.put(item)
                n += 1
        reader.close()
        writer.finish()
        sink.close()
    return n


def at_least_one(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def one_line_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """A benchmark's ``main`` that reports a user's mistake (a model that does not exist, no GPU, a bad preset) as
    one line and its exit code, as the command line does."""
    def run(*args: object) -> int:
        try:
            return main(*args) or 0
        except StreamDehazeError as exc:
            print(f"streamdehaze: error: {exc}", file=sys.stderr)
            return exc.exit_code
    return run


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m streamdehaze.bench", description=DESCRIPTION)  # a mistake: one line, exit 2
    p.add_argument("--input", type=Path, metavar="FILE",
                   help="the clip to benchmark (default: the bundled sample, in a checkout of the repository)")
    p.add_argument("--sizes", nargs="+", default=["720p", "1080p"], choices=list(SIZES),
                   help="clip sizes (default: 720p 1080p)")
    p.add_argument("--model", default="auto", help="the model, as the command line's --model (default: auto)")
    p.add_argument("--weights", type=Path, help="weights for models that take them")
    p.add_argument("--infer-size", type=parse_infer_size, default="auto", metavar="N|full|auto",
                   help="as the command line's --infer-size (default: auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--frames", type=at_least_one, default=100, help="frames of each clip (default: 100)")
    p.add_argument("--batch", type=at_least_one, default=FILE_BATCH,
                   help=f"frames per model call (default: {FILE_BATCH}, as files)")
    p.add_argument("--preset", default="veryfast", help="libx264 preset (default: veryfast)")
    p.add_argument("--hwaccel", default="auto", choices=HWACCEL_MODES, help="NVDEC/NVENC (default: auto)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (the model stage is timed after the build; end to end includes it)")
    streams = p.add_argument_group("capacity (--streams): live-like cameras, one shared engine vs a process each")
    streams.add_argument("--streams", type=at_least_one, nargs="+", metavar="N",
                         help="numbers of cameras, e.g. 1 2 4 8")
    streams.add_argument("--size", default="360p", choices=list(SIZES), help="camera size (default: 360p)")
    streams.add_argument("--rate", type=at_least_one, default=25, help="camera frame rate (default: 25)")
    streams.add_argument("--seconds", type=positive, default=12.0, help="run length per measurement (default: 12)")
    streams.add_argument("--shared-only", action="store_true", help="skip the process-per-camera comparison")
    streams.add_argument("--temporal", default="ema", choices=TEMPORAL_MODES, help="each camera's smoothing (default: ema)")
    streams.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one camera of the separate runs
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    if args.json is not None and not args.json.resolve().parent.is_dir():
        raise UsageError(f"--json: no folder {args.json.parent}")
    if args.json is not None and args.json.is_dir():
        raise UsageError(f"--json: {args.json} is a folder; give a file name")
    quality_options("libx264", preset=args.preset)  # a bad preset: said now, not after the first clip
    args.input = benchmark_input(args.input)
    with VideoFileSource(args.input):  # missing, not a video, unreadable: said now, in one line
        pass
    if args.streams:
        # live cameras are decoded and encoded in software, a frame at a time as they come: these options do not apply
        file_only = [f"--{name}" for name in ("sizes", "frames", "batch", "hwaccel")
                     if getattr(args, name) != p.get_default(name)]
        if file_only:
            raise UsageError(f"{', '.join(file_only)}: not for --streams (it takes --size, --rate, --seconds)")
        from . import bench_streams
        return bench_streams.main(args)
    device = resolve_device(args.device)
    model = model_name(args.model, args.weights, device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {gpu}; "
          f"torch {torch.__version__}, av {av.__version__}; model {model}, device {device}, "
          f"batch {args.batch}, libx264 {args.preset}, {args.frames} frames, "
          f"NVDEC/NVENC {'on' if use_cuda(args.hwaccel, device) else 'off'}")
    print(f"{'size':>6} {'':>4} {'decode':>8} {'model':>8} {'encode':>8} {'transcode':>10} {'end2end':>8} "
          f"{'e2e/transcode':>14} {'efficiency':>11}")
    stages = ("decode", "model", "encode", "transcode", "end_to_end")
    report = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            clip = Path(tmp) / f"{size}.mp4"
            make_clip(clip, *SIZES[size], args.frames, args.input)
            r = measure(clip, args.model, args.device, args.preset, args.batch, args.hwaccel, args.weights,
                        args.infer_size, args.compile)
            fps = {k: v[0] for k, v in r.items()}
            report.append({"size": size, "model": model, "device": str(device), "fps": fps,
                           "cpu_ms_per_frame": {k: v[1] for k, v in r.items()}})
            slowest = min(fps["decode"], fps["model"], fps["encode"])
            print(f"{size:>6} {'fps':>4} " + " ".join(f"{fps[k]:{w}.1f}" for k, w in zip(stages, (8, 8, 8, 10, 8)))
                  + f" {fps['end_to_end'] / fps['transcode']:14.2f} {fps['end_to_end'] / slowest:11.2f}")
            # CPU time of all the process's threads per frame: on a saturated CPU, what the fps ratios come from.
            print(f"{'':>6} {'cpu':>4} " + " ".join(f"{r[k][1]:{w}.1f}" for k, w in zip(stages, (8, 8, 8, 10, 8)))
                  + "  (ms per frame)", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

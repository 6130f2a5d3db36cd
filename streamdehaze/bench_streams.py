"""Capacity benchmark: ``python -m streamdehaze.bench --streams 1 2 4 8 [--size 360p] [--model dcp]``.

For each N, N live-like cameras (the bundled sample at ``--size``, looped, delivered in real time at ``--rate``
fps) are dehazed and encoded for ``--seconds``, twice: by one process whose engine serves them all (``serve``'s
scheduler: frames of all cameras share model calls), and by N separate processes of one camera each. Prints the
aggregate fps, each camera's p95 latency (arrival to encoded) and the share of frames dropped to bound latency.
The model options (``--weights``, ``--infer-size``, ``--compile``) and ``--preset`` apply to both; the file
benchmark's own (``--sizes``, ``--frames``, ``--batch``, ``--hwaccel``) are refused by ``bench.py``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av

from .encoders import choose_encoding
from .engine import Engine, resolve_device
from .frames import to_planar
from .models import create_model, default_model
from .fleet import Lane
from .pipeline import Stream
from .sinks import VideoSink
from .sources import VideoFileSource, VideoInfo
from .stats import RunStats
from .temporal import smoother
from .tuning import tuned

MAX_LATENCY = 1.0  # seconds, as a live run's default --max-latency


class PacedSource:
    """A live-like camera: ``clip`` looped, each frame due at ``rate`` frames a second in real time and decoded
    when due (as a camera's packets are, in the stream's reader thread), for ``seconds``. A frame's arrival is
    when it was due (as ``LiveSource.arrival``)."""

    def __init__(self, clip: Path, info: VideoInfo, rate: int, seconds: float, phase: float = 0.0) -> None:
        self.clip, self.rate, self.seconds, self.phase = clip, rate, seconds, phase
        self.time_base = Fraction(1, rate)
        self.info = replace(info, time_base=self.time_base, rate=Fraction(rate), frames=0, copy_streams=[])
        self.received = self.reconnects = self.corrupt = 0
        self._arrivals: dict[int, float] = {}
        self._stop = threading.Event()

    def _decoded(self) -> Iterator[av.VideoFrame]:
        while True:
            with av.open(str(self.clip)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                yield from container.decode(stream)

    def __iter__(self) -> Iterator[av.VideoFrame]:
        start = time.monotonic() + self.phase
        frames = self._decoded()
        for i in range(int(self.seconds * self.rate)):
            due = start + i / self.rate
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            frame = to_planar(next(frames))
            frame.pts, frame.time_base = i, self.time_base
            self._arrivals[i] = due
            self._arrivals.pop(i - 4 * self.rate, None)  # long gone: written or dropped
            self.received += 1
            yield frame

    def arrival(self, pts: int) -> float | None:
        return self._arrivals.get(pts)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class CameraResult:
    frames: int
    received: int
    dropped: int
    p95_ms: float

    @staticmethod
    def of(stats: RunStats, source: PacedSource) -> CameraResult:
        lat = sorted(stats.latencies())
        p95 = 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan")
        return CameraResult(stats.frames, source.received, stats.dropped, p95)


@dataclass(frozen=True)
class Setup:
    """How every camera is dehazed and encoded: the model with its weights, where and at what size it runs, the
    encoder preset and the smoothing."""

    model: str
    weights: Path | None = None
    device: str = "auto"
    infer_size: int | str | None = "auto"
    compile: bool = False
    preset: str = "veryfast"
    temporal: str = "ema"

    def options(self) -> list[str]:
        """The same setup as ``bench`` options, for a worker process."""
        infer_size = "full" if self.infer_size is None else str(self.infer_size)
        return (["--model", self.model, "--device", self.device, "--infer-size", infer_size, "--preset", self.preset,
                 "--temporal", self.temporal] + (["--weights", str(self.weights)] if self.weights else [])
                + (["--compile"] if self.compile else []))


def run_shared(clip: Path, streams: int, setup: Setup, rate: int, seconds: float, out: Path) -> list[CameraResult]:
    """``streams`` cameras served by one engine in this process."""
    dev = resolve_device(setup.device)
    with VideoFileSource(clip) as source:
        info = source.info
        warm = [to_planar(f) for f in itertools.islice((f for f in source if isinstance(f, av.VideoFrame)), 2)]
    engine = Engine(create_model(setup.model, setup.weights, dev), dev, setup.infer_size, compile=setup.compile)
    sources = [PacedSource(clip, info, rate, seconds, phase=i / (rate * streams))  # cameras not in step
               for i in range(streams)]
    stats = [RunStats() for _ in range(streams)]
    sinks = [VideoSink(out / f"cam{i}.mp4", source.info, choose_encoding(source.info, preset=setup.preset, live=True),
                       live=True) for i, source in enumerate(sources)]
    with tuned(dev):  # as the command line tunes its own process
        engine.process_frames(warm, sinks[0].yuv_format, sinks[0].pix_fmt, smoother(setup.temporal))  # warm-up
        lane = Lane(engine)  # serve's engine threads
        jobs = [Stream(source, sink, name=f"cam{i}", live=True, max_latency=MAX_LATENCY, stats=run_stats,
                       temporal=smoother(setup.temporal))
                for i, (source, sink, run_stats) in enumerate(zip(sources, sinks, stats))]
        for stream in jobs:
            lane.scheduler.add(stream)
        for stream in jobs:
            stream.drained.wait()
            stream.finish()
        lane.close()
    return [CameraResult.of(s, src) for s, src in zip(stats, sources)]


def run_separate(args: list[str], streams: int) -> list[CameraResult]:
    """``streams`` processes of one camera each, started together."""
    procs = [subprocess.Popen([sys.executable, "-m", "streamdehaze.bench", *args, "--worker"], stdout=subprocess.PIPE,
                              text=True) for _ in range(streams)]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"a benchmark worker failed (exit {proc.returncode})")
        results.append(CameraResult(**json.loads(out.strip().splitlines()[-1])))
    return results


def main(args) -> int:
    """``args``: ``bench.py``'s parsed options (``streams``, ``size``, ``rate``, ``seconds``, ``shared_only``,
    ``json``, ``worker``, and those of :class:`Setup`)."""
    from .bench import SIZES, make_clip

    model = args.model
    if model == "auto" and args.weights is None:
        model = default_model(resolve_device(args.device))
    setup = Setup(model, args.weights, args.device, args.infer_size, args.compile, args.preset, args.temporal)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / f"{args.size}.mp4"
        make_clip(clip, *SIZES[args.size], 100, args.input)
        if args.worker:  # one camera of the separate-process runs
            (result,) = run_shared(clip, 1, setup, args.rate, args.seconds, Path(tmp))
            print(json.dumps(result.__dict__))
            return 0
        print(f"# {args.size} cameras at {args.rate} fps for {args.seconds:g} s, model {model}"
              f"{f' ({args.weights})' if args.weights else ''}, device {resolve_device(args.device)}, --temporal "
              f"{args.temporal}, --max-latency {MAX_LATENCY:g} s; latency = arrival to encoded")
        print(f"{'streams':>7} {'mode':>9} {'aggregate fps':>14} {'per camera':>11} {'p95 ms (worst)':>15} "
              f"{'dropped %':>10}")
        worker = ["--streams", "1", "--size", args.size, "--rate", str(args.rate), "--seconds", str(args.seconds),
                  "--input", str(args.input), *setup.options()]
        report = []
        for n in args.streams:
            rows = {"shared": run_shared(clip, n, setup, args.rate, args.seconds, Path(tmp))}
            if not args.shared_only:
                rows["separate"] = run_separate(worker, n)
            for mode, cams in rows.items():
                total = sum(c.frames for c in cams)
                received = sum(c.received for c in cams)
                row = {"streams": n, "mode": mode, "size": args.size, "model": model, "fps": total / args.seconds,
                       "p95_ms_worst": max(c.p95_ms for c in cams),
                       "dropped_percent": 100 * sum(c.dropped for c in cams) / max(1, received)}
                report.append(row)
                print(f"{n:>7} {mode:>9} {row['fps']:14.1f} {row['fps'] / n:11.1f} {row['p95_ms_worst']:15.0f} "
                      f"{row['dropped_percent']:10.1f}", flush=True)
            if "separate" in rows:
                ratio = sum(c.frames for c in rows["shared"]) / max(1, sum(c.frames for c in rows["separate"]))
                print(f"{n:>7} {'ratio':>9} {ratio:14.2f}  (shared / separate aggregate fps)", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0

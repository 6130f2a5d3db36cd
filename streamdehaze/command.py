"""The command line's work, behind ``cli.main``: options (each checked: one line and exit 2 for a mistake), the
run, and its summary. Heavy imports live here so that the entry point stays light."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import tqdm

from .api import process
from .credentials import mask
from .engine import resolve_device
from .errors import UsageError
from .images import dehaze_images, image_engine, is_image
from .live import LiveOptions, LiveSource, is_live
from .models import create_model, default_model
from .fleet import Fleet, FleetResult
from .options import Parser, build_parser, seconds
from .outputs import atomic_output
from .pipeline import RunResult, deferred_signals
from .sources import VideoFileSource
from .stats import Reporter, RunStats
from .tuning import tuned

log = logging.getLogger("streamdehaze")


def run(argv: list[str]) -> int:
    """Parse ``argv`` and run; errors are raised for ``cli.main`` to report."""
    av.logging.set_level(None)  # FFmpeg's own messages would bury ours; errors reach us as exceptions
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # likewise OpenCV's, for damaged images
    if argv[:1] == ["serve"]:  # (an input file called 'serve': ./serve)
        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    log.setLevel(logging.ERROR if args.quiet else logging.INFO)
    return _run(args)


def serve(argv: list[str]) -> int:
    """``streamdehaze serve CONFIG.toml [--duration S]``: the streams of a configuration, in one process, until
    they end, for ``S`` seconds, or until Ctrl-C / SIGTERM; SIGHUP re-reads the configuration (``fleet.py``).
    Exit 0, or 1 when a stream failed, 130 when a file stream was cut short."""
    args = serve_parser().parse_args(argv)
    fleet = Fleet(args.config)
    quiet = args.quiet or fleet.config.quiet
    log.setLevel(logging.ERROR if quiet else logging.INFO)
    fleet.start()
    tuning = contextlib.ExitStack()  # the command line tunes its own process (tuning.py), for every engine's device
    for device in fleet.devices:
        tuning.enter_context(tuned(device))
    reloads: list[int] = []  # SIGHUPs (a handler only records: the thread it interrupts may hold any lock)
    previous = signal.getsignal(signal.SIGHUP)
    if previous is not signal.SIG_IGN:  # ignored at start (nohup): stays so
        signal.signal(signal.SIGHUP, lambda signum, frame: reloads.append(signum))
    try:
        with deferred_signals() as run_handlers:  # Ctrl-C and SIGTERM: a KeyboardInterrupt here, between checks
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while True:
                run_handlers()
                if fleet.wait(0.2):
                    break
                if reloads:
                    reloads.clear()
                    try:
                        fleet.reload(args.config)
                    except UsageError as exc:
                        log.error("reload: %s; the running configuration stays", exc)
                if deadline is not None and time.monotonic() >= deadline:
                    fleet.stop()
                    deadline = None
    except KeyboardInterrupt:
        log.info("stopping: every stream finishes its output")
    finally:
        signal.signal(signal.SIGHUP, previous)
        fleet.stop()
    result = fleet.close()
    tuning.close()
    if not quiet:
        for line in summary(result):
            print(f"streamdehaze: {line}", file=sys.stderr)
    if result.failed:
        return 1
    cut = [s for s in result.streams if s.result is not None and s.result.interrupted and not s.live]
    return 130 if cut else 0


def serve_parser() -> argparse.ArgumentParser:
    p = Parser(prog="streamdehaze serve", description="Dehaze many streams in one process, sharing the model.")
    p.add_argument("config", type=Path, help="TOML: defaults for every stream, then [[stream]] tables")
    p.add_argument("--duration", type=seconds(math.inf), metavar="SECONDS", help="stop every stream after this long")
    p.add_argument("--quiet", action="store_true", help="no summary; errors only")
    return p


def summary(result: FleetResult) -> list[str]:
    """One line per stream and one for the fleet."""
    lines = []
    dropped = reconnects = 0
    for s in result.streams:
        if s.error is not None:
            lines.append(f"{s.name}: failed: {s.error}")
        elif s.result is None:
            lines.append(f"{s.name}: never connected")
        if s.result is None:
            continue
        r = s.result
        dropped, reconnects = dropped + r.dropped, reconnects + r.reconnects
        kept = f" (cut short: {r.output})" if r.output else ""
        lines.append(f"{s.name}: {r.frames} frames in {r.seconds:.2f} s ({r.fps:.1f} fps, {r.dropped} dropped, "
                     f"{r.reconnects} reconnects) -> {mask(s.output, s.output)}{kept}")
    failed = f", {len(result.failed)} failed" if result.failed else ""
    lines.append(f"fleet: {len(result.streams)} streams, {result.frames} frames in {result.seconds:.2f} s "
                 f"({result.fps:.1f} fps, {dropped} dropped, {reconnects} reconnects){failed}")
    return lines


def _run(args: argparse.Namespace) -> int:
    src, dst = Path(args.input), Path(args.output)
    is_url = "://" in args.input or args.input.startswith("/dev/video") or "%" in src.name
    if not is_url and not src.exists():
        raise UsageError(f"input not found: {args.input}")
    device = resolve_device(args.device)
    if args.model == "auto" and args.weights is None:  # name what runs, in the stats and the summary line
        args.model = default_model(device)
    if not is_url and (src.is_dir() or is_image(src)):
        engine = image_engine(create_model(args.model, args.weights, device), device, args.infer_size)
        with tqdm.tqdm(unit="img", disable=_no_bar(args), dynamic_ncols=True) as bar:
            result = _timed(lambda: dehaze_images(engine, src, dst, on_image=bar.update))
        return _finish(args, result, "images")
    if is_image(dst):
        raise UsageError(f"input is a video, so the output must be a video file, not an image: {dst}")
    live = is_live(args.input)
    stats = RunStats()
    reporter = None
    if args.metrics_port is not None or (live and args.stats_json is not None):
        reporter = Reporter(stats, args.stats_json if live else None, args.metrics_port,
                            labels={"input": args.input, "output": args.output, "model": args.model})
    try:
        with tuned(device), tqdm.tqdm(unit="frame", disable=_no_bar(args), dynamic_ncols=True) as bar:
            def on_start(source: VideoFileSource | LiveSource) -> None:
                bar.total = min(source.info.frames or 0, args.max_frames or sys.maxsize) or None
                bar.refresh()
            result = process(
                args.input, args.output, model=args.model, weights=args.weights, device=args.device,
                infer_size=args.infer_size, temporal=args.temporal, temporal_strength=args.temporal_strength,
                batch=args.batch, hwaccel=args.hwaccel, compile=args.compile, codec=args.codec, crf=args.crf,
                preset=args.preset, strict=args.strict,
                max_frames=args.max_frames, duration=args.duration, segment_time=args.segment_time,
                live=LiveOptions(timeout=args.timeout, reconnect=args.reconnect, rtsp_transport=args.rtsp_transport),
                max_latency=args.max_latency, stats=stats, on_frames=bar.update, on_start=on_start)
    finally:
        if reporter is not None:
            reporter.close()
    if live and result.interrupted:  # stopping a live run is the normal way to end it
        result.interrupted = False
    return _finish(args, result, "frames", write_stats=not live)


def _timed(fn: Callable[[], int]) -> RunResult:
    start = time.perf_counter()
    count = fn()
    return RunResult(frames=count, seconds=time.perf_counter() - start)


def _no_bar(args: argparse.Namespace) -> bool:
    return args.quiet or not sys.stderr.isatty()


def _finish(args: argparse.Namespace, result: RunResult, unit: str, write_stats: bool = True) -> int:
    output = result.output or args.output
    if args.stats_json is not None and write_stats:
        stats = {"input": mask(args.input, args.input), "output": mask(output, args.output), "model": args.model,
                 unit: result.frames, "frames": result.frames, "seconds": round(result.seconds, 4),
                 "fps": round(result.fps, 3), "corrupt_packets": result.corrupt, "interrupted": result.interrupted}
        with atomic_output(args.stats_json) as tmp:
            tmp.write_text(json.dumps(stats, indent=2) + "\n")
    if result.interrupted:
        log.warning("interrupted: %s holds the %d frames dehazed so far%s", output, result.frames,
                    f"; {args.output} is left as it was" if result.output else "")
        return 130
    if not args.quiet:
        rate = f"{result.fps:.1f} fps" if unit == "frames" else f"{result.fps:.2f} images/s"
        extra = f", {result.dropped} dropped, {result.reconnects} reconnects" if is_live(args.input) else ""
        if result.corrupt:
            extra += f", {result.corrupt} corrupt packets skipped"
        print(f"streamdehaze: {result.frames} {unit} in {result.seconds:.2f} s ({rate}{extra}) with {args.model} -> "
              f"{mask(output, args.output)}", file=sys.stderr)
    return 0

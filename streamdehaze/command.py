"""The command line's work, behind ``cli.main``: options (each checked: one line and exit 2 for a mistake), the
run, and its summary. Heavy imports live here so that the entry point stays light."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import tqdm

from . import __version__, hwaccel
from .api import process
from .credentials import mask
from .engine import resolve_device
from .errors import UsageError
from .images import dehaze_images, image_engine, is_image
from .live import LiveOptions, LiveSource, is_live
from .models import MODEL_NAMES, create_model, default_model
from .outputs import atomic_output
from .pipeline import RunResult
from .sources import VideoFileSource
from .stats import Reporter, RunStats
from .tuning import tuned

log = logging.getLogger("streamdehaze")

DAY = 86400.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(f"{message} (see streamdehaze --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="streamdehaze", description="Dehaze a video, an image, or a folder of images.")
    p.add_argument("input", help="video file or URL, image, or folder of images")
    p.add_argument("output", help="video file, image, or folder (for a folder input)")
    p.add_argument("--model", default="auto",
                   help=f"dehazing model: {', '.join(MODEL_NAMES)} (default: auto = the best model shipped for the "
                        "device: KA_Net where its weights ship with the package, else dcp)")
    p.add_argument("--weights", type=Path, help="weights file for models that take them")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--batch", type=_number(int, "a whole number", 1, 256), metavar="N",
                   help="frames per model call, 1 to 256 (default: 4 for files, 1 for live streams)")
    p.add_argument("--infer-size", type=parse_infer_size, default="auto", metavar="N|full|auto",
                   help="run the model with the short side at N pixels (16 to 16384) and transfer the result to "
                        "full resolution by guided upsampling; full = native resolution (default: auto = per model "
                        "and device for video, native for images)")
    p.add_argument("--compile", action="store_true",
                   help="compile the model with torch.compile: a slow start (a minute or more), then faster frames "
                        "where the device gains from it")
    p.add_argument("--hwaccel", default="auto", choices=hwaccel.MODES,
                   help="NVDEC decoding and NVENC encoding: auto = when the model runs on CUDA and they work, "
                        "else software; cuda = required (default: auto)")
    p.add_argument("--temporal", default="ema", choices=["off", "ema"],
                   help="smooth flicker between frames, gated by motion, reset on scene cuts (default: ema)")
    p.add_argument("--temporal-strength", type=_number(float, "a number", 0, 1, high_inclusive=False), default=0.6,
                   metavar="S", help="weight of the past in [0, 1) (default: 0.6)")
    p.add_argument("--codec", default="libx264", help="video encoder (default: libx264)")
    p.add_argument("--crf", type=_number(int, "a whole number", -math.inf), metavar="N",
                   help="constant quality: 0-51 for x264/x265, 0-63 for vp9/av1 (default: 18)")
    p.add_argument("--preset", metavar="P",
                   help="encoder speed: x264/x265's ultrafast .. placebo, SVT-AV1's 0 .. 13 (default: veryfast for "
                        "x264/x265)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first corrupt packet of the input (default: skip corrupt packets and count them)")
    p.add_argument("--max-frames", type=_positive, metavar="N", help="stop after N frames")
    p.add_argument("--duration", type=_seconds(math.inf), metavar="SECONDS",
                   help="stop after this much video (or live time)")
    live = p.add_argument_group("live sources (rtsp://, rtmp://, srt://, udp://, http(s) streams, /dev/videoN)")
    live.add_argument("--timeout", type=_seconds(DAY), default=5.0, metavar="SECONDS",
                      help="give up a read or connection attempt after this long without data (default: 5)")
    live.add_argument("--reconnect", type=_reconnects, default=math.inf, metavar="N|inf",
                      help="reconnection attempts after a failure or end of stream (default: inf)")
    live.add_argument("--rtsp-transport", default="tcp", choices=["tcp", "udp", "udp_multicast", "http", "https"],
                      help="RTSP transport (default: tcp)")
    live.add_argument("--max-latency", type=_seconds(DAY), default=1.0, metavar="SECONDS",
                      help="drop frames older than this rather than fall behind (default: 1)")
    live.add_argument("--segment-time", type=_seconds(DAY), metavar="SECONDS",
                      help="split the output file into segments of about this length (NAME_00000.mp4, ...); a new "
                           "run continues after the highest number already there")
    live.add_argument("--metrics-port", type=_number(int, "a port number", 1, 65535), metavar="PORT",
                      help="serve Prometheus metrics on 127.0.0.1:PORT")
    p.add_argument("--stats-json", type=Path, metavar="FILE",
                   help="write run statistics as JSON (live sources: one JSON line a second)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary; errors only")
    p.add_argument("--version", action="version", version=f"streamdehaze {__version__}")
    return p


def _number(cast: Callable[[str], float], what: str, low: float, high: float = math.inf,
            low_inclusive: bool = True, high_inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type: ``cast(text)``, finite, from ``low`` to ``high`` (each bound inclusive unless told)."""
    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number: {text}")
        if value < low or (value == low and not low_inclusive):
            raise argparse.ArgumentTypeError(f"must be {'at least' if low_inclusive else 'more than'} {low:g}: {text}")
        if value > high or (value == high and not high_inclusive):
            raise argparse.ArgumentTypeError(f"must be {'at most' if high_inclusive else 'less than'} {high:g}: {text}")
        return value
    return parse


def _seconds(high: float) -> Callable[[str], float]:
    return _number(float, "a number of seconds", 0, high, low_inclusive=False)


_positive = _number(int, "a whole number", 1)
_attempts = _number(int, "a number of attempts or 'inf'", 0)


def _reconnects(text: str) -> float:
    return math.inf if text in ("inf", "infinite", "forever") else float(_attempts(text))


def parse_infer_size(text: str) -> int | str | None:
    if text == "full":
        return None
    if text == "auto":
        return "auto"
    return _infer_size(text)


_infer_size = _number(int, "a size in pixels, 'full' or 'auto'", 16, 16384)


def run(argv: list[str]) -> int:
    """Parse ``argv`` and run; errors are raised for ``cli.main`` to report."""
    av.logging.set_level(None)  # FFmpeg's own messages would bury ours; errors reach us as exceptions
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # likewise OpenCV's, for damaged images
    args = build_parser().parse_args(argv)
    log.setLevel(logging.ERROR if args.quiet else logging.INFO)
    return _run(args)


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

"""Batch benchmark: ``python -m streamdehaze.bench_batch [--files 6] [--model auto] [--ray] [--input FILE]``.

Dehazes a folder of ``--files`` copies of the bundled sample (640x360, 132 frames, with audio; or ``--input``) with
``streamdehaze batch``, once with 1 file and once with all of them, for each way of running it: ``--jobs`` 1, 2 and
3 on this machine and, with ``--ray``, 1 and 2 workers on a throw-away local Ray instance. From the two runs it
separates the fixed cost (start-up: imports, model load, Ray's workers) from the steady cost per file, and prints
both, the throughput, and each way's speed-up over one file at a time. Every command is a fresh process, timed
from start to exit.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

from .errors import MediaError, StreamDehazeError, UsageError
from .sample import benchmark_input


def _run(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return seconds


def at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:  # (the fixed cost is the difference between one file and this many)
        raise argparse.ArgumentTypeError(f"must be at least 2, not {value}")
    return value


def clip_facts(clip: Path) -> tuple[int, int, int]:
    """Frames (packets of its video stream, not decoded: quick), width and height of ``clip``."""
    if clip.is_dir():
        raise UsageError(f"input {clip} is a folder: give a video file")
    if not clip.is_file():
        raise UsageError(f"input not found: {clip}")
    try:
        with av.open(str(clip)) as container:
            video = container.streams.best("video")
            if video is None:
                raise UsageError(f"no video stream in {clip}")
            frames = sum(1 for packet in container.demux(video) if packet.size)
            width, height = video.codec_context.width, video.codec_context.height
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"cannot read {clip}: {exc.strerror or exc}") from None
    if not frames:
        raise MediaError(f"no video frames in {clip}")
    return frames, width, height


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streamdehaze.bench_batch",
                                description="Fixed cost and cost per file of streamdehaze batch: worker processes "
                                            "and, with --ray, Ray workers.")
    p.add_argument("--input", type=Path, metavar="FILE",
                   help="the clip to copy into the batch (default: the bundled sample, in a checkout of the "
                        "repository)")
    p.add_argument("--files", type=at_least_two, default=6, help="files in the big batch, at least 2 (default: 6)")
    p.add_argument("--model", default="auto", help="the model, as the command line's --model (default: auto)")
    p.add_argument("--ray", action="store_true", help="also 1 and 2 workers on a local Ray instance")
    args = p.parse_args(argv)
    try:
        clip = benchmark_input(args.input)
        frames, width, height = clip_facts(clip)
    except StreamDehazeError as exc:
        print(f"streamdehaze: error: {exc}", file=sys.stderr)
        return exc.exit_code
    modes = [("jobs 1", ["--jobs", "1"]), ("jobs 2", ["--jobs", "2"]), ("jobs 3", ["--jobs", "3"])]
    if args.ray:
        modes += [("ray, 1 worker", ["--ray", "local", "--workers", "1"]),
                  ("ray, 2 workers", ["--ray", "local", "--workers", "2"])]
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        folders = {}
        for count in (1, args.files):
            folder = Path(tmp) / f"in{count}"
            folder.mkdir()
            for i in range(count):
                shutil.copy(clip, folder / f"clip{i:03d}{clip.suffix}")
            folders[count] = folder
        print(f"{args.files} files of {frames} frames ({width}x{height}), model {args.model}")
        print(f"{'mode':<16}{'1 file s':>10}{'N files s':>11}{'fixed s':>9}{'per file s':>12}{'fps':>8}"
              f"{'speed-up':>10}")
        base = None
        for label, extra in modes:
            times = {}
            for count, folder in folders.items():
                out = Path(tmp) / f"out-{label.replace(' ', '_').replace(',', '')}-{count}"
                cmd = [sys.executable, "-m", "streamdehaze", "batch", str(folder), str(out), "--model", args.model,
                       "--quiet", *extra]
                times[count] = _run(cmd)
                shutil.rmtree(out)
            per_file = (times[args.files] - times[1]) / (args.files - 1)
            fixed = times[1] - per_file
            base = base or per_file
            print(f"{label:<16}{times[1]:>10.2f}{times[args.files]:>11.2f}{fixed:>9.2f}{per_file:>12.2f}"
                  f"{frames / per_file:>8.1f}{base / per_file:>9.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time the data side of training on this machine: haze synthesis, clip rendering, pseudo-depth.

    python -m training.benchmark [--threads 1] [--repeat 10]

Prints one line per measurement (median milliseconds per call). Training step times are in a run's log.jsonl.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from training.cli import run_main
from training.clips import clip_margin, make_clips
from training.depth import pseudo_depth
from training.synthesis import synthesize_haze

__all__ = ["main"]


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 192, 192, generator=g)
    depth = pseudo_depth(images)
    side = 160 + 2 * clip_margin(2, 160)
    windows = torch.rand(6, 3, side, side, generator=g)
    window_depth = pseudo_depth(windows)
    photo = torch.rand(1, 3, 320, 480, generator=g)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU")
    cases = {
        "synthesize_haze 8 x 192x192 (given depth)": lambda: synthesize_haze(images, g, depth=depth),
        "make_clips 6 clips x 2 frames x 160x160": lambda: make_clips(windows, window_depth, 2, 160, g),
        "pseudo_depth 1 x 320x480 (cache build)": lambda: pseudo_depth(photo),
    }
    for name, fn in cases.items():
        print(f"{name:<44} {_median_ms(fn, args.repeat):7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

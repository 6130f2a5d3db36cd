"""Embedding benchmark: ``python -m streamdehaze.bench_dehazer [--streams 1 2 4] [--model auto] [--size 360p]``.

N camera loops, each in its own thread calling a ``Dehazer`` frame by frame as fast as it can, for a few seconds:
once as N streams of one ``Dehazer`` (``stream()``: one model, calls that meet share a model call), once as N
separate ``Dehazer``s (a model each, every call alone). Prints the aggregate frames per second of each.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

from .api import Dehazer
from .bench import SIZES, at_least_one, one_line_errors, positive
from .options import Parser


def _clip(width: int, height: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 220, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    return [np.clip(base.astype(np.int16) + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
            for _ in range(4)]


def measure(dehazers: list[Dehazer], width: int, height: int, seconds: float) -> float:
    """Aggregate frames per second of one thread per dehazer, each looping over its own frames."""
    counts = [0] * len(dehazers)
    ready, stop = threading.Barrier(len(dehazers) + 1), threading.Event()

    def loop(i: int) -> None:
        frames = _clip(width, height, i)
        dehazers[i](frames[0])  # warm up
        ready.wait()
        while not stop.is_set():
            dehazers[i](frames[counts[i] % len(frames)])
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(dehazers))]
    for t in threads:
        t.start()
    ready.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


@one_line_errors
def main() -> None:
    p = Parser(prog="python -m streamdehaze.bench_dehazer",
               description="Dehazer streams in threads sharing model calls, against a Dehazer each.")
    p.add_argument("--streams", type=at_least_one, nargs="+", default=[1, 2, 4], metavar="N",
                   help="numbers of streams (default: 1 2 4)")
    p.add_argument("--model", default="auto", help="the model, as the command line's --model (default: auto)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--size", default="360p", choices=list(SIZES), help="frame size (default: 360p)")
    p.add_argument("--seconds", type=positive, default=8.0, help="run length per measurement (default: 8)")
    args = p.parse_args()
    width, height = SIZES[args.size]
    print(f"# {args.size} frames, model {args.model}, device {args.device}, {args.seconds:g} s each; aggregate fps")
    print(f"{'streams':>7} {'one model, shared calls':>24} {'a Dehazer each':>15} {'ratio':>6}")
    for n in args.streams:
        first = Dehazer(args.model, device=args.device)
        shared = measure([first] + [first.stream() for _ in range(n - 1)], width, height, args.seconds)
        separate = measure([Dehazer(args.model, device=args.device) for _ in range(n)], width, height, args.seconds)
        print(f"{n:>7} {shared:>24.1f} {separate:>15.1f} {shared / separate:>6.2f}")


if __name__ == "__main__":
    sys.exit(main())

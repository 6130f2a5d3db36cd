"""Time the parts of a training step on this machine: haze synthesis, clip rendering, pseudo-depth and the
network's forward+backward in fp32 and under bf16 autocast.

    python -m training.benchmark [--threads 1] [--repeat 10] [--model kanet-t]

Prints one line per measurement (median milliseconds per call). Whole-step times are in a run's log.jsonl.
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
    parser = argparse.ArgumentParser(prog="python -m training.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per measurement")
    parser.add_argument("--model", default="kanet-t", help="also time a training step of this kanet model ('' to skip)")
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
    if args.model:
        import kanet

        model = kanet.create_model(args.model).train()
        x = torch.rand(12, 3, 160, 160, generator=g) * 2 - 1

        def step(dtype: torch.dtype | None) -> Callable[[], object]:
            def run() -> None:
                with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    y, _ = model(x)
                y.float().abs().mean().backward()
                model.zero_grad(set_to_none=True)
            return run

        cases[f"{args.model} forward+backward 12 x 160x160 fp32"] = step(None)
        cases[f"{args.model} forward+backward 12 x 160x160 bf16 autocast"] = step(torch.bfloat16)
    for name, fn in cases.items():
        print(f"{name:<56} {_median_ms(fn, args.repeat):7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

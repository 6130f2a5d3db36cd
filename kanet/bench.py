"""Benchmark: milliseconds per frame of ``kanet.dehaze`` for each configuration, size and precision mode.

Modes: ``fp32`` (plain), ``bf16-cl`` (CPU bf16 autocast + channels_last), ``bf16w-cl`` (weights held in bf16, no
autocast, channels_last), ``fp16-cl`` (fp16 autocast + channels_last; the CUDA default). Each row also gives the
GMACs and the largest deviation of the output from fp32 on the benchmark frame. Untrained weights unless
``--weights`` is given (speed does not depend on the values). Prints a Markdown table.

    python -m kanet.bench [--models kanet-t,kanet-s] [--sizes 256x256,1280x720] [--modes fp32,bf16-cl]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from .complexity import count_macs
from .inference import dehaze
from .model import MODEL_NAMES, KANet, create_model
from .weights import WeightsError, load_weights

MODES = ("fp32", "bf16-cl", "bf16w-cl", "fp16-cl")
DEFAULT_SIZES = "256x256,512x512,448x256,1280x720"  # WIDTHxHEIGHT; 448x256 is the real-time engine's working size


@dataclass
class Row:
    model: str
    size: str
    mode: str
    gmacs: float
    ms_median: float
    ms_min: float
    runs: int
    max_dev: float | None


def parse_size(text: str) -> tuple[int, int]:
    """``'1280x720'`` -> ``(720, 1280)`` (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (expected WIDTHxHEIGHT, e.g. 1280x720)") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return h, w


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _context(mode: str, device: torch.device):
    if mode == "bf16-cl":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if mode == "fp16-cl":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(model: KANet, rgb: torch.Tensor, mode: str, warmup: int, repeats: int, budget_s: float
              ) -> tuple[list[float], torch.Tensor]:
    """Per-frame times in ms (after ``warmup`` runs; at most ``repeats`` runs or ``budget_s`` seconds, at least
    one) and the last output."""
    device = rgb.device
    if mode == "bf16w-cl":
        model = copy.deepcopy(model).to(torch.bfloat16)
    channels_last = mode.endswith("-cl")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = rgb.contiguous(memory_format=fmt)
    times: list[float] = []
    with torch.inference_mode(), _context(mode, device):
        for _ in range(warmup):
            y = dehaze(model, x)
        _sync(device)
        start = time.perf_counter()
        while len(times) < repeats:
            t0 = time.perf_counter()
            y = dehaze(model, x)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
            if time.perf_counter() - start > budget_s:
                break
    model.to(memory_format=torch.contiguous_format)
    return times, y.float()


def run(models: list[str], sizes: list[tuple[int, int]], modes: list[str], device: torch.device, warmup: int,
        repeats: int, budget_s: float, weights: str | None, compile: bool = False) -> list[Row]:
    rows = []
    for name in models:
        model = load_weights(weights) if weights else create_model(name)
        model = model.to(device).eval()
        label = (model.config_name or name) + (" (compiled)" if compile else "")
        for h, w in sizes:
            rgb = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
            gmacs = count_macs(model, h, w) / 1e9
            ref = None
            for mode in modes:
                # A fresh compile per row: the warmup runs absorb the compilation.
                runner = torch.compile(model) if compile else model
                times, y = time_mode(runner, rgb, mode, max(warmup, 2 if compile else 0), repeats, budget_s)
                if mode == "fp32":
                    ref = y
                dev = None if ref is None or mode == "fp32" else float((y - ref).abs().max())
                row = Row(label, f"{w}x{h}", mode, gmacs, statistics.median(times), min(times), len(times), dev)
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


HEADER = ("| model | size (WxH) | mode | GMACs | ms/frame (median) | ms (min) | runs | fps | max abs dev. vs fp32 |\n"
          "|---|---|---|---:|---:|---:|---:|---:|---:|")


def format_row(r: Row) -> str:
    dev = "-" if r.max_dev is None else f"{r.max_dev:.1e}"
    return (f"| {r.model} | {r.size} | {r.mode} | {r.gmacs:.2f} | {r.ms_median:.1f} | {r.ms_min:.1f} | {r.runs} | "
            f"{1e3 / r.ms_median:.1f} | {dev} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kanet.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODEL_NAMES), help=f"comma list of {', '.join(MODEL_NAMES)}")
    p.add_argument("--weights", help="benchmark these weights instead (their configuration; --models ignored)")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma list of WIDTHxHEIGHT (default {DEFAULT_SIZES})")
    p.add_argument("--modes", help="comma list of fp32, bf16-cl, bf16w-cl, fp16-cl (default: fp32,bf16-cl on CPU; "
                                   "fp32,fp16-cl on CUDA)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    p.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's default)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs at most (default 20)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (fixed RFF mode) per row")
    p.add_argument("--budget-s", type=float, default=10.0,
                   help="stop repeating a row after this many seconds (at least one timed run; default 10)")
    args = p.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s]
        models = [m for m in args.models.split(",") if m]
        unknown = [m for m in models if m not in MODEL_NAMES]
        if unknown and not args.weights:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODEL_NAMES)}")
        if args.weights:
            models = [os.path.basename(args.weights)]
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                              "cpu" if args.device == "auto" else args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA is not available on this machine")
        default_modes = "fp32,fp16-cl" if device.type == "cuda" else "fp32,bf16-cl"
        modes = [m for m in (args.modes or default_modes).split(",") if m]
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ValueError(f"unknown mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}")
        if args.warmup < 0 or args.repeats < 1 or args.budget_s <= 0 or (args.threads is not None and args.threads < 1):
            raise ValueError("--warmup must be >= 0, --repeats and --threads >= 1, --budget-s > 0")
        if args.threads:
            torch.set_num_threads(args.threads)
    except (argparse.ArgumentTypeError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{cpu_name()}, {torch.get_num_threads()} threads")
    load = f"; load average {os.getloadavg()[0]:.2f} at start" if hasattr(os, "getloadavg") else ""
    print(f"KA_Net benchmark: {where}; torch {torch.__version__}{load}; kanet.dehaze per frame (batch 1), "
          f"warmup {args.warmup}, up to {args.repeats} runs or {args.budget_s:g} s per row\n")
    print(HEADER, flush=True)
    try:
        run(models, sizes, modes, device, args.warmup, args.repeats, args.budget_s, args.weights, args.compile)
    except (WeightsError, OSError, RuntimeError) as e:
        print(f"error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

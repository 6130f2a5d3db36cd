"""Soak benchmark: ``python -m streamdehaze.soak URL [--minutes 10] [-- extra CLI options]``.

Runs ``streamdehaze URL <tmp>/soak.mp4`` for the given time, samples the process's resident memory (VmRSS)
every ``--every`` seconds, and prints the samples, the growth after the first minute (warm-up: model, encoder
and decoder buffers), and the final stats line of the run.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streamdehaze.soak",
                                description="The memory of a live streamdehaze run over time.")
    p.add_argument("url", help="the live source to dehaze (rtsp://...)")
    p.add_argument("--minutes", type=float, default=10.0, help="how long to run (default: 10)")
    p.add_argument("--every", type=float, default=15.0, help="seconds between memory samples (default: 15)")
    p.add_argument("extra", nargs="*", help="further streamdehaze options (after --)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "soak.jsonl"
        cmd = [sys.executable, "-m", "streamdehaze", args.url, str(Path(tmp) / "soak.mp4"), "--quiet",
               "--stats-json", str(stats), *args.extra]
        proc = subprocess.Popen(cmd)
        start = time.monotonic()
        samples: list[tuple[float, float]] = []
        try:
            while time.monotonic() - start < args.minutes * 60 and proc.poll() is None:
                time.sleep(args.every)
                t, rss = time.monotonic() - start, rss_mib(proc.pid)
                samples.append((t, rss))
                print(f"{t:7.0f} s  RSS {rss:8.1f} MiB", flush=True)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # SIGINT may be ignored when this runs as a background job
                proc.wait(60)
        last = json.loads(stats.read_text().splitlines()[-1]) if stats.exists() else {}
    warm = [rss for t, rss in samples if t >= 60] or [rss for _, rss in samples]
    print(f"# {args.minutes:g} min: RSS after warm-up {warm[0]:.1f} MiB, at end {warm[-1]:.1f} MiB, "
          f"growth {warm[-1] - warm[0]:+.1f} MiB ({(warm[-1] - warm[0]) / warm[0] * 100:+.1f}%), "
          f"min {min(warm):.1f}, max {max(warm):.1f}; exit {proc.returncode}")
    print(f"# final stats: {json.dumps(last)}")
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Resident memory of one process whose GStreamer pipeline has N ``dehaze`` elements (cameras) with the same
settings: VmRSS once GStreamer and torch are loaded, VmRSS once every element has dehazed FRAMES frames, and VmHWM
(the peak). Run by the system Python, which GStreamer's Python plugin loader embeds:

    eval "$(python -m streamdehaze.gst --env)"
    /usr/bin/python3 scripts/gst-memory.py [--elements 4] [--frames 20] [--size 640x360] [--properties "model=dcp"]
    /usr/bin/python3 scripts/gst-memory.py --random kanet   # KA_Net at full width, freshly initialised weights
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst


def memory() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) // 1024 for name in ("VmRSS", "VmHWM")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=4)
    parser.add_argument("--frames", type=int, default=20, help="frames each element dehazes")
    parser.add_argument("--size", default="640x360", help="frame size, WxH")
    parser.add_argument("--properties", default="", help="the elements' properties, e.g. 'model=dcp'")
    parser.add_argument("--random", metavar="MODEL", help="a KA_Net configuration with fresh weights (none ship)")
    args = parser.parse_args()
    Gst.init(None)
    import kanet  # (and torch: loaded before the first figure, which is then the same for any number of elements)

    properties = args.properties
    with tempfile.TemporaryDirectory() as tmp:
        if args.random:
            weights = kanet.save_weights(kanet.create_model(args.random), Path(tmp) / f"{args.random}.safetensors")
            properties += f" model={args.random} weights={weights}"
        start = memory()
        width, height = args.size.split("x")
        pipe = Gst.parse_launch(" ".join(
            f"videotestsrc pattern={i % 20} num-buffers={args.frames} "
            f"! video/x-raw,format=I420,width={width},height={height} ! dehaze {properties} ! fakesink"
            for i in range(args.elements)))
        pipe.set_state(Gst.State.PLAYING)
        message = pipe.get_bus().timed_pop_filtered(600 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        end = memory()
        pipe.set_state(Gst.State.NULL)
    if message is None or message.type == Gst.MessageType.ERROR:
        raise SystemExit(f"no EOS: {message.parse_error()[0].message if message else 'timed out'}")
    said = f"{args.random}, fresh weights" if args.random else properties.strip() or "defaults"
    print(f"{args.elements} elements ({said}), {args.frames} frames of {args.size}: "
          f"RSS {start['VmRSS']} MiB at start, {end['VmRSS']} MiB at the end, peak {end['VmHWM']} MiB")


if __name__ == "__main__":
    main()

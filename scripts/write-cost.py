"""What writing outputs through ``outputs.WholeWrites`` costs against FFmpeg writing by name: the same 250 packets
of 720p H.264 remuxed into each container the product writes, best of three. Prints a row per container.

    python scripts/write-cost.py [FOLDER]   (FOLDER: where to write, default a temporary folder under /tmp)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from streamdehaze.outputs import WholeWrites

LIVE_MP4 = {"movflags": "+frag_keyframe+empty_moov+default_base_moof", "frag_duration": "1000000",
            "flush_packets": "1"}
CASES = [("fragmented MP4 (live)", "mp4", LIVE_MP4, ".mp4"), ("MP4 (file run)", "mp4", {}, ".mp4"),
         ("Matroska (live)", "matroska", {"cluster_time_limit": "1000", "flush_packets": "1"}, ".mkv"),
         ("MPEG-TS (live)", "mpegts", {"flush_packets": "1"}, ".ts")]


def make_source(path: Path) -> None:
    """250 frames of moving noise at high quality: large packets, as a busy camera's."""
    noise = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "10", "g": "25"}
        for i in range(250):
            frame = av.VideoFrame.from_ndarray(np.roll(noise, 7 * i, axis=1), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def remux(source: Path, target: Path, muxer: str, options: dict[str, str], whole: bool) -> float:
    began = time.perf_counter()
    file = WholeWrites(target, "wb") if whole else None
    with av.open(str(source)) as src, av.open(file or str(target), "w", format=muxer, options=options) as out:
        video = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is not None:
                packet.stream = video
                out.mux(packet)
    if file is not None:
        file.check()
        file.close()
    return time.perf_counter() - began


def main() -> None:
    p = argparse.ArgumentParser(prog="python scripts/write-cost.py",
                                description="What writing outputs through WholeWrites costs against FFmpeg writing "
                                            "by name, per container.")
    p.add_argument("folder", nargs="?", type=Path,
                   help="where to write (default: a temporary folder under /tmp); a temporary folder is made in it")
    args = p.parse_args()
    if args.folder is not None and not args.folder.is_dir():
        p.error(f"no folder {args.folder}")
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        source = folder / "source.mp4"
        make_source(source)
        megabytes = source.stat().st_size / 1e6
        print(f"# {megabytes:.1f} MB of 720p H.264, 250 packets, remuxed into {folder}; best of 3")
        print(f"{'container':24} {'by name ms':>11} {'WholeWrites ms':>15} {'MB/s':>6}")
        for label, muxer, options, suffix in CASES:
            target = folder / f"out{suffix}"
            best = {whole: min(remux(source, target, muxer, options, whole) for _ in range(3))
                    for whole in (False, True)}
            print(f"{label:24} {best[False] * 1e3:11.1f} {best[True] * 1e3:15.1f} {megabytes / best[True]:6.0f}")


if __name__ == "__main__":
    main()

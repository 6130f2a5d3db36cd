"""A camera whose clock jumps ahead within one connection (set by hand, or by a time server): the recording goes on
from its last frame, without a false gap of the jump's size. The camera is MPEG-TS over TCP on 127.0.0.1, sent at
its real pace."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import pytest

from tests.conftest import hazy_pattern

RATE = 25


def _ts(jump: float) -> bytes:
    """4 s of 25 fps video whose clock, after 2 s, jumps ``jump`` seconds ahead."""
    out = io.BytesIO()
    with av.open(out, "w", format="mpegts") as ts:
        stream = ts.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.options = {"tune": "zerolatency", "g": "5"}
        frames = [av.VideoFrame.from_ndarray(hazy_pattern(i, 160, 120), format="rgb24") for i in range(4 * RATE)]
        for i, frame in enumerate([*frames, None]):
            if frame is not None:
                frame.pts, frame.time_base = i, Fraction(1, RATE)
            for packet in stream.encode(frame):
                if packet.pts * packet.time_base >= 2:
                    shift = round(jump / packet.time_base)
                    packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                ts.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize("jump", [3600, 3])  # (3 s: less than the 5 s --timeout that a stall may last)
def test_a_camera_clock_that_jumps_ahead_leaves_no_false_gap(camera, cli, tmp_path, jump):
    out = tmp_path / "cam.mp4"
    run = cli(camera(_ts(jump)), out, "--model", "dcp", "--reconnect", 0, "--max-latency", 30)
    run.finish(60)  # (ends when the camera hangs up: no reconnects left)
    with av.open(str(out)) as recording:
        times = [f.pts * f.time_base for f in recording.decode(video=0)]
    steps = [b - a for a, b in zip(times, times[1:])]
    # (some of the first second goes to opening the stream)
    assert len(times) >= 50 and min(steps) > 0, run.stderr
    assert max(steps) < 1 and times[-1] - times[0] < 4, (max(steps), run.stderr)  # 4 s sent in 4 s, no hour

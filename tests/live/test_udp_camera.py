"""A UDP camera (MPEG-TS, at a constant rate, sent from a thread on 127.0.0.1 at its real pace) that sends garbage
for a while: the reconnection its silence causes listens through the garbage, and the camera is recorded again
within a second or two of its good data coming back, however long the connect timeout."""

from __future__ import annotations

import io
import random
import re
import socket
import threading
import time
from fractions import Fraction
from pathlib import Path

import av

from tests.conftest import free_port, hazy_pattern

RATE = 25
MUXRATE = 1_000_000  # bits/s, padded (a broadcast camera's constant rate)
DATAGRAM = 7 * 188


def _ts(seconds: int) -> bytes:
    """``seconds`` of 25 fps video, a key frame each second, as a constant-rate MPEG-TS."""
    out = io.BytesIO()
    with av.open(out, "w", format="mpegts", options={"muxrate": str(MUXRATE)}) as ts:
        stream = ts.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.options = {"tune": "zerolatency", "preset": "ultrafast", "g": str(RATE)}
        for i in range(seconds * RATE + 1):
            frame = None
            if i < seconds * RATE:
                frame = av.VideoFrame.from_ndarray(hazy_pattern(i, 160, 120), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, RATE)
            for packet in stream.encode(frame):
                ts.mux(packet)
    return out.getvalue()


class UdpCamera:
    """Sends ``data`` to ``port`` at its constant rate from a thread, from ``start()`` to ``stop()``; while ``garbage``
    is set, each datagram it would have sent is replaced by garbage (random bytes, one in three with TS sync bytes),
    while ``lost`` is set, none is sent (a link that loses everything)."""

    def __init__(self, data: bytes, port: int) -> None:
        self.data, self.port = data, port
        self.garbage, self.lost, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        rnd = random.Random(1)
        pause = DATAGRAM * 8 / MUXRATE
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            start = time.monotonic()
            for i, at in enumerate(range(0, len(self.data) - DATAGRAM + 1, DATAGRAM)):
                if self._stop.wait(max(start + i * pause - time.monotonic(), 0)):
                    return
                if self.lost.is_set():
                    continue
                datagram = self.data[at:at + DATAGRAM]
                if self.garbage.is_set():
                    datagram = (b"".join(b"\x47" + rnd.randbytes(187) for _ in range(7)) if rnd.random() < 0.33
                                else rnd.randbytes(DATAGRAM))
                sock.sendto(datagram, ("127.0.0.1", self.port))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def _record(cli, port: int, tmp_path):
    """The command recording the camera at ``port``, once it streams; returns the run and its output."""
    out, stats = tmp_path / "cam.mp4", tmp_path / "stats.jsonl"
    run = cli(f"udp://127.0.0.1:{port}?localaddr=127.0.0.1", out, "--model", "dcp", "--max-latency", 30,
              "--stats-json", stats)
    run.wait_streaming(stats, 25)
    return run, out


def _frame_times(path) -> list[float]:
    with av.open(str(path)) as recording:
        return [float(f.pts * f.time_base) for f in recording.decode(video=0)]


def test_a_udp_camera_is_recorded_again_soon_after_its_garbage_ends(cli, tmp_path):
    port = _udp_port()
    camera = UdpCamera(_ts(60), port)
    camera.start()
    try:
        run, out = _record(cli, port, tmp_path)
        camera.garbage.set()
        lost = time.monotonic()
        assert run.wait_line("reconnecting (attempt 1)", 30), run.stderr  # (after --timeout's 5 s)
        time.sleep(3)  # a reconnection listening through 3 s of garbage
        camera.garbage.clear()
        good = time.monotonic()
        back = run.wait_line("back after", 8)
        time.sleep(max(good + 8 - time.monotonic(), 0))  # 8 s of good video after the garbage
    finally:
        camera.stop()
    sent = time.monotonic() - good
    assert run.interrupt() == 0, run.stderr
    # Back within a second or two (about 1 s here), not at the end of the connect timeout's 10 s (FFmpeg's guess of
    # the format, made on the garbage, had settled on MPEG-PS, which finds no stream in MPEG-TS).
    assert back is not None and back - good < 4, run.stderr
    # The outage as it was, in the log and in the recording's timeline (both said 5 s less, the --timeout: the last
    # frame before the garbage came out only when the stall was seen, and was taken for on time).
    said = float(re.search(r"back after ([\d.]+) s without data", run.stderr).group(1))
    assert said > back - lost - 1.5, (said, back - lost, run.stderr)
    times = _frame_times(out)
    gaps = [b - a for a, b in zip(times, times[1:])]
    outage = gaps.index(max(gaps)) + 1
    assert abs(max(gaps) - said) < 0.5, (max(gaps), said, run.stderr)
    # The good video after the garbage is in the recording, all but its first moments (a key frame, the probe):
    # about 0.5 s of 8 here, none before (the reconnection came back after the camera had stopped).
    assert len(times) - outage >= (sent - 4) * RATE, (len(times) - outage, sent, run.stderr)


def test_a_short_loss_shows_as_a_gap_of_its_length(cli, tmp_path):
    """Everything lost for 3 s, less than ``--timeout`` (5 s): no reconnection, and the recording shows a gap as long
    as the loss, the frames after it in their place. (It showed none, and every later frame 3 s early: the frame
    before the loss comes out only with the data after it, which looked like a jump of the camera's clock.)"""
    port = _udp_port()
    camera = UdpCamera(_ts(40), port)
    camera.start()
    try:
        run, out = _record(cli, port, tmp_path)
        time.sleep(2)
        camera.lost.set()
        time.sleep(3)
        camera.lost.clear()
        time.sleep(4)
    finally:
        camera.stop()
    assert run.interrupt() == 0, run.stderr
    assert "reconnecting" not in run.stderr, run.stderr
    times = _frame_times(out)
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    # (up to a second more where the frames after the loss wait for a key frame)
    assert 2.5 < gaps[-1] < 4.5 and gaps[-2] < 0.5, (gaps[-3:], run.stderr)


def test_a_stop_while_a_silent_camera_is_dialled_again_ends_the_run_at_once(cli, tmp_path):
    """FFmpeg's dial of a UDP camera that sends nothing waits out the connect timeout and the probe's (20 s here),
    and nothing interrupts it: a Ctrl-C then waited for it. The run now ends at once, its recording whole."""
    port = _udp_port()
    out = tmp_path / "cam.mp4"
    run = cli(f"udp://127.0.0.1:{port}?localaddr=127.0.0.1", out, "--model", "dcp", "--max-latency", 30)
    deadline = time.monotonic() + 60
    while f":{port:04X} " not in Path("/proc/net/udp").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)  # (the camera's 3 s, sent before the run listens, would be lost)
    camera = UdpCamera(_ts(3), port)
    camera.start()
    try:
        assert run.wait_line("reconnecting (attempt 1)", 60), run.stderr  # (the camera silent for --timeout's 5 s)
        time.sleep(2)  # well into the dial
    finally:
        camera.stop()
    asked = time.monotonic()
    assert run.interrupt() == 0, run.stderr
    ended = time.monotonic() - asked
    assert ended < 5, (ended, run.stderr)
    assert "Traceback" not in run.stderr and len(_frame_times(out)) >= 2 * RATE, run.stderr

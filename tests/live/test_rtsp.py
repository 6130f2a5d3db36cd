"""Live runs against a real RTSP server on 127.0.0.1: read, reconnect, time out, bound latency, publish."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import av
import pytest

from streamdehaze.errors import MediaError
from streamdehaze.live import LiveOptions, LiveSource


def _times(path):
    with av.open(str(path)) as c:
        return [f.pts * f.time_base for f in c.decode(video=0)]


def test_read_live_stream_to_file(rtsp_server, cli, tmp_path):
    out, stats = tmp_path / "live.mp4", tmp_path / "stats.jsonl"
    run = cli(rtsp_server.url, out, "--duration", 4, "--stats-json", stats, "--max-latency", 5)
    assert run.finish() == 0, run.stderr
    times = _times(out)
    assert len(times) >= 10 and all(b > a for a, b in zip(times, times[1:]))
    lines = [json.loads(line) for line in stats.read_text().splitlines()]
    assert len(lines) >= 3 and lines[-1]["frames"] == len(times)
    # Every frame received from the camera was either written or counted as dropped.
    last = lines[-1]
    assert last["frames"] + last["dropped"] == last["received"] >= 40
    assert {"fps", "latency_p50_ms", "latency_p95_ms", "queue_depth", "dropped", "reconnects"} <= set(lines[-1])


def test_a_run_stopped_with_frames_waiting_counts_them_dropped(rtsp_server, cli, tmp_path):
    """Ctrl-C while the model is behind (kanet-t at full size): the frames still waiting for it are dropped frames,
    so that what the camera sent is written or counted, to the last frame."""
    out, stats = tmp_path / "live.mp4", tmp_path / "stats.jsonl"
    run = cli(rtsp_server.url, out, "--infer-size", "full", "--stats-json", stats)
    run.wait_streaming(stats, 10)
    assert run.interrupt() == 0, run.stderr
    last = json.loads(stats.read_text().splitlines()[-1])
    assert last["dropped"] > 0 and last["frames"] + last["dropped"] == last["received"], last


def test_reconnects_after_server_restart(rtsp_server, cli, tmp_path):
    out, stats = tmp_path / "live.mp4", tmp_path / "s.jsonl"
    run = cli(rtsp_server.url, out, "--timeout", 2, "--stats-json", stats)
    run.wait_streaming(stats)
    rtsp_server.stop()  # the camera goes away mid-stream ...
    assert run.wait_line("reconnecting (attempt 2)", 15) is not None, run.stderr  # refused at least once
    rtsp_server.start()  # ... and comes back on the same port
    run.wait_reconnected(stats)
    assert run.interrupt() == 0, run.stderr
    times = _times(out)  # playable, with frames from both connections
    assert all(b > a for a, b in zip(times, times[1:]))
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) >= 1  # the outage shows as a real gap in the timeline
    assert sum(1 for t in times if t > times[0] + max(gaps)) > 10
    assert ", 1 reconnects" in run.stderr  # one outage, however many attempts it took


def test_a_camera_down_at_the_start_is_said_when_it_answers(rtsp_server, cli, tmp_path):
    """Each failed dial was said ("retrying in ..."); that the camera answered at last was not, so a log read as
    though it never came."""
    rtsp_server.stop()
    out, stats = tmp_path / "late.mp4", tmp_path / "s.jsonl"
    run = cli(rtsp_server.url, out, "--model", "dcp", "--stats-json", stats)
    assert run.wait_line("retrying in", 30) is not None, run.stderr
    rtsp_server.start()
    assert run.wait_line("connected after", 30) is not None, run.stderr
    run.wait_streaming(stats)
    assert run.interrupt() == 0, run.stderr
    said = [line for line in run.stderr.splitlines() if "connected after" in line]
    assert len(said) == 1 and re.search(r": connected after \d+\.\d s \(attempt \d+\)$", said[0]), said


def test_frozen_server_times_out_and_recovers(rtsp_server, cli, tmp_path):
    out, stats = tmp_path / "live.mp4", tmp_path / "s.jsonl"
    run = cli(rtsp_server.url, out, "--timeout", 2, "--stats-json", stats)
    run.wait_streaming(stats)
    frozen_at = time.monotonic()
    rtsp_server.freeze()
    warned = run.wait_line("no data for 2 s; reconnecting (attempt 1)", 15)
    assert warned is not None, run.stderr
    assert warned - frozen_at <= 2 + 0.5  # --timeout, within half a second
    time.sleep(1)
    thawed_at = time.monotonic()
    rtsp_server.thaw()
    run.wait_reconnected(stats)
    assert run.interrupt() == 0, run.stderr
    times = _times(out)
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times[-1] - times[0] >= (thawed_at - frozen_at) + 2  # frames arrived after the thaw
    # The outage's end is logged with its length: the gap it left in the recording's timeline.
    back = re.search(r"back after ([\d.]+) s without data \(reconnect 1\)", run.stderr)
    assert back is not None, run.stderr
    gap = max(b - a for a, b in zip(times, times[1:]))
    assert abs(float(back.group(1)) - float(gap)) < 0.5


@pytest.fixture
def slow_answer(rtsp_server):
    """``slow_answer(delay)`` -> the test camera's URL through a proxy that holds its first answer on each connection
    ``delay`` seconds (a server that builds its pipeline for the first client)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                time.sleep(delay)
                delay = 0.0
                dst.sendall(data)
        for end in (src, dst):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def accept(delay: float) -> None:
        with contextlib.suppress(OSError):
            while True:
                client = listener.accept()[0]
                server = socket.create_connection(("127.0.0.1", rtsp_server.port))
                threading.Thread(target=pipe, args=(client, server, 0.0), daemon=True).start()
                threading.Thread(target=pipe, args=(server, client, delay), daemon=True).start()

    def start(delay: float) -> str:
        threading.Thread(target=accept, args=(delay,), daemon=True).start()
        return rtsp_server.url.replace(f":{rtsp_server.port}/", f":{listener.getsockname()[1]}/")
    yield start
    listener.close()


def test_a_camera_slow_to_answer_gets_10_s(slow_answer, cli, tmp_path):
    """--timeout (5 s) bounds a stall once frames flow; a connection gets max(timeout, 10 s) for its answer. The
    recording, and its --duration, start with the first frame, not with the dialling."""
    out = tmp_path / "live.mp4"
    run = cli(slow_answer(7), out, "--model", "dcp", "--reconnect", 0, "--duration", 3, "--max-latency", 5)
    assert run.finish() == 0, run.stderr
    times = _times(out)
    assert times[0] == 0 and times[-1] > 2, (times[0], times[-1])


class FakeCamera:
    """A TCP port on 127.0.0.1 that takes connections and answers each one's first request with ``reply`` and
    hangs up, or never answers (``reply=None``: a camera whose RTSP server hangs); ``dialled`` is set by the first
    connection."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply, self.dialled = reply, threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"rtsp://127.0.0.1:{self.listener.getsockname()[1]}/live"
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection = self.listener.accept()[0]
                self.connections.append(connection)
                self.dialled.set()
                if self.reply is not None:
                    with contextlib.suppress(OSError):
                        connection.recv(65536)
                        connection.sendall(self.reply)
                    connection.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # (wakes the accept; closing alone does not)
        self.listener.close()
        for connection in self.connections:
            connection.close()
        self.thread.join(5)


@pytest.fixture
def fake_camera():
    cameras: list[FakeCamera] = []

    def start(reply: bytes | None = None) -> FakeCamera:
        cameras.append(FakeCamera(reply))
        return cameras[-1]
    yield start
    for camera in cameras:
        camera.stop()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_the_first_dial_ends_the_run_at_once(fake_camera, cli, tmp_path, sig):
    """A camera that takes the connection and never answers: FFmpeg waits 10 s for its answer, then the run dials
    again, for ever. A signal meanwhile ends the run at once, with one line (PyAV used to lose it: the run went on
    dialling)."""
    camera = fake_camera()
    out = tmp_path / "live.mp4"
    run = cli(camera.url, out, "--model", "dcp")
    assert camera.dialled.wait(60), run.stderr
    time.sleep(0.5)
    sent = time.monotonic()
    run.proc.send_signal(sig)
    try:
        code = run.proc.wait(8)  # (before the dial's 10 s are over)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running 8 s after {sig.name}:\n{run.stderr}") from None
    ended = time.monotonic() - sent
    run.finish()
    assert code == 130, run.stderr
    assert run.stderr.splitlines()[-1] == "streamdehaze: interrupted", run.stderr
    assert "Traceback" not in run.stderr and ended < 3, (ended, run.stderr)
    assert not out.exists()


def test_a_camera_that_never_answers_is_said_so(fake_camera):
    """FFmpeg's RTSP demuxer gives "invalid data" when its wait for an answer is cut off: the run says what
    happened instead. A connection closed unanswered, or an answer in another protocol, was "Invalid data found
    when processing input" too: the message says what to check."""
    silent = fake_camera()
    with pytest.raises(MediaError, match=f"^cannot read live stream {re.escape(silent.url)}: no answer for 1 s$"):
        LiveSource(silent.url, LiveOptions(connect_timeout=1, reconnect=0))
    for camera in (fake_camera(b""), fake_camera(b"HTTP/1.0 200 OK, not RTSP at all\r\n\r\n")):
        said = (f"^cannot read live stream {re.escape(camera.url)}: nothing readable came back \\(closed unanswered, "
                r"or another protocol or format: check the URL's scheme and port\)$")
        with pytest.raises(MediaError, match=said):
            LiveSource(camera.url, LiveOptions(connect_timeout=5, reconnect=0))


def test_a_known_camera_that_never_answers_says_how_long_it_waited():
    """Once a camera's container format is known, FFmpeg's socket timeout and PyAV's each bound a part of the
    opening: a reconnection to a camera that takes the connection and sends nothing waits out both, and the message
    said half of it."""
    out = io.BytesIO()
    with av.open(out, "w", format="mpegts") as ts:
        stream = ts.add_stream("mpeg2video", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in [*(av.VideoFrame(64, 48, "yuv420p") for _ in range(25)), None]:
            for packet in stream.encode(frame):
                ts.mux(packet)
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def answer() -> None:
        with contextlib.suppress(OSError):  # (closed at the test's end)
            conn = server.accept()[0]
            with conn:
                conn.sendall(out.getvalue())  # the first connection: a second of video, then the end
            while True:
                held.append(server.accept()[0])  # later ones: taken, and never answered
    threading.Thread(target=answer, daemon=True).start()
    url = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    try:
        source = LiveSource(url, LiveOptions(timeout=1, connect_timeout=1, reconnect=1))
        with pytest.raises(MediaError, match=r"lost \(no answer for 2 s\); no reconnects left$"):
            for _ in source:
                pass
    finally:
        server.close()
        for conn in held:
            conn.close()


def test_the_reconnect_budget_is_for_each_outage(rtsp_server, cli, tmp_path):
    """A recording that runs for weeks with --reconnect 1 survives any number of outages that one attempt ends."""
    out, stats = tmp_path / "live.mp4", tmp_path / "s.jsonl"
    run = cli(rtsp_server.url, out, "--model", "dcp", "--timeout", 2, "--reconnect", 1, "--stats-json", stats)
    written = run.wait_streaming(stats)["frames"]
    for outage in (1, 2, 3):
        rtsp_server.freeze()
        deadline = time.monotonic() + 15
        while sum("reconnecting (attempt 1)" in line for _, line in list(run.lines)) < outage:
            assert time.monotonic() < deadline, run.stderr
            time.sleep(0.05)
        time.sleep(0.5)
        rtsp_server.thaw()  # the attempt under way gets its answer
        assert run.wait_line(f"without data (reconnect {outage})", 15) is not None, run.stderr
        written = run.wait_streaming(stats, written + 10)["frames"]
    assert run.interrupt() == 0, run.stderr
    assert "no reconnects left" not in run.stderr and "attempt 2" not in run.stderr
    assert ", 3 reconnects" in run.stderr and json.loads(stats.read_text().splitlines()[-1])["reconnects"] == 3


# Passwords with every character that breaks a naive URL parser, raw and percent-encoded, and the fragments of
# each that must never be shown (a raw '/' is refused up front: test_errors).
HOSTILE = [("Sec@ret@", ["Sec@", "ret@"]), ("pa%2Fss:w@rd", ["pa%2Fss", "pa/ss", "w@rd"]),
           ("my pass 100%", ["my pass", "100%"]),
           ("p%40ss%2Fw%20x%3A", ["p%40ss", "p@ss", "ss/w", "w x"])]


def _failing_run_and_its_metrics(cli, src: str, dst: str, stats: Path, metrics: int, reconnect: int):
    """A run from ``src`` (where nothing listens) to ``dst`` with its statistics and metrics; the metrics page as it
    was once the run's info was on it, and the run, ended (exit 1)."""
    run = cli(src, dst, "--model", "dcp", "--timeout", 1, "--reconnect", reconnect, "--stats-json", stats,
              "--metrics-port", metrics)
    body = ""
    while run.proc.poll() is None and "streamdehaze_info{" not in body:
        time.sleep(0.1)
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=2).read().decode()
        except OSError:
            continue
    assert run.finish(60) == 1
    return run, body


@pytest.mark.parametrize("password, fragments", HOSTILE)
def test_hostile_passwords_are_masked(port, metrics_port, cli, tmp_path, password, fragments):
    stats = tmp_path / "s.jsonl"
    src = f"rtsp://admin:{password}@127.0.0.1:{port}/cam"  # nothing listens there: every attempt fails
    dst = f"rtsp://pub:{password}@127.0.0.1:{port}/out"
    run, body = _failing_run_and_its_metrics(cli, src, dst, stats, metrics_port, reconnect=2)
    assert "rtsp://***@127.0.0.1" in run.stderr and run.stderr.count("retrying") == 2, run.stderr
    assert f'input="rtsp://***@127.0.0.1:{port}/cam"' in body and f'output="rtsp://***@127.0.0.1:{port}/out"' in body
    for shown in (run.stderr, stats.read_text(), body):
        assert "admin" not in shown and "pub:" not in shown
        assert not [f for f in fragments if f in shown], shown


def test_query_tokens_and_stream_keys_are_masked(port, metrics_port, cli, tmp_path):
    stats = tmp_path / "s.jsonl"
    src = f"rtsp://127.0.0.1:{port}/cam?channel=1&token=TOKSECRET&X-Api-Key=KEYSECRET"  # nothing listens there
    dst = f"rtmp://127.0.0.1:{port}/live2/abcd-STREAMKEY-1234"
    run, body = _failing_run_and_its_metrics(cli, src, dst, stats, metrics_port, reconnect=1)
    masked_src = f"rtsp://127.0.0.1:{port}/cam?channel=1&token=***&X-Api-Key=***"
    assert f"cannot read live stream {masked_src}: Connection refused" in run.stderr, run.stderr
    assert f'input="{masked_src}"' in body and f'output="rtmp://127.0.0.1:{port}/live2/***"' in body
    for shown in (run.stderr, stats.read_text(), body):
        assert "SECRET" not in shown and "STREAMKEY" not in shown, shown


def test_publish_to_rtsp_server(rtsp_server, port, tmp_path):
    """streamdehaze rtsp://cam rtsp://server/out: FFmpeg's own RTSP server mode (listen) receives it."""
    import subprocess
    import sys
    listener = subprocess.Popen([sys.executable, "-c", (
        "import av, sys\n"
        "src = av.open(sys.argv[1], options={'rtsp_flags': 'listen', 'listen_timeout': '60'})\n"
        "frames = sum(len(p.decode()) for p in src.demux(src.streams.video[0]) if p.size)\n"
        "print('received', frames)\n"), f"rtsp://127.0.0.1:{port}/out"], stdout=subprocess.PIPE, text=True)
    stats = tmp_path / "pub.jsonl"
    try:
        time.sleep(1.5)
        pub = subprocess.run([sys.executable, "-m", "streamdehaze", rtsp_server.url, f"rtsp://127.0.0.1:{port}/out",
                              "--duration", "6", "--quiet", "--stats-json", str(stats)],
                             capture_output=True, text=True, timeout=90)
        assert pub.returncode == 0, pub.stderr
        said, _ = listener.communicate(timeout=30)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    written = json.loads(stats.read_text().splitlines()[-1])["frames"]
    assert written >= 10
    assert said.strip() == f"received {written}"  # RTSP over TCP: every frame published arrives


class Listener:
    """A server to publish to: FFmpeg's RTSP server mode (one session), in its own process, reporting the first
    frame it decodes (whether a keyframe) and how many it got."""

    SCRIPT = ("import av, sys\n"
              "src = av.open(sys.argv[1], options={'rtsp_flags': 'listen', 'listen_timeout': '60'})\n"
              "n = 0\n"
              "for p in src.demux(src.streams.video[0]):\n"
              "    for f in p.decode():\n"
              "        n += 1\n"
              "        if n == 1:\n"
              "            print('first', 'key' if f.key_frame else 'delta', flush=True)\n"
              "print('received', n, flush=True)\n")

    def __init__(self, url: str) -> None:
        import subprocess
        import sys
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, url], stdout=subprocess.PIPE, text=True)

    def first(self) -> str:
        return self.proc.stdout.readline().strip()

    def received(self) -> int:
        said, _ = self.proc.communicate(timeout=30)
        return int(said.split()[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()


def test_publishing_waits_for_the_server_and_comes_back_after_a_restart(rtsp_server, port, cli, tmp_path):
    """A server not up yet is waited for; one that restarts mid-run ("Broken pipe") is dialled again, and the new
    session starts with a keyframe. The camera is read throughout; the run ends normally."""
    out = f"rtsp://127.0.0.1:{port}/out"
    listeners = []
    try:
        run = cli(rtsp_server.url, out, "--model", "dcp", "--duration", 14, "--stats-json", tmp_path / "s.jsonl")
        assert run.wait_line("reconnecting (attempt 1)", 20), run.stderr  # nothing listens yet: refused
        listeners.append(Listener(out))
        assert listeners[0].first() == "first key"
        assert run.wait_line("publishing after", 10), run.stderr
        time.sleep(2)
        listeners[0].stop()  # the server goes away
        assert run.wait_line("out: Broken pipe; reconnecting (attempt 1)", 10) or \
            run.wait_line("out: Connection reset by peer; reconnecting (attempt 1)", 1), run.stderr
        time.sleep(1)
        listeners.append(Listener(out))  # and comes back
        assert listeners[1].first() == "first key"
        assert run.wait_line("publishing again after", 10), run.stderr
        assert run.finish(60) == 0, run.stderr
        assert listeners[1].received() >= 50  # the rest of the run (25 fps)
        # Each outage counts its own frames; the summary and the statistics count them all.
        waiting = int(re.search(r"waiting for the server \((\d+) frames not published\)", run.stderr).group(1))
        restart = int(re.search(r"\((\d+) frames not published; reconnect 1\)", run.stderr).group(1))
        assert waiting > 0 and restart > 0
        assert f", {waiting + restart} not published, 1 output reconnects) with dcp -> {out}" in run.stderr
        last = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[-1])
        assert last["unpublished"] == waiting + restart and last["output_reconnects"] == 1
    finally:
        for listener in listeners:
            listener.stop()


def test_an_output_no_retry_can_mend_is_one_line(rtsp_server, cli):
    """An address FFmpeg cannot take (or a protocol it lacks) is not dialled again and again."""
    run = cli(rtsp_server.url, "tcp://127.0.0.1", "--model", "dcp")
    assert run.finish(60) == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "streamdehaze: error: cannot write tcp://127.0.0.1: Invalid argument"
    assert "reconnecting" not in run.stderr


def _frozen_publish(port: int, cli, *args: object):
    """A camera of noise (every frame large, so the server's buffers fill in seconds) published to a server that
    then hangs (SIGSTOP). Returns the run, the hung listener and the camera."""
    from tests.live.conftest import RtspServer, _need_gstreamer, free_port

    _need_gstreamer()
    camera = RtspServer(free_port(), pattern="snow")
    camera.start()
    listener = Listener(f"rtsp://127.0.0.1:{port}/out")
    time.sleep(1.5)
    run = cli(camera.url, f"rtsp://127.0.0.1:{port}/out", "--model", "dcp", "--crf", 10, *args)
    assert listener.first() == "first key"
    os.kill(listener.proc.pid, signal.SIGSTOP)  # the server hangs
    return run, listener, camera


def test_a_publish_target_that_hangs_is_dialled_again(port, cli):
    """A server that stops taking data (hung, or a network that drops everything): FFmpeg's RTSP muxer would wait
    for it for ever, through Ctrl-C and SIGTERM. After 10 s it is taken for lost and dialled again; the camera is
    read on meanwhile."""
    run, hung, camera = _frozen_publish(port, cli, "--duration", 40)
    again = None
    try:
        # (10 s without progress; under load the paused server's kernel still takes a little now and then, and
        # each bit taken starts the count again: 18.5 to 28.5 s were seen)
        assert run.wait_line("out: has taken no data for 10 s; reconnecting (attempt 1)", 50), run.stderr
        hung.stop()
        again = Listener(f"rtsp://127.0.0.1:{port}/out")
        assert again.first() == "first key"
        assert run.wait_line("publishing again after", 15), run.stderr
        time.sleep(3)  # (the stuck write returned as the hung server was killed: no second resumption follows)
        assert run.interrupt() == 0, run.stderr
        assert again.received() > 0
        # One outage: the stuck write that returns as the hung server is killed is not taken for a resumption.
        assert run.stderr.count("publishing again after") == 1 and "1 output reconnects)" in run.stderr, run.stderr
    finally:
        hung.stop()
        if again is not None:
            again.stop()
        camera.stop()


def test_a_paused_publish_target_goes_on_with_the_same_connection(port, cli):
    """A server that hangs for a while and comes back (paused, then resumed): the connection that was stuck goes on,
    and no other is dialled meanwhile (each would be stuck in turn, one more every outage)."""
    run, paused, camera = _frozen_publish(port, cli, "--duration", 45)
    try:
        assert run.wait_line("out: has taken no data for 10 s; reconnecting (attempt 1)", 50), run.stderr
        time.sleep(12)  # a dial would have been tried by now
        os.kill(paused.proc.pid, signal.SIGCONT)
        assert run.wait_line("publishing again after", 20), run.stderr
        time.sleep(3)
        assert run.interrupt() == 0, run.stderr
        # (the whole log where it fails: it failed in 2 full runs of about 10, never alone)
        assert "attempt 2" not in run.stderr and "reconnect 1)" in run.stderr, run.stderr
        assert paused.received() > 0  # the one session, to the end
    finally:
        paused.stop()
        camera.stop()


def test_a_publish_target_that_hangs_is_given_up_with_no_reconnects(port, cli):
    """``--reconnect 0``: the run ends with one line instead."""
    run, hung, camera = _frozen_publish(port, cli, "--reconnect", 0)
    try:
        assert run.finish(90) == 1, run.stderr
        said = run.stderr.strip().splitlines()[-1]
        assert said == f"streamdehaze: error: rtsp://127.0.0.1:{port}/out has taken no data for 10 s: gave up on it"
    finally:
        hung.stop()
        camera.stop()


def test_segments(rtsp_server, cli, tmp_path):
    out, stats = tmp_path / "cam.mp4", tmp_path / "s.jsonl"
    run = cli(rtsp_server.url, out, "--segment-time", 1, "--max-latency", 5, "--stats-json", stats)
    run.wait_streaming(stats, 5)
    time.sleep(4)
    assert run.interrupt() == 0, run.stderr
    written = json.loads(stats.read_text().splitlines()[-1])["frames"]
    segments = sorted(tmp_path.glob("cam_*.mp4"))
    assert len(segments) >= 3
    counts = [len(_times(seg)) for seg in segments]  # each one opens and decodes on its own
    assert all(counts) and sum(counts) == written


def test_a_camera_that_is_down_shows_no_latency(rtsp_server, metrics_port, cli, tmp_path):
    """Latency is of the frames written lately: a camera that went down must not go on showing its last figures."""
    from streamdehaze.stats import LATENCY_WINDOW_S
    stats = tmp_path / "s.jsonl"
    run = cli(rtsp_server.url, tmp_path / "cam.mp4", "--model", "dcp", "--timeout", 2, "--stats-json", stats,
              "--metrics-port", metrics_port)
    assert run.wait_streaming(stats, 10)["latency_p95_ms"] > 0
    rtsp_server.freeze()
    time.sleep(LATENCY_WINDOW_S + 5)  # (the last frame before a stall comes out when the read gives up, 2 s on)
    last = json.loads(stats.read_text().splitlines()[-1])
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    rtsp_server.thaw()
    assert run.interrupt() == 0, run.stderr
    assert last["fps"] == 0 and last["latency_p50_ms"] is None and last["latency_p95_ms"] is None, last
    assert "\nstreamdehaze_latency_p95_ms NaN\n" in body and "\nstreamdehaze_fps 0.0\n" in body


@pytest.mark.parametrize("host", [None, "127.0.0.2"])  # (all of 127/8 is this machine's loopback)
def test_metrics_endpoint(rtsp_server, port, cli, tmp_path, host):
    run = cli(rtsp_server.url, tmp_path / "m.mp4", "--metrics-port", f"{host}:{port}" if host else port,
              "--duration", 6)
    url = f"http://{host or '127.0.0.1'}:{port}/metrics"
    body = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "streamdehaze_frames " not in body:
        time.sleep(0.5)
        try:
            body = urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            continue
    if host:  # served on the address asked for, and on no other
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert run.finish() == 0, run.stderr
    assert "streamdehaze_frames " in body and "streamdehaze_latency_p95_ms" in body
    with pytest.raises(OSError):  # stopped with the run
        urllib.request.urlopen(url, timeout=2)

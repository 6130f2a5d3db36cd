"""An MJPEG camera over HTTP (``multipart/x-mixed-replace``, served from a thread on 127.0.0.1 at its real pace), as
many cheap IP cameras stream. Its frames carry no timestamps: FFmpeg numbers them at a rate it guesses (25 fps),
so a 10 fps camera was recorded 2.5 times too fast and a pause in its stream left no gap. They are now timed by
their arrival. A URL that gives one picture a request (a camera's snapshot) is not dialled hundreds of times a
second."""

from __future__ import annotations

import http.server
import threading
import time

import av
import cv2

from tests.conftest import hazy_pattern

RATE = 10


class MjpegCamera(http.server.ThreadingHTTPServer):
    """Streams JPEG frames at ``RATE`` to each client until ``stop()``; while ``paused`` is set it sends nothing."""

    daemon_threads = True

    def __init__(self) -> None:
        self.frames = [cv2.imencode(".jpg", hazy_pattern(i, 160, 120)[..., ::-1])[1].tobytes() for i in range(RATE)]
        self.paused, self.stopped = threading.Event(), threading.Event()
        super().__init__(("127.0.0.1", 0), _Stream)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/video"

    def stop(self) -> None:
        self.stopped.set()
        self.shutdown()
        self.server_close()
        self._thread.join(10)


class _Stream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        camera: MjpegCamera = self.server
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        due, i = time.monotonic(), 0
        try:
            while not camera.stopped.wait(max(due - time.monotonic(), 0)):
                due += 1 / RATE
                if camera.paused.is_set():
                    continue
                jpeg = camera.frames[i % RATE]
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                 % (len(jpeg), jpeg))
                self.wfile.flush()
                i += 1
        except OSError:  # the recorder hung up
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_an_mjpeg_camera_over_http_is_recorded_on_its_own_clock(cli, tmp_path):
    camera = MjpegCamera()
    out, stats = tmp_path / "cam.mp4", tmp_path / "stats.jsonl"
    try:
        run = cli(camera.url, out, "--model", "dcp", "--stats-json", stats)
        run.wait_streaming(stats, 5)
        time.sleep(2)
        camera.paused.set()  # 1.5 s without a frame: less than --timeout, so no reconnection
        time.sleep(1.5)
        camera.paused.clear()
        time.sleep(3)
        assert run.interrupt() == 0, run.stderr
    finally:
        camera.stop()
    assert "reconnecting" not in run.stderr, run.stderr
    with av.open(str(out)) as recording:
        times = [float(f.pts * f.time_base) for f in recording.decode(video=0)]
    steps = sorted(b - a for a, b in zip(times, times[1:]))
    # Frames 0.1 s apart, as they came (0.04 s before: the guessed 25 fps), steady (network jitter smoothed out) ...
    assert len(steps) > 40 and 0.095 < steps[len(steps) // 2] < 0.105, steps
    assert 0.07 < steps[len(steps) // 10] and steps[-2] < 0.15, steps
    # ... and the pause a gap as long (none before: the frames after it followed on at once).
    assert 1.4 < steps[-1] < 2.0, steps


class _Snapshot(http.server.BaseHTTPRequestHandler):
    """One JPEG a request, then the end of the response: a camera's snapshot URL."""

    def do_GET(self) -> None:
        self.server.requests += 1
        jpeg = self.server.jpeg
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(jpeg)))
        self.end_headers()
        self.wfile.write(jpeg)

    def log_message(self, *args: object) -> None:
        pass


def test_a_url_that_ends_after_each_picture_is_dialled_with_backoff(cli, tmp_path):
    """Each connection ends at once, so each is an outage: the backoff goes on from one to the next (0.5 s doubling
    to 10 s) where the camera came back for less than 2 s. (It was dialled again at once: about 240 times a
    second here, thousands of connections and log lines in a few seconds.)"""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Snapshot)
    server.requests, server.jpeg = 0, cv2.imencode(".jpg", hazy_pattern(0, 160, 120))[1].tobytes()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    out, stats = tmp_path / "cam.mp4", tmp_path / "stats.jsonl"
    try:
        run = cli(f"http://127.0.0.1:{server.server_address[1]}/snapshot", out, "--model", "dcp",
                  "--stats-json", stats)
        run.wait_streaming(stats, 1)
        time.sleep(5)
        assert run.interrupt() == 0, run.stderr
        requests = server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    # Dialled at about 0, 0.5, 1.5, 3.5 and 7.5 s.
    assert 3 <= requests <= 10, (requests, run.stderr[-2000:])
    assert "reconnecting (attempt 1) in 2.0 s" in run.stderr, run.stderr[-2000:]


def test_leaving_a_loop_over_a_camera_that_went_quiet_ends_at_once():
    """The run behind ``dehazed()`` saw the loop's end only at its next frame: left while the camera sent none, the
    loop's end waited for ever (the camera was dialled again and again)."""
    from streamdehaze import LiveOptions, dehazed

    camera, left = MjpegCamera(), threading.Event()

    def loop() -> None:
        for _ in dehazed(camera.url, model="dcp", live=LiveOptions(timeout=1.0)):
            camera.paused.set()
            time.sleep(1.0)  # the frames on their way arrive, then none
            break
        left.set()

    try:
        thread = threading.Thread(target=loop, daemon=True)
        began = time.monotonic()
        thread.start()
        thread.join(30)
        assert left.is_set(), "leaving the loop waited on the camera"
        assert time.monotonic() - began < 20
    finally:
        camera.stop()


def test_a_loop_over_a_camera_ends_when_its_stop_is_set_from_another_thread():
    from streamdehaze import LiveOptions, dehazed

    camera, stop, seen = MjpegCamera(), threading.Event(), []
    try:
        threading.Timer(3.0, stop.set).start()
        began = time.monotonic()
        for record in dehazed(camera.url, model="dcp", live=LiveOptions(timeout=1.0), stop=stop):
            seen.append(record.seconds)
        assert time.monotonic() - began < 20
        assert len(seen) >= 5 and seen == sorted(seen)
    finally:
        camera.stop()

"""A real RTSP server (GStreamer) on 127.0.0.1 for live tests: started on a free port, stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import default_interrupts, free_port

SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def _has_gstreamer() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                           capture_output=True)
    return probe.returncode == 0


class RtspServer:
    def __init__(self, port: int, paths: tuple[str, ...] = ("live",), size: tuple[int, int] = (320, 240),
                 pattern: str = "ball", audio: str | None = None) -> None:
        self.port, self.paths, self.size, self.pattern, self.audio = port, paths, size, pattern, audio
        self.url = f"rtsp://127.0.0.1:{port}/{paths[0]}"
        self.proc: subprocess.Popen | None = None

    def url_of(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path}"

    def start(self) -> None:
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), str(self.port), "--paths", ",".join(self.paths),
                                      "--width", str(self.size[0]), "--height", str(self.size[1]),
                                      "--pattern", self.pattern, *(("--audio", self.audio) if self.audio else ())],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        said = []  # GLib may print a warning first (its messages start with an empty line)
        while not said or "ready" not in said[-1]:
            line = self.proc.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError(f"RTSP server did not start: {''.join(said)}")
            said.append(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case a test froze it
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


def _need_gstreamer() -> None:
    if not _has_gstreamer():
        pytest.skip("GStreamer RTSP server not installed (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                    "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad)")


@pytest.fixture
def rtsp_server():
    _need_gstreamer()
    server = RtspServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rtsp_servers():
    """``rtsp_servers(n, paths)``: n servers on their own ports, each serving a camera at every path (160x120:
    several cameras in one process stay within this 2-core machine's budget); all are stopped after the test."""
    _need_gstreamer()
    servers: list[RtspServer] = []

    def start(n: int, paths: tuple[str, ...] = ("live",), size: tuple[int, int] = (160, 120)) -> list[RtspServer]:
        for _ in range(n):
            servers.append(RtspServer(free_port(), paths, size))
            servers[-1].start()
        return servers[-n:]
    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def port():
    return free_port()


@pytest.fixture
def metrics_port(port):
    while (other := free_port()) == port:
        continue
    return other


class Run:
    """The CLI in a subprocess, its stderr lines collected with their arrival times (``cli("serve", ...)`` for
    ``streamdehaze serve``)."""

    def __init__(self, *args: object) -> None:
        import sys
        import threading
        self.proc = subprocess.Popen([sys.executable, "-m", "streamdehaze", *map(str, args)],
                                     stderr=subprocess.PIPE, text=True, preexec_fn=default_interrupts)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip()))

    def wait_line(self, text: str, timeout: float) -> float | None:
        """Arrival time of the first stderr line containing ``text``, waiting up to ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, line in list(self.lines):
                if text in line:
                    return t
            if self.proc.poll() is not None and not self._reader.is_alive():
                return None
            time.sleep(0.05)
        return None

    def wait_streaming(self, stats: Path, frames: int = 5, timeout: float = 60, stream: str | None = None) -> dict:
        """Wait until the run's --stats-json lines (of ``stream``, for serve) show ``frames`` written; returns
        that line."""
        import json
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            if stats.exists():
                lines = [json.loads(line) for line in stats.read_text().splitlines() if line.endswith("}")]
                lines = [line for line in lines if stream is None or line.get("stream") == stream]
                if lines and lines[-1]["frames"] >= frames:
                    return lines[-1]
            time.sleep(0.1)
        raise AssertionError(f"the run never streamed {frames} frames{f' on {stream}' if stream else ''}:\n"
                             f"{self.stderr}")

    def wait_reconnected(self, stats: Path, frames: int = 20, timeout: float = 60) -> None:
        """Wait until ``frames`` frames of the connection after the first reconnection are written (those of the
        lost one may still be waiting for the model then)."""
        import json
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            lines = [json.loads(line) for line in stats.read_text().splitlines() if line.endswith("}")]
            back = next((line for line in lines if line["reconnects"] >= 1), None)
            if back is not None and lines[-1]["frames"] >= back["received"] + frames:
                return
            time.sleep(0.1)
        raise AssertionError(f"the run never wrote {frames} frames after a reconnection:\n{self.stderr}")

    def finish(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(5)
        return code

    def interrupt(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.finish()

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)


@pytest.fixture
def cli():
    runs: list[Run] = []

    def start(*args: object) -> Run:
        runs.append(Run(*args))
        return runs[-1]
    yield start
    for run in runs:  # never leave a run behind
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


@pytest.fixture
def camera():
    """``camera(data, connections=1)`` -> the URL of a TCP camera that sends ``data`` over 4 s, then closes; it
    answers that many connections, one after the other, then is gone (a connection is refused, rather than taken
    and never answered: a reconnection fails at once, not after the 10 s connect timeout). ``data`` a list: what
    each connection sends."""
    servers = []

    def serve(data: bytes | list[bytes], connections: int = 1) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)
        sent = data if isinstance(data, list) else [data] * connections

        def send() -> None:
            for i, data in enumerate(sent):
                try:
                    conn = server.accept()[0]
                except OSError:  # closed at the test's end
                    return
                if i == len(sent) - 1:
                    server.close()
                with conn:
                    chunk = 188 * 20
                    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
                    for piece in pieces:
                        conn.sendall(piece)
                        time.sleep(4.0 / len(pieces))
        threading.Thread(target=send, daemon=True).start()
        return f"tcp://127.0.0.1:{server.getsockname()[1]}"
    yield serve
    for server in servers:
        server.close()

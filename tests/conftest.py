"""Shared fixtures: media generated with PyAV, and paths to the shared data (skipped when absent)."""

from __future__ import annotations

import fcntl
import io
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def default_interrupts() -> None:
    """For a child process (``preexec_fn``): Ctrl-C and SIGHUP get their default meaning even where the test runner
    ignores them (a background job ignores SIGINT, ``nohup`` SIGHUP), so that tests can send them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def unread_in_pipe(fd: int) -> int:
    """Bytes written to a pipe and not yet read (``fd``: either end)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, bytes(4)))[0]


@pytest.fixture
def sighup_delivered():
    """SIGHUP with its default meaning in this process for the test (under ``nohup`` it is ignored, and a run
    in-process would keep ignoring it)."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGHUP, previous)


def realtime_threads() -> list[int]:
    """The threads of this process scheduled real-time (SCHED_FIFO or SCHED_RR)."""
    found = []
    for name in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(name)) & ~os.SCHED_RESET_ON_FORK in (os.SCHED_FIFO, os.SCHED_RR):
                found.append(int(name))
        except OSError:  # (ended meanwhile)
            pass
    return found


_WATCH_SCHEDULING = sys.platform == "linux" and not realtime_threads()  # (a run started under chrt is left be)


@pytest.fixture(autouse=True)
def no_thread_left_real_time():
    """A test that leaves a thread of the test process real-time fails, naming itself, and the thread is put back.
    SVT-AV1 run as root did it: on two cores the real-time threads starved every later test of that worker, and
    the run hung past every timeout."""
    yield
    if _WATCH_SCHEDULING and (raised := realtime_threads()):
        for tid in raised:
            try:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                pass
        pytest.fail(f"the test left {len(raised)} thread(s) of the test process real-time")


def hazy_pattern(i: int, width: int, height: int) -> np.ndarray:
    """A moving colourful scene under haze that thickens towards the top: RGB uint8 [H, W, 3]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.stack([
        0.5 + 0.5 * np.sin((xx + 3 * i) / 9.0),
        0.5 + 0.5 * np.sin((yy - 2 * i) / 7.0 + 1.0),
        0.5 + 0.5 * np.cos((xx + yy + 5 * i) / 13.0),
    ], -1) * 0.8
    t = (0.25 + 0.7 * yy / max(height - 1, 1))[..., None]
    hazy = scene * t + 0.85 * (1 - t)
    return (hazy * 255).round().astype(np.uint8)


def write_video(path: Path, *, frames: int = 12, width: int = 96, height: int = 64, rate: int = 25,
                pts: list[int] | None = None, time_base: Fraction = Fraction(1, 12800),
                codec: str = "libx264", pix_fmt: str = "yuv420p", audio: bool = False,
                subtitles: bool = False, rotation: int = 0, options: dict | None = None,
                colour: dict[str, int] | None = None, gop: int | None = None) -> dict:
    """Write a test video; returns what was written (pts, audio packet payloads, ...). ``colour``: codec context
    tags (``color_trc``, ``color_primaries``, ``colorspace``). ``gop``: frames from one keyframe to the next."""
    if pts is None:
        step = int(1 / (rate * time_base))
        pts = [i * step for i in range(frames)]
    written: dict = {"pts": pts, "time_base": time_base, "audio": [], "subtitles": []}
    with av.open(str(path), "w", options=options or {}) as oc:
        v = oc.add_stream(codec, rate=rate)
        v.width, v.height, v.pix_fmt = width, height, pix_fmt
        v.time_base = time_base
        v.codec_context.time_base = time_base
        if rotation:
            v.set_display_rotation(rotation)
        for tag, value in (colour or {}).items():
            setattr(v.codec_context, tag, value)
        if gop:
            v.codec_context.gop_size = gop
        a = oc.add_stream("aac", rate=48000, layout="mono") if audio else None
        s = oc.add_mux_stream("subrip" if path.suffix == ".mkv" else "mov_text") if subtitles else None
        duration = float((pts[-1] + pts[1] - pts[0]) * time_base) if len(pts) > 1 else 0.04
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(hazy_pattern(i, width, height), format="rgb24")
            frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = p, time_base
            for packet in v.encode(frame):
                oc.mux(packet)
        for packet in v.encode(None):
            oc.mux(packet)
        if a is not None:
            t = np.arange(int(48000 * duration)) / 48000.0
            samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for start in range(0, samples.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]),
                                                   format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, start
                for packet in a.encode(chunk):
                    oc.mux(packet)
            for packet in a.encode(None):
                oc.mux(packet)
        if s is not None:
            for k in range(3):
                text = f"fog line {k}".encode()
                packet = av.Packet(text if path.suffix == ".mkv" else len(text).to_bytes(2, "big") + text)
                packet.stream, packet.time_base = s, Fraction(1, 1000)
                packet.pts = packet.dts = int(k * duration * 300)
                packet.duration = 200
                oc.mux(packet)
    return written


def read_video(path: Path) -> dict:
    """Decoded facts of a video: frame times, count, size, rotation, copy-stream packet payloads."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        info = {"times": [f.pts * f.time_base for f in frames], "count": len(frames),
                "size": (frames[0].width, frames[0].height) if frames else None,
                "rotation": frames[0].rotation if frames else 0,
                "pix_fmt": frames[0].format.name if frames else None,
                "rgb": [f.to_ndarray(format="rgb24") for f in frames]}
    with av.open(str(path)) as c:
        info["audio"] = [bytes(p) for p in c.demux(*c.streams.audio) if p.size] if c.streams.audio else []
    with av.open(str(path)) as c:
        info["subtitles"] = [bytes(p) for p in c.demux(*c.streams.subtitles) if p.size] if c.streams.subtitles else []
    return info


def with_damaged_sound(ts: bytes, which: int) -> bytes:
    """MPEG-TS ``ts`` with its ``which``-th AAC packet (from 1) cut to its 7-byte ADTS header, as a bad sector or a
    lost datagram leaves it."""
    out = io.BytesIO()
    with av.open(io.BytesIO(ts)) as ic, av.open(out, "w", format="mpegts") as oc:
        streams = {s.index: oc.add_stream_from_template(s) for s in ic.streams}
        sound = 0
        for packet in ic.demux():
            if packet.dts is None:
                continue
            stream = streams[packet.stream.index]
            if stream.type == "audio" and (sound := sound + 1) == which:
                short = av.Packet(bytes(packet)[:7])
                short.pts, short.dts, short.time_base = packet.pts, packet.dts, packet.time_base
                packet = short
            packet.stream = stream
            oc.mux(packet)
    return out.getvalue()


def sound_that_changes() -> bytes:
    """4 s of MPEG-TS at 25 fps whose 440 Hz AAC tone goes on 2.1 s in at another rate and layout, 44.1 kHz stereo
    then 48 kHz mono, its times running on: a recorder or camera reconfigured, or files joined (cat a.ts b.ts)."""
    parts = []
    for part, (rate, layout) in enumerate([(44100, "stereo"), (48000, "mono")]):
        data = io.BytesIO()
        with av.open(data, "w", format="mpegts") as oc:
            video = oc.add_stream("libx264", rate=25, options={"bf": "0"})  # (no time below 0 to move the part by)
            video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
            audio = oc.add_stream("aac", rate=rate, layout=layout)
            for i in range(50 * part, 50 * part + 50):
                frame = av.VideoFrame.from_ndarray(hazy_pattern(i, 96, 64), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, 25)
                oc.mux(video.encode(frame))
            oc.mux(video.encode(None))
            # (AAC's priming packet comes 1024 samples ahead of the sound: the first part's at 0, the second's after
            # the first part's end, about 2.04 s)
            first, end = (round(2.1 * rate), 4 * rate) if part else (1024, 2 * rate)
            samples = np.arange(first, end)
            tone = (0.2 * np.sin(2 * np.pi * 440 * samples / rate)).astype(np.float32)
            channels = av.AudioLayout(layout).nb_channels
            for start in range(0, len(tone), 1024):
                chunk = np.ascontiguousarray(np.tile(tone[start:start + 1024], (channels, 1)))
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = rate, first + start, Fraction(1, rate)
                oc.mux(audio.encode(frame))
            oc.mux(audio.encode(None))
        parts.append(data.getvalue())
    return b"".join(parts)


def decoded_sound(path: Path) -> tuple[list[tuple[Fraction, int, str, np.ndarray]], int, str]:
    """The decoded sound of a file: (time, rate, layout, first channel) of each frame, and its header's rate and
    layout."""
    with av.open(str(path)) as c:
        audio = c.streams.audio[0]
        frames = [(f.pts * f.time_base, f.sample_rate, f.layout.name, f.to_ndarray()[0]) for f in c.decode(audio)]
        return frames, audio.sample_rate, audio.layout.name


def pitch(frames: list[tuple[Fraction, int, str, np.ndarray]], start: float, end: float) -> float:
    """The loudest frequency of the sound between ``start`` and ``end`` seconds, at the rate it decodes at."""
    rate = next(r for t, r, _, _ in frames if t >= start)
    sound = np.concatenate([x for t, r, _, x in frames if start <= t < end and r == rate])
    return np.argmax(np.abs(np.fft.rfft(sound * np.hanning(len(sound))))) * rate / len(sound)


@pytest.fixture
def make_video(tmp_path: Path):
    def make(name: str = "in.mp4", **kwargs) -> Path:
        path = tmp_path / name
        write_video(path, **kwargs)
        return path
    return make


@pytest.fixture(scope="session")
def _long_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "in.mp4"
    write_video(path, frames=1500, width=320, height=240)
    return path


@pytest.fixture
def long_video(_long_video: Path, tmp_path: Path) -> Path:
    """``tmp_path/in.mp4``: 1500 frames at 320x240, a run long enough to stop midway (made once a session)."""
    return Path(shutil.copy(_long_video, tmp_path / "in.mp4"))


@pytest.fixture
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is not present")
    return data


@pytest.fixture
def probe():
    """``probe(path)`` -> the decoded facts of a video (see ``read_video``)."""
    return read_video


@pytest.fixture
def decodable():
    """``decodable(path)`` -> the times of every frame that decodes (see ``decodable_times``)."""
    return decodable_times


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process: ``run_cli(*args) -> (exit code, stderr)``."""
    from streamdehaze.cli import main

    def run(*args: object) -> tuple[int, str]:
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err
    return run


@pytest.fixture
def hazy_image():
    """``hazy_image(i, width, height)`` -> RGB uint8 test scene under haze."""
    return hazy_pattern


def decodable_times(path: Path) -> list[Fraction]:
    """Times of every frame FFmpeg's decoder gets out of a damaged file, as its own tools decode it (frame
    threads, an undecodable packet skipped)."""
    times = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for packet in c.demux(stream):
            try:
                times += [f.pts * f.time_base for f in packet.decode()]
            except av.FFmpegError:
                continue
    return times


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """``small_filesystem(kib, files=None)`` -> a folder on a tmpfs of that size (holding at most ``files`` files),
    unmounted after the test; the test is skipped where this machine does not let it mount one (it takes root or
    CAP_SYS_ADMIN)."""
    mounts: list[Path] = []

    def mount(kib: int, files: int | None = None) -> Path:
        folder = tmp_path / f"small{len(mounts)}"
        folder.mkdir()
        options = f"size={kib}k" + ("" if files is None else f",nr_inodes={files + 1}")  # (+1: the folder's own)
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                  capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            pytest.skip("cannot mount a small filesystem: no mount command")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small filesystem here: {done.stderr.strip() or done.returncode}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", str(folder)], check=True, timeout=30)


@pytest.fixture
def media_tree(tmp_path: Path):
    """``media_tree(clips=2, frames=12)`` -> a folder for ``batch``: clips (the first with audio), one of them in a
    subfolder, a photo, a corrupt video and a text file. Returns the folder and the names a batch should write."""
    def make(clips: int = 2, frames: int = 12, width: int = 96, height: int = 64) -> tuple[Path, list[str]]:
        import cv2

        root = tmp_path / "in"
        (root / "sub").mkdir(parents=True)
        names = []
        for i in range(clips):
            name = f"sub/clip{i}.mkv" if i == clips - 1 else f"clip{i}.mp4"
            write_video(root / name, frames=frames, width=width, height=height, audio=i == 0)
            names.append(name)
        cv2.imwrite(str(root / "sub" / "photo.png"), hazy_pattern(3, 120, 80)[..., ::-1])
        names.append("sub/photo.png")
        (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 4)
        (root / "notes.txt").write_text("not media\n")
        return root, sorted(names)
    return make


# Ports the tests' servers take: below the ones the kernel hands out itself for bind(0) and outgoing connections
# (Linux: 32768 and up), so that no connection made meanwhile takes the port between the pick and the server's bind.
_TEST_PORTS = range(20000, 32000)
_pick = random.Random()


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port (TCP, or UDP with ``SOCK_DGRAM``) that nothing is bound to now. The tests run in two
    processes (pytest-xdist): each takes its own share of ``_TEST_PORTS``, so that they never pick the same one."""
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    mine = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    while True:
        port = _pick.choice(_TEST_PORTS[mine::processes])
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # (in use)
                continue
        return port


class RayCluster:
    """``ray start --head`` with ``cpus`` logical CPUs; ``env`` is what a driver needs to reach it."""

    def __init__(self, cpus: int = 4) -> None:
        # Short: Ray's socket paths live under it (a Unix socket path has at most 107 bytes).
        self.temp = Path(tempfile.mkdtemp(prefix="sdray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # The cluster's address on loopback (Ray otherwise picks the machine's), and a token: this Ray's GCS and raylet
        # still listen on every interface whatever --node-ip-address says, and the token is what keeps others out.
        self.env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
        ray_cli = Path(sys.executable).with_name("ray")
        self.proc = subprocess.Popen(
            [str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
             "--temp-dir", str(self.temp), "--num-cpus", str(cpus), "--include-dashboard", "false",
             "--disable-usage-stats"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        said = []
        while not any("Ray runtime started" in line for line in said):
            line = self.proc.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError(f"ray start failed: {''.join(said)[-2000:]}")
            said.append(line)

    def processes(self) -> list:
        """Every process of this cluster: its process group, and what those processes started (workers)."""
        import psutil

        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.pid) == self.proc.pid:
                    found.append(p)
                    found += p.children(recursive=True)
            except (ProcessLookupError, psutil.Error):
                continue
        return list({p.pid: p for p in found}.values())

    def workers(self, title: str = "ray::DehazeWorker") -> list:
        """Live worker processes whose title starts with ``title`` (``ray::DehazeWorker.run`` while busy)."""
        import psutil

        out = []
        for p in self.processes():
            try:
                if p.cmdline() and p.cmdline()[0].startswith(title):
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def stop(self) -> None:
        import psutil

        procs = self.processes()
        # SIGTERM, then SIGKILL for what is left after 2 s: Ray's head (``ray start --block``, the GCS server, the
        # autoscaler's monitor) takes 15 s or more to end on SIGTERM, and a test's cluster keeps nothing worth it.
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            for p in procs:
                try:
                    p.send_signal(sig)
                except psutil.Error:
                    pass
            end = time.monotonic() + wait
            while (procs := [p for p in procs if _running(p)]) and time.monotonic() < end:
                time.sleep(0.05)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.temp, ignore_errors=True)


def _running(process) -> bool:
    """Whether a process is still running: not ended, nor a zombie (whose parent, or an init that reaps nothing,
    has not collected it; psutil's ``wait_procs`` waits for those as if they ran)."""
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def ray_cluster():
    """A real Ray cluster on 127.0.0.1 (``ray start --head`` in a temporary folder, with its own token), stopped
    by the test module that started it: its process group, and the workers its raylet started."""
    pytest.importorskip("ray")
    cluster = RayCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def run_batch(ray_cluster):
    """``run_batch(*args) -> (exit code, stderr)``: ``streamdehaze batch ARGS --ray CLUSTER`` in a subprocess."""
    def run(*args: object, wait: bool = True):
        cmd = [sys.executable, "-m", "streamdehaze", "batch", *map(str, args), "--ray", ray_cluster.address]
        proc = subprocess.Popen(cmd, env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if not wait:
            return proc
        _, err = proc.communicate(timeout=600)
        return proc.returncode, err
    return run

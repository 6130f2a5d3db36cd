"""HLS inputs, served by a real local HTTP server: a finished playlist (video on demand) is read as a file, every
frame once; a live one (no #EXT-X-ENDLIST) as a camera, which ends once its playlist is finished; of a master
playlist the highest variant is dehazed, and the other variants are neither copied nor downloaded."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest

from streamdehaze import process
from streamdehaze.live import LiveOptions, is_live
from tests.conftest import hazy_pattern, write_video

RATE, FRAMES = 25, 50  # two segments of one second
LOSSLESS = ("--model", "dcp", "--codec", "ffv1")  # (libx264's threads may round differently from run to run)


def write_hls(folder: Path, name: str, width: int, height: int, finished: bool = True) -> Path:
    """A playlist of two 1 s segments (H.264 and AAC in MPEG-TS), written by FFmpeg's hls muxer; ``finished``:
    with #EXT-X-ENDLIST (video on demand), else as a live playlist that has those two segments so far."""
    options = {"hls_time": "1", "hls_list_size": "0", "hls_segment_filename": str(folder / f"{name}_%d.ts"),
               **({"hls_playlist_type": "vod"} if finished else {"hls_flags": "omit_endlist"})}
    playlist = folder / f"{name}.m3u8"
    with av.open(str(playlist), "w", format="hls", options=options) as oc:
        v = oc.add_stream("libx264", rate=RATE)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.codec_context.gop_size = RATE
        a = oc.add_stream("aac", rate=48000, layout="mono")
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(hazy_pattern(i, width, height), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, RATE)
            oc.mux(v.encode(frame))
        oc.mux(v.encode(None))
        samples = (0.2 * np.sin(2 * np.pi * 440 * np.arange(48000 * FRAMES // RATE) / 48000)).astype(np.float32)
        for start in range(0, samples.size, 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, start:start + 1024].copy(), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, start
            oc.mux(a.encode(chunk))
        oc.mux(a.encode(None))
    return playlist


def write_master(folder: Path) -> Path:
    """A master playlist of two variants: 96x64 at 300 kbit/s listed first, 160x96 at 900 kbit/s."""
    write_hls(folder, "lo", 96, 64)
    write_hls(folder, "hi", 160, 96)
    master = folder / "master.m3u8"
    master.write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=96x64\nlo.m3u8\n"
                      "#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=160x96\nhi.m3u8\n")
    return master


class _Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []  # the paths asked for, in order

        class Handler(SimpleHTTPRequestHandler):
            def log_message(handler, *args: object) -> None:
                self.requests.append(handler.path)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[_Server, Path]]:
    """A real HTTP server on 127.0.0.1 serving the folder it returns; stopped after the test, whatever happens."""
    root = tmp_path / "www"
    root.mkdir()
    server = _Server(root)
    try:
        yield server, root
    finally:
        server.stop()


def test_what_is_live_over_http(http_server, tmp_path):
    server, root = http_server
    write_hls(root, "vod", 96, 64)
    write_hls(root, "live", 96, 64, finished=False)
    write_master(root)
    write_video(root / "clip.mp4", frames=4)
    assert not is_live(f"{server.url}/vod.m3u8")
    assert not is_live(f"{server.url}/master.m3u8")
    assert not is_live(f"{server.url}/clip.mp4?token=1")
    assert is_live(f"{server.url}/live.m3u8")
    assert is_live(f"{server.url}/missing.m3u8")  # not up yet: dialled until it answers, as a camera is


def test_a_finished_playlist_over_http_is_read_as_a_file(http_server, run_cli, probe, tmp_path):
    """Every frame once, as from the same playlist on disk, and the run ends with it (not taken for a camera
    that went away: no reconnection is needed, nor replays it)."""
    server, root = http_server
    local = write_hls(root, "vod", 96, 64)
    code, err = run_cli(f"{server.url}/vod.m3u8", tmp_path / "url.mkv", *LOSSLESS, "--reconnect", 0)
    assert code == 0, err
    assert "dropped" not in err and "reconnect" not in err  # a file's summary line
    code, err = run_cli(local, tmp_path / "disk.mkv", *LOSSLESS)
    assert code == 0, err
    url, disk = probe(tmp_path / "url.mkv"), probe(tmp_path / "disk.mkv")
    assert url["count"] == disk["count"] == FRAMES
    assert url["times"] == disk["times"]
    assert all(np.array_equal(a, b) for a, b in zip(url["rgb"], disk["rgb"], strict=True))
    assert url["audio"] == disk["audio"] and url["audio"]


def test_every_video_file_over_http_is_read_as_a_file(http_server, run_cli, probe, tmp_path):
    """Not only MP4: an MPEG program stream (a DVD's .mpg) by URL was read as a camera, its frames dropped to keep up
    and its end taken for a lost connection."""
    server, root = http_server
    write_video(root / "clip.mpg", frames=FRAMES, codec="mpeg2video", time_base=Fraction(1, 25))
    assert not is_live(f"{server.url}/clip.mpg")
    code, err = run_cli(f"{server.url}/clip.mpg", tmp_path / "url.mkv", *LOSSLESS, "--reconnect", 0)
    assert code == 0, err
    assert "dropped" not in err and "reconnect" not in err
    assert probe(tmp_path / "url.mkv")["count"] == FRAMES


def test_a_live_playlist_is_read_as_a_camera_until_it_is_finished(http_server, probe, tmp_path):
    """A live playlist finished while it is read (the broadcast ended) ends the run, normally, with every frame
    once: a reconnection finds it finished and does not record it all again."""
    server, root = http_server
    playlist = write_hls(root, "live", 96, 64, finished=False)

    def finish(count: int) -> None:  # once the first frames are out, the broadcaster ends the playlist
        if not playlist.read_text().endswith("#EXT-X-ENDLIST\n"):
            playlist.write_text(playlist.read_text() + "#EXT-X-ENDLIST\n")
    # (a timeout longer than the run: the playlist's end, not a stall, ends the connection, whatever the load)
    result = process(f"{server.url}/live.m3u8", tmp_path / "out.mp4", model="dcp", duration=20, max_latency=10,
                     live=LiveOptions(timeout=30), on_frames=finish)
    assert result.frames == FRAMES and result.dropped == 0
    assert result.seconds < 15  # (replayed, it would run for its 20 s)
    times = probe(tmp_path / "out.mp4")["times"]
    assert len(times) == FRAMES and times == sorted(set(times))


def test_of_a_master_playlist_the_highest_variant_is_dehazed_alone(http_server, run_cli, probe, tmp_path):
    """The 160x96 variant, listed second, with its own sound only; the other variant is no extra track of the
    user's (no warning about it) and, once the input is open, none of its segments is downloaded."""
    server, root = http_server
    write_master(root)
    code, err = run_cli(f"{server.url}/master.m3u8", tmp_path / "master.mkv", *LOSSLESS, "--reconnect", 0)
    assert code == 0, err
    assert "not copying" not in err
    code, err = run_cli(root / "hi.m3u8", tmp_path / "hi.mkv", *LOSSLESS)
    assert code == 0, err
    master, hi = probe(tmp_path / "master.mkv"), probe(tmp_path / "hi.mkv")
    assert master["size"] == (160, 96) and master["count"] == FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(master["rgb"], hi["rgb"], strict=True))
    assert master["audio"] == hi["audio"]  # one audio track: the variant's own
    with av.open(str(tmp_path / "master.mkv")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
    assert "/hi_1.ts" in server.requests and "/lo_1.ts" not in server.requests


def test_of_a_master_playlist_on_disk_the_highest_variant_is_dehazed(run_cli, probe, tmp_path):
    code, err = run_cli(write_master(tmp_path), tmp_path / "out.mp4", "--model", "dcp")
    assert code == 0, err
    assert "not copying" not in err
    assert probe(tmp_path / "out.mp4")["size"] == (160, 96)

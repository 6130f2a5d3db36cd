"""A camera's sound is recorded with its pictures, on the same clock: AAC over RTSP (its configuration in the
SDP), G.711 as many IP cameras send it, and AAC in MPEG-TS (ADTS, its configuration in every packet) over TCP,
across a reconnection and into segments."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.conftest import decoded_sound, hazy_pattern, pitch, sound_that_changes, with_damaged_sound
from tests.live.conftest import RtspServer, _need_gstreamer, free_port

RATE = 25


def _times(path: Path) -> tuple[list[Fraction], list[Fraction], list[str]]:
    """Start times of the video and audio packets of a recording, and its streams' codecs."""
    with av.open(str(path)) as c:
        codecs = [s.codec_context.name for s in c.streams]
        video, audio = [], []
        for packet in c.demux():
            if packet.size and packet.pts is not None:
                (video if packet.stream.type == "video" else audio).append(packet.pts * packet.time_base)
    return sorted(video), audio, codecs


def _with_the_pictures(video: list[Fraction], audio: list[Fraction], gap: float) -> None:
    """Sound from the first picture to the last, in order, without a hole longer than ``gap`` seconds."""
    steps = np.diff([float(t) for t in audio])
    assert len(audio) > 20 and steps.min() > 0 and steps.max() < gap, steps.max()
    assert abs(audio[0] - video[0]) < 0.2 and abs(audio[-1] - video[-1]) < 0.3, (audio[0], video[0], audio[-1], video[-1])


@pytest.mark.parametrize("sound, suffix, codec", [("aac", ".mp4", "aac"), ("pcmu", ".mov", "pcm_mulaw")])
def test_a_camera_s_sound_is_recorded_with_its_pictures(cli, tmp_path, sound, suffix, codec):
    _need_gstreamer()
    server = RtspServer(free_port(), size=(160, 120), audio=sound)
    server.start()
    try:
        out = tmp_path / f"cam{suffix}"
        run = cli(server.url, out, "--model", "dcp", "--duration", 4)
        assert run.finish() == 0, run.stderr
    finally:
        server.stop()
    video, audio, codecs = _times(out)
    assert codecs == ["h264", codec] and len(video) > 75
    _with_the_pictures(video, audio, gap=0.25)


def test_sound_a_format_cannot_hold_is_encoded_again(cli, tmp_path):
    _need_gstreamer()
    server = RtspServer(free_port(), size=(160, 120), audio="pcmu")
    server.start()
    try:
        run = cli(server.url, tmp_path / "cam.mp4", "--model", "dcp", "--duration", 3)
        assert run.finish() == 0, run.stderr
    finally:
        server.stop()
    assert "pcm_mulaw cannot be stored in mp4: audio stream #0 encoded again as aac" in run.stderr
    video, audio, codecs = _times(tmp_path / "cam.mp4")
    assert codecs == ["h264", "aac"]
    _with_the_pictures(video, audio, gap=0.25)
    with av.open(str(tmp_path / "cam.mp4")) as written:
        sound = np.concatenate([f.to_ndarray()[0] for f in written.decode(audio=0)])[8000:16000]
    assert np.argmax(np.abs(np.fft.rfft(sound))) == 440  # the test server's tone (1 s: 1 Hz a bin)


def _ts_with_sound(rate: int = 48000, layout: str = "mono") -> bytes:
    """4 s of 25 fps video and an AAC tone in MPEG-TS (ADTS), as a camera sends them over TCP, UDP or SRT."""
    out = io.BytesIO()
    with av.open(out, "w", format="mpegts") as ts:
        video = ts.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        video.codec_context.options = {"tune": "zerolatency", "g": "5"}
        audio = ts.add_stream("aac", rate=rate, layout=layout)
        channels = audio.codec_context.layout.nb_channels
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(4 * rate) / rate)).astype(np.float32)
        sent = 0
        for i in range(4 * RATE + 1):
            frame = av.VideoFrame.from_ndarray(hazy_pattern(i, 160, 120), format="rgb24") if i < 4 * RATE else None
            if frame is not None:
                frame.pts, frame.time_base = i, Fraction(1, RATE)
            for packet in video.encode(frame):
                ts.mux(packet)
            while sent < min((i + 1) * rate // RATE, len(tone)):
                chunk = np.ascontiguousarray(np.tile(tone[sent:sent + 1024], (channels, 1)))
                chunk = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                chunk.sample_rate, chunk.pts = rate, sent
                for packet in audio.encode(chunk):
                    ts.mux(packet)
                sent += 1024
        for packet in audio.encode(None):
            ts.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_the_sound_of_an_mpeg_ts_camera_goes_on_after_a_reconnection(camera, cli, tmp_path, suffix):
    out = tmp_path / f"cam{suffix}"
    run = cli(camera(_ts_with_sound(), connections=2), out, "--model", "dcp", "--reconnect", 1, "--max-latency", 30)
    run.finish(60)  # (ends when the camera hangs up the second time: no reconnects left)
    assert "reconnecting (attempt 1)" in run.stderr and "back after" in run.stderr, run.stderr
    video, audio, codecs = _times(out)
    assert codecs == ["h264", "aac"], run.stderr  # the two streams, once each
    _with_the_pictures(video, audio, gap=3.0)  # (the outage between the two connections)
    # Both connections whole, from their first second (what FFmpeg reads to probe a stream) on: 4 s of pictures
    # and sound each (an AAC packet is 1024 samples).
    # (the last frames came as the camera hung up for good: one in four runs lost the one still in the engine)
    assert len(video) == 2 * 4 * RATE, (len(video), run.stderr)
    assert len(audio) >= 2 * (4 * 48000 // 1024 - 1), len(audio)


def test_a_damaged_sound_packet_of_a_camera_is_left_out(camera, cli, tmp_path):
    # An MPEG-TS camera whose AAC packet 2 s in came cut to its ADTS header: the filter that makes it raw refused
    # it, and the camera was dialled again.
    out = tmp_path / "cam.mp4"
    run = cli(camera(with_damaged_sound(_ts_with_sound(), 94)), out, "--model", "dcp", "--reconnect", 0,
              "--max-latency", 30)
    run.finish(60)  # (ends when the camera hangs up: no reconnects left)
    assert "reconnecting" not in run.stderr, run.stderr
    video, audio, codecs = _times(out)
    assert codecs == ["h264", "aac"] and len(video) >= 4 * RATE - 1, (len(video), run.stderr)
    _with_the_pictures(video, audio, gap=0.2)


@pytest.mark.parametrize("suffix", [".mkv", ".ts"])
def test_a_camera_whose_sound_changes_format_keeps_its_pitch(camera, cli, tmp_path, suffix):
    # A camera over UDP, SRT or TCP whose sound goes on at 48 kHz mono after 44.1 kHz stereo, within one connection:
    # made raw AAC in the first configuration, its second part played 8.8 % slow (440 Hz at 404). Matroska states
    # the sound's format once: encoded again there; MPEG-TS carries the change as it is.
    out = tmp_path / f"cam{suffix}"
    run = cli(camera(sound_that_changes()), out, "--model", "dcp", "--reconnect", 0, "--max-latency", 30)
    run.finish(60)
    frames, rate, layout = decoded_sound(out)
    start, end = frames[0][0], frames[-1][0]
    assert end - start > 3.5, (start, end)
    assert abs(pitch(frames, start + 0.5, start + 1.5) - 440) < 3 and abs(pitch(frames, end - 1.5, end - 0.5) - 440) < 3
    if suffix == ".mkv":
        assert (rate, layout) == (44100, "stereo") and {(r, x) for _, r, x, _ in frames} == {(44100, "stereo")}
        assert "audio stream #0 went on at 48000 Hz mono" in run.stderr and "encoded again from there" in run.stderr
    else:
        assert {(r, x) for _, r, x, _ in frames} == {(44100, "stereo"), (48000, "mono")}


def test_a_camera_whose_sound_comes_back_in_another_format_keeps_it(camera, cli, tmp_path):
    # Back after a reconnection at 48 kHz mono, first at 44.1 kHz stereo: the rest was recorded without sound.
    out = tmp_path / "cam.mkv"
    run = cli(camera([_ts_with_sound(44100, "stereo"), _ts_with_sound()]), out, "--model", "dcp", "--reconnect", 1,
              "--max-latency", 30)
    run.finish(60)
    assert "back after" in run.stderr and "encoded again from there, as 44100 Hz stereo" in run.stderr, run.stderr
    frames, rate, layout = decoded_sound(out)
    assert (rate, layout) == (44100, "stereo") and {(r, x) for _, r, x, _ in frames} == {(44100, "stereo")}
    start, end = frames[0][0], frames[-1][0]
    assert end - start > 7, (start, end)  # both connections' sound, the outage between them
    assert abs(pitch(frames, start + 1, start + 2) - 440) < 3 and abs(pitch(frames, end - 2, end - 1) - 440) < 3


def test_segments_of_a_camera_carry_its_sound(camera, cli, tmp_path):
    out = tmp_path / "seg" / "cam.mp4"
    out.parent.mkdir()
    run = cli(camera(_ts_with_sound()), out, "--model", "dcp", "--reconnect", 0, "--max-latency", 30,
              "--segment-time", 1)
    run.finish(60)
    segments = sorted(out.parent.iterdir())
    assert len(segments) >= 2, run.stderr
    # The sound comes ahead of the pictures, which are being dehazed: each segment's waits for its first frame.
    for segment in segments:
        video, audio, codecs = _times(segment)
        assert codecs == ["h264", "aac"] and audio[0] < 0.03, (segment.name, audio[:3])  # (an AAC packet: 21 ms)
        _with_the_pictures(video, audio, gap=0.25)


_LISTEN = ("import av, sys\n"
           "src = av.open(sys.argv[1], options={'rtsp_flags': 'listen', 'listen_timeout': '60'})\n"
           "got = {s.codec_context.name: 0 for s in src.streams}\n"
           "for p in src.demux():\n"
           "    got[p.stream.codec_context.name] += bool(p.size)\n"
           "print(got, flush=True)\n")


def test_a_camera_s_sound_is_published_with_its_pictures(cli, tmp_path):
    _need_gstreamer()
    server = RtspServer(free_port(), size=(160, 120), audio="aac")
    server.start()
    out = f"rtsp://127.0.0.1:{free_port()}/out"
    listener = subprocess.Popen([sys.executable, "-c", _LISTEN, out], stdout=subprocess.PIPE, text=True)
    try:
        run = cli(server.url, out, "--model", "dcp", "--duration", 4)
        assert run.finish() == 0, run.stderr
        got = ast.literal_eval(listener.communicate(timeout=30)[0])
    finally:
        server.stop()
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert set(got) == {"h264", "aac"} and got["h264"] > 75 and got["aac"] > 120, got


def test_each_segment_begins_with_its_own_sound(cli, tmp_path):
    # An RTSP camera's sound arrives ahead of its pictures, which are decoded and dehazed first: the sound of the
    # next segment waits for its first frame rather than ending the segment before.
    _need_gstreamer()
    server = RtspServer(free_port(), size=(160, 120), audio="aac")
    server.start()
    out = tmp_path / "seg" / "cam.mkv"
    out.parent.mkdir()
    try:
        run = cli(server.url, out, "--model", "dcp", "--duration", 5, "--segment-time", 1)
        assert run.finish() == 0, run.stderr
    finally:
        server.stop()
    segments = sorted(out.parent.iterdir())
    assert len(segments) >= 4, run.stderr
    for segment in segments[1:-1]:
        video, audio, _ = _times(segment)
        assert video[0] == 0 and audio[0] < 0.03 and audio[-1] < video[-1] + Fraction(2, RATE), \
            (segment.name, audio[0], audio[-1], video[-1])

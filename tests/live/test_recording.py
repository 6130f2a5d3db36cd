"""Live recordings against a real RTSP server: written as they go, kept whatever ends the run, never replacing an
earlier recording."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import re
import time
from fractions import Fraction

import av
import pytest

from tests.conftest import hazy_pattern, write_video


def _recorded(line: str) -> int:
    """The frame count in "...; the N frames recorded before it are in PATH"."""
    return int(re.search(r"the (\d+) frames recorded before it are in ", line).group(1))


def test_camera_gone_for_good_keeps_the_recording(rtsp_server, cli, decodable, tmp_path):
    out, stats = tmp_path / "cam.mp4", tmp_path / "s.jsonl"
    run = cli(rtsp_server.url, out, "--model", "dcp", "--timeout", 1, "--reconnect", 2, "--stats-json", stats)
    run.wait_streaming(stats, 25)
    rtsp_server.stop()  # the camera goes away and never comes back
    assert run.finish(60) == 1
    assert "Traceback" not in run.stderr
    line = run.stderr.splitlines()[-1]
    assert "no reconnects left" in line and line.endswith(f" are in {out}"), run.stderr
    times = decodable(out)  # finished and playable, every frame it recorded in order
    assert len(times) == _recorded(line) >= 25
    assert all(b > a for a, b in zip(times, times[1:]))


def test_duration_ends_a_recording_whose_camera_is_down(rtsp_server, cli, decodable, tmp_path):
    """``--duration`` is live time: a camera that goes away for good ends the run when it runs out, not never (the
    reconnections go on for ever by default). Normally, with what was recorded."""
    out, stats = tmp_path / "cam.mp4", tmp_path / "s.jsonl"
    run = cli(rtsp_server.url, out, "--model", "dcp", "--timeout", 1, "--duration", 8, "--stats-json", stats)
    run.wait_streaming(stats, 25)
    rtsp_server.stop()
    assert run.finish(30) == 0, run.stderr
    assert "reconnecting (attempt" in run.stderr and "--duration reached during the outage" in run.stderr
    times = decodable(out)
    assert len(times) >= 25 and times[-1] < 8


def test_duration_on_a_segment_boundary_begins_no_segment(rtsp_server, cli, tmp_path):
    """The run's video is [0, duration): with segments of 1 s and 3 s of it, three whole segments, not a fourth of
    the one frame at 3 s."""
    out = tmp_path / "cam.mp4"
    run = cli(rtsp_server.url, out, "--model", "dcp", "--segment-time", 1, "--duration", 3, "--max-latency", 5)
    assert run.finish(60) == 0, run.stderr
    segments = sorted(tmp_path.glob("cam_*.mp4"))
    with av.open(str(segments[-1])) as last:
        count = sum(1 for _ in last.decode(video=0))
    assert len(segments) == 3 and count > 10, (segments, count)


@pytest.mark.parametrize("name, record_s, kept_s", [("cam.mp4", 10, 8), ("cam.mkv", 4, 2), ("cam.ts", 4, 2)])
def test_killed_recording_plays_up_to_its_last_second(rtsp_server, cli, decodable, tmp_path, name, record_s, kept_s):
    out, stats = tmp_path / name, tmp_path / "s.jsonl"
    run = cli(rtsp_server.url, out, "--model", "dcp", "--max-latency", 5, "--stats-json", stats)
    run.wait_streaming(stats, 1)
    time.sleep(record_s)
    run.proc.kill()  # SIGKILL: nothing gets finished
    run.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "s.jsonl"])
    times = decodable(out)
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times[-1] - times[0] >= kept_s


@pytest.mark.parametrize("name", ["cam.mp4", "cam.mkv", "cam.ts"])
def test_disk_full_keeps_the_recording(rtsp_server, cli, decodable, small_filesystem, name, tmp_path):
    """What fit, and how many frames that is: those in the file, not those encoded (Matroska's last cluster, which
    the disk refused, held some)."""
    out, stats = small_filesystem(96) / name, tmp_path / "stats.jsonl"
    run = cli(rtsp_server.url, out, "--model", "dcp", "--crf", 0, "--stats-json", stats)  # lossless: fills in seconds
    assert run.finish(120) == 1
    line = run.stderr.splitlines()[-1]
    assert "No space left on device" in line and line.endswith(f" are in {out}"), run.stderr
    recorded = _recorded(line)
    times = decodable(out)
    assert all(b > a for a, b in zip(times, times[1:]))
    assert len(times) == recorded > 0  # what fit, to its last whole frame, and said so
    # the frames encoded but lost with the disk count as dropped: received = frames + dropped still (it did not)
    last = json.loads(stats.read_text().splitlines()[-1])
    assert last["frames"] == recorded and last["received"] == last["frames"] + last["dropped"], last


@pytest.mark.parametrize("segments", [(), ("--segment-time", 1)])
def test_a_recording_onto_a_full_disk_says_nothing_was_recorded(rtsp_server, cli, small_filesystem, segments):
    folder = small_filesystem(16)
    with contextlib.suppress(OSError), open(folder / "fill", "wb") as fill:
        fill.write(bytes(64 * 1024))
    run = cli(rtsp_server.url, folder / "cam.mp4", "--model", "dcp", *segments)
    assert run.finish(120) == 1, run.stderr
    name = "cam_00000.mp4" if segments else "cam.mp4"
    assert run.stderr.splitlines()[-1] == (f"streamdehaze: error: writing {folder / name} failed: No space left on "
                                           "device; nothing was recorded"), run.stderr
    assert [p.name for p in folder.iterdir()] == ["fill"]


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_recording_deleted_while_it_runs_ends_the_run(rtsp_server, cli, tmp_path, what):
    """Someone deletes the recording (or its folder): the run says so within about a second and ends (exit 1), where
    it went on writing into a file no one could see, and said at its end that it had recorded."""
    import shutil

    folder = tmp_path / "rec"
    folder.mkdir()
    out, stats = folder / "cam.mp4", tmp_path / "s.jsonl"
    run = cli(rtsp_server.url, out, "--model", "dcp", "--stats-json", stats)
    run.wait_streaming(stats, 25)
    out.unlink() if what == "file" else shutil.rmtree(folder)
    assert run.finish(30) == 1, run.stderr
    assert run.stderr.splitlines()[-1] == (f"streamdehaze: error: {out} was deleted while it was being recorded "
                                           "(the file, or its folder): nothing written to it can be seen any more"), \
        run.stderr


def test_earlier_recording_is_moved_aside(rtsp_server, cli, decodable, tmp_path):
    out, stats = tmp_path / "cam.mp4", tmp_path / "s.jsonl"
    out.write_bytes(b"an earlier recording")
    (tmp_path / "cam.3.mp4").write_bytes(b"an older one")
    run = cli(rtsp_server.url, out, "--model", "dcp", "--stats-json", stats)
    run.wait_streaming(stats, 10)
    assert run.interrupt() == 0, run.stderr
    assert "cam.mp4 already held a recording: moved it to cam.4.mp4" in run.stderr
    assert (tmp_path / "cam.4.mp4").read_bytes() == b"an earlier recording"
    assert (tmp_path / "cam.3.mp4").read_bytes() == b"an older one"
    assert len(decodable(out)) >= 10



def _summary_frames(run) -> int:
    """The frame count of a run's summary line ("streamdehaze: N frames in ...")."""
    return int(re.match(r"streamdehaze: (\d+) frames in ", run.stderr.splitlines()[-1]).group(1))


def test_a_recording_in_progress_is_not_moved_aside_by_another_run(rtsp_server, cli, decodable, tmp_path):
    out, stats = tmp_path / "cam.mp4", tmp_path / "s.jsonl"
    first = cli(rtsp_server.url, out, "--model", "dcp", "--stats-json", stats)
    first.wait_streaming(stats, 10)
    second = cli(rtsp_server.url, out, "--model", "dcp")
    assert second.finish(60) == 2
    assert second.stderr == f"streamdehaze: error: {out} is being recorded by another run: give this one another name"
    assert first.interrupt() == 0, first.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.mp4", "s.jsonl"]
    assert len(decodable(out)) == _summary_frames(first) >= 10


def test_a_file_run_to_a_recording_in_progress_is_refused(rtsp_server, cli, decodable, tmp_path):
    # It replaced the recording with its output, and the recording, finding its file gone, removed that output.
    out, stats, clip = tmp_path / "cam.mp4", tmp_path / "s.jsonl", tmp_path / "clip.mp4"
    write_video(clip, frames=20)
    recording = cli(rtsp_server.url, out, "--model", "dcp", "--stats-json", stats)
    recording.wait_streaming(stats, 10)
    file_run = cli(clip, out, "--model", "dcp")
    assert file_run.finish(60) == 2
    assert file_run.stderr == f"streamdehaze: error: {out} is being recorded by another run: give this one another name"
    assert recording.interrupt() == 0, recording.stderr
    assert len(decodable(out)) == _summary_frames(recording) >= 10


def test_a_recording_replaced_by_another_program_leaves_that_program_s_file(rtsp_server, cli, tmp_path):
    # `cp other.mp4 cam.mp4` (or a rename onto it) while cam.mp4 is recorded: the run ends, saying so, and once
    # took the file now at that name for its own recording, found no fragment in it, and removed it.
    out, stats, other = tmp_path / "cam.mp4", tmp_path / "s.jsonl", tmp_path / "other.mp4"
    run = cli(rtsp_server.url, out, "--model", "dcp", "--stats-json", stats)
    run.wait_streaming(stats, 10)
    write_video(other, frames=20)
    os.replace(other, out)
    assert run.finish(30) == 1, run.stderr
    assert run.stderr.splitlines()[-1] == (f"streamdehaze: error: {out} was replaced by another file while it was "
                                           "being recorded: nothing written to it can be seen any more"), run.stderr
    with av.open(str(out)) as replaced:
        assert replaced.streams.video[0].frames == 20


def test_two_recordings_to_the_same_segment_names_lose_no_frame(rtsp_server, cli, decodable, tmp_path):
    """Two runs record to the same segment names at once: each segment is created by one of them and never truncated
    by the other, so every frame either recorded is in a segment."""
    out, runs = tmp_path / "cam.mp4", []
    for k in range(2):  # the first has segments of its own when the second starts; both then cross boundaries
        stats = tmp_path / f"s{k}.jsonl"
        runs.append(cli(rtsp_server.url, out, "--model", "dcp", "--segment-time", 1, "--stats-json", stats))
        runs[-1].wait_streaming(stats, 75)
    for run in runs:
        assert run.interrupt() == 0, run.stderr
    segments = sorted(tmp_path.glob("cam_*.mp4"))
    assert sum(len(decodable(segment)) for segment in segments) == sum(_summary_frames(run) for run in runs)
    assert "is there already (another recording to the same names?): not replaced" in runs[0].stderr

def test_segments_continue_after_earlier_ones(rtsp_server, cli, tmp_path):
    out = tmp_path / "cam.mp4"
    for run in range(2):
        if run:
            first = {p.name: p.read_bytes() for p in tmp_path.glob("cam_*.mp4")}
        stats = tmp_path / f"s{run}.jsonl"
        recording = cli(rtsp_server.url, out, "--model", "dcp", "--segment-time", 1, "--stats-json", stats)
        recording.wait_streaming(stats, 5)
        time.sleep(3)
        assert recording.interrupt() == 0, recording.stderr
        # Latency is the frame's own (its arrival was looked up by its time before the segment shifted it).
        assert json.loads(stats.read_text().splitlines()[-1])["latency_p95_ms"] < 900
    assert len(first) >= 2
    for name, data in first.items():  # the first run's segments are untouched
        assert (tmp_path / name).read_bytes() == data
    numbers = sorted(int(p.stem.split("_")[1]) for p in tmp_path.glob("cam_*.mp4"))
    assert numbers == list(range(len(numbers))) and len(numbers) > len(first)


def test_a_camera_s_segments_named_by_their_time(rtsp_server, cli, tmp_path):
    """A camera's segments named by strftime's directives: each by when its first frame came, in local time."""
    stats = tmp_path / "s.jsonl"
    began = time.time()
    recording = cli(rtsp_server.url, tmp_path / "cam_%Y%m%d-%H%M%S.mp4", "--model", "dcp", "--segment-time", 1,
                    "--stats-json", stats)
    recording.wait_streaming(stats, 5)
    time.sleep(3)
    assert recording.interrupt() == 0, recording.stderr
    ended = time.time()
    names = sorted(p.name for p in tmp_path.glob("cam_*.mp4"))
    times = [time.mktime(time.strptime(name, "cam_%Y%m%d-%H%M%S.mp4")) for name in names]
    assert len(names) >= 3 and int(began) <= times[0] and times[-1] <= ended, (began, names, ended)
    assert all(0 < later - earlier <= 2 for earlier, later in zip(times, times[1:])), names  # (a second apart)
    assert recording.stderr.rstrip().endswith(f"-> {tmp_path / names[0]} .. {names[-1]}"), recording.stderr


def test_a_ten_bit_hdr_camera_is_recorded_in_ten_bits_with_its_tags(camera, cli, tmp_path):
    out = io.BytesIO()  # 4 s of HLG video in HEVC Main10 over MPEG-TS, as such a camera sends it
    with av.open(out, "w", format="mpegts") as ts:
        stream = ts.add_stream("libx265", rate=25, options={"x265-params": "log-level=error:keyint=5"})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p10le"
        for tag, value in {"color_primaries": 9, "color_trc": 18, "colorspace": 9}.items():
            setattr(stream.codec_context, tag, value)
        for i in range(101):
            frame = av.VideoFrame.from_ndarray(hazy_pattern(i, 160, 120), format="rgb24").reformat(
                format="yuv420p10le") if i < 100 else None
            if frame is not None:
                frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in stream.encode(frame):
                ts.mux(packet)
    recording = tmp_path / "cam.mkv"
    run = cli(camera(out.getvalue()), recording, "--model", "dcp", "--codec", "libx265", "--reconnect", 0)
    run.finish(60)  # (ends when the camera hangs up: no reconnects left)
    with av.open(str(recording)) as written:
        video = written.streams.video[0].codec_context
        assert (video.pix_fmt, video.color_primaries, video.color_trc, video.colorspace) == \
            ("yuv420p10le", 9, 18, 9), run.stderr
        assert len(list(written.decode(video=0))) >= 25  # (some of the first second goes to opening it)


def test_finished_segments_let_go_of_their_codecs(camera, run_cli, tmp_path):
    # x264 and FFmpeg's decoders run threads of their own, which end only with the last reference to their codec
    # (closing the file is not enough): a recording's segments, and a fleet's reloaded streams, come and go for
    # weeks, and a garbage collection may not come for minutes.
    from tests.live.test_camera_clock import _ts

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))
    (tmp_path / "seg").mkdir()
    options = ("--model", "dcp", "--reconnect", 0, "--max-latency", 30, "--quiet")
    gc.disable()
    try:
        run_cli(camera(_ts(0)), tmp_path / "warm.mp4", *options)  # (the model's and OpenCV's own threads start)
        before = threads()
        run_cli(camera(_ts(0)), tmp_path / "seg" / "cam.mp4", "--segment-time", 0.5, *options)
        after = threads()
    finally:
        gc.enable()
    assert len(list((tmp_path / "seg").iterdir())) >= 4
    assert after <= before + 1, (before, after)


def test_a_camera_as_hls_is_a_live_playlist_of_its_last_segments(rtsp_server, cli, tmp_path):
    """``cam.m3u8``: a live playlist (no end, no type) of segments of 2 s, each with its wall-clock time, beside it;
    at the end of the run it is ended (``#EXT-X-ENDLIST``), and a player reads it."""
    out, stats = tmp_path / "web" / "cam.m3u8", tmp_path / "s.jsonl"
    out.parent.mkdir()
    run = cli(rtsp_server.url, out, "--model", "dcp", "--stats-json", stats)
    run.wait_streaming(stats, 5)
    deadline = time.monotonic() + 20
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(4)
    live = out.read_text().splitlines()
    segments = [line for line in live if not line.startswith("#")]
    assert "#EXT-X-TARGETDURATION:2" in live and "#EXT-X-ENDLIST" not in live, live
    assert not any(line.startswith("#EXT-X-PLAYLIST-TYPE") for line in live), live
    assert segments and all((out.parent / name).is_file() for name in segments), live
    assert sum(line.startswith("#EXT-X-PROGRAM-DATE-TIME") for line in live) == len(segments), live
    assert run.interrupt() == 0, run.stderr
    final = out.read_text().splitlines()
    assert final[-1] == "#EXT-X-ENDLIST", final
    assert len([p for p in out.parent.iterdir() if p.suffix == ".ts"]) <= 7  # (6 listed, one kept past them)
    with av.open(str(out)) as played:
        assert sum(1 for _ in played.decode(video=0)) >= 25

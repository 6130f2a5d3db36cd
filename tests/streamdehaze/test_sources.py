"""Damaged video input: corrupt packets skipped and counted as FFmpeg's own tools skip them (or, with --strict,
the first is an error); a truncated file keeps every frame decoded before the cut; a recording whose clock
restarts, a stream that appears mid-file or audio that starts late is dehazed to its end."""

from __future__ import annotations

import json
import random
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.conftest import write_video

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "hazy_bunny.mp4"


def _garbled(tmp_path: Path) -> Path:
    """The sample (132 frames) with 20 KB of garbage over the middle of its media data, the index intact."""
    data = bytearray(SAMPLE.read_bytes())
    middle = len(data) // 2
    data[middle - 10_000: middle + 10_000] = random.Random(15).randbytes(20_000)
    path = tmp_path / "garbled.mp4"
    path.write_bytes(bytes(data))
    return path


def test_garbage_in_the_middle_is_skipped_and_counted(run_cli, probe, decodable, tmp_path):
    src, out, stats = _garbled(tmp_path), tmp_path / "out.mp4", tmp_path / "stats.json"
    code, err = run_cli(src, out, "--model", "dcp", "--stats-json", stats)
    assert code == 0, err
    times = probe(out)["times"]
    assert len(times) >= 0.9 * 132
    assert times == decodable(src)  # every frame FFmpeg decodes, each with its own timestamp
    corrupt = json.loads(stats.read_text())["corrupt_packets"]
    assert corrupt > 0
    assert f"{len(times)} frames in" in err and f"{corrupt} corrupt packets skipped" in err
    assert probe(out)["audio"]  # the audio track still comes along


def test_a_fleet_s_summary_counts_corrupt_packets_as_a_single_run_does(run_cli, tmp_path):
    src = _garbled(tmp_path)
    config = tmp_path / "cams.toml"
    config.write_text(f'[[stream]]\nname = "bad"\ninput = "{src}"\noutput = "{tmp_path / "out.mp4"}"\n'
                      f'model = "dcp"\nstats_json = "{tmp_path / "bad.jsonl"}"\n')
    code, err = run_cli("serve", config)
    corrupt = json.loads((tmp_path / "bad.jsonl").read_text().splitlines()[-1])["corrupt_packets"]
    assert code == 0 and corrupt > 0 and f", {corrupt} corrupt packets skipped) -> " in err, err


def test_strict_makes_the_first_corrupt_packet_an_error(run_cli, tmp_path):
    src = _garbled(tmp_path)
    code, err = run_cli(src, tmp_path / "out.mp4", "--model", "dcp", "--strict")
    assert code == 1 and "Traceback" not in err
    assert re.fullmatch(r"streamdehaze: error: .*garbled\.mp4: corrupt packet after frame \d+ \(--strict\)\n", err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbled.mp4"]  # all or nothing


def test_an_undamaged_file_passes_strict(run_cli, probe, tmp_path):
    code, err = run_cli(SAMPLE, tmp_path / "out.mp4", "--model", "dcp", "--strict", "--max-frames", 20)
    assert code == 0, err
    assert probe(tmp_path / "out.mp4")["count"] == 20 and "corrupt" not in err


def test_truncated_file_keeps_every_frame_before_the_cut(make_video, run_cli, probe, decodable, tmp_path):
    src = make_video(frames=60, width=160, height=120, options={"movflags": "faststart"})
    data = src.read_bytes()
    cut, out = tmp_path / "cut.mp4", tmp_path / "out.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])  # index intact, media data cut off
    code, err = run_cli(cut, out, "--model", "dcp")
    assert code == 1 and "Traceback" not in err
    kept = re.fullmatch(rf"streamdehaze: error: {re.escape(str(cut))} is truncated: \d+ of its 60 video packets "
                        rf"are there; {re.escape(str(out))} holds the (\d+) frames decoded before the cut\n", err)
    assert kept is not None, err
    times = probe(out)["times"]
    assert len(times) == int(kept.group(1)) >= 25
    assert times == decodable(cut) and times == probe(src)["times"][: len(times)]


def test_an_avi_with_a_dropped_frame_is_whole(run_cli, probe, tmp_path):
    # A capture card marks a dropped frame with an empty entry in an AVI's index: the entries outnumber the packets,
    # and a whole file was said to be truncated (exit 1). Cut, it still is.
    src, out = tmp_path / "dropped.avi", tmp_path / "out.mp4"
    with av.open(str(src), "w") as oc:
        video = oc.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for pts in [0, *range(2, 40)]:  # frame 1 dropped
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), pts * 5, np.uint8), "rgb24")
            frame.pts = pts
            oc.mux(video.encode(frame))
        oc.mux(video.encode())
    with av.open(str(src)) as ic:
        assert ic.streams.video[0].frames == 40  # the empty entry is listed
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0 and "truncated" not in err, err
    assert probe(out)["times"] == [Fraction(i, 25) for i in (0, *range(2, 40))]
    cut = tmp_path / "cut.avi"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    code, err = run_cli(cut, tmp_path / "cut.mp4", "--model", "dcp")
    assert code == 1 and str(cut) in err and "truncated" in err, err


def test_a_truncated_matroska_file_says_so(make_video, run_cli, probe, decodable, tmp_path):
    # Matroska has no index of every frame: the length its track states (its tags) tells that the rest is missing.
    src = make_video("in.mkv", frames=60, width=160, height=120)
    cut, out = tmp_path / "cut.mkv", tmp_path / "out.mkv"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    code, err = run_cli(cut, out, "--model", "dcp")
    kept = re.fullmatch(rf"streamdehaze: error: {re.escape(str(cut))} is truncated: its video ends at \d\.\d s of the "
                        rf"2\.4 s it states; {re.escape(str(out))} holds the (\d+) frames decoded before the cut\n", err)
    assert code == 1 and kept is not None, err
    assert probe(out)["times"] == decodable(cut) and len(decodable(cut)) == int(kept.group(1))
    assert run_cli(src, tmp_path / "whole.mkv", "--model", "dcp")[0] == 0  # the whole file is no such thing


def test_a_truncated_fragmented_mp4_says_so(make_video, run_cli, probe, decodable, tmp_path):
    # A partial download of a camera's fragmented MP4: no index of every frame, but each fragment's header states
    # its length before its data, so the cut one tells that the rest is missing.
    src = make_video(frames=150, width=160, height=120, gop=75, audio=True, options={"movflags": "frag_keyframe"})
    cut, out = tmp_path / "cut.mp4", tmp_path / "out.mp4"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size * 3 // 4])  # half its second fragment
    code, err = run_cli(cut, out, "--model", "dcp")
    kept = re.fullmatch(rf"streamdehaze: error: {re.escape(str(cut))} is truncated: its video ends at \d\.\d s of the "
                        rf"6\.\d s it states; {re.escape(str(out))} holds the (\d+) frames decoded before the cut\n", err)
    assert code == 1 and kept is not None, err
    assert probe(out)["times"] == decodable(cut) and len(decodable(cut)) == int(kept.group(1)) < 125
    assert run_cli(src, tmp_path / "whole.mp4", "--model", "dcp")[0] == 0  # the whole file is no such thing


@pytest.mark.parametrize("damage", ["zeroed", "cut"])
def test_a_camera_s_fragmented_mp4_that_is_not_whole_says_so(run_cli, probe, decodable, tmp_path, damage):
    # One-second fragments, as cameras and our own recordings write them. A bad card's zeroed 4 KiB across a
    # fragment's header: FFmpeg reads nothing after it (the fragments after it are whole). A copy cut inside its
    # last fragment. Both were taken for whole files, exit 0.
    src, damaged, out = tmp_path / "in.mp4", tmp_path / "damaged.mp4", tmp_path / "out.mp4"
    write_video(src, frames=150, gop=25, audio=True,
                options={"movflags": "+frag_keyframe+empty_moov+default_base_moof", "frag_duration": "1000000"})
    data = bytearray(src.read_bytes())
    moofs = [i - 4 for i in range(len(data)) if data[i: i + 4] == b"moof"]
    if damage == "zeroed":
        data[moofs[3] - 2048: moofs[3] + 2048] = bytes(4096)
        said = rf"is damaged at byte {moofs[3]} of {len(data)}: nothing after it can be read"
    else:
        data = data[: (moofs[-3] + moofs[-2]) // 2]  # (the last fragments: the last second, and the sound after it)
        said = r"is truncated: the last \d+ bytes of its media are missing"
    damaged.write_bytes(bytes(data))
    code, err = run_cli(damaged, out, "--model", "dcp")
    kept = re.fullmatch(rf"streamdehaze: error: {re.escape(str(damaged))} {said}; {re.escape(str(out))} holds the "
                        rf"(\d+) frames decoded before the cut\n", err)
    assert code == 1 and kept is not None, err
    assert probe(out)["times"] == decodable(damaged) and len(decodable(damaged)) == int(kept.group(1)) < 150


def test_a_file_that_cannot_be_read_on_keeps_the_frames_its_decoder_holds(run_cli, probe, tmp_path):
    # A camera's fragmented MP4 damaged on its card: the third fragment states a frame of about 3 GB, and FFmpeg
    # stops reading there ("Cannot allocate memory"). The frames decoded before the cut include those the decoder
    # held back (x264's B-frames, its threads) when the read failed.
    src, damaged, out = tmp_path / "in.mp4", tmp_path / "damaged.mp4", tmp_path / "out.mp4"
    write_video(src, frames=50, gop=10, options={"movflags": "frag_keyframe+empty_moov"})
    data = bytearray(src.read_bytes())
    data = data[: data.find(b"mfra") - 4]  # (a recording cut off by power loss has no index of its fragments)
    trun = data.find(b"trun", [i for i in range(len(data)) if data[i: i + 4] == b"moof"][2])
    flags = int.from_bytes(data[trun + 5: trun + 8], "big")
    first = trun + 12 + 4 * bool(flags & 0x1) + 4 * bool(flags & 0x4)  # past the sample count and its options
    per_sample = 4 * sum(bool(flags & bit) for bit in (0x100, 0x200, 0x400, 0x800))
    data[first + 5 * per_sample + 4 * bool(flags & 0x100)] = 0xB4  # the sixth frame's size
    damaged.write_bytes(bytes(data))
    code, err = run_cli(damaged, out, "--model", "dcp")
    assert code == 1 and err == (f"streamdehaze: error: {damaged} cannot be read after frame 25 (damaged: it states a "
                                 f"size too large for memory); {out} holds the 25 frames decoded before the cut\n")
    assert probe(out)["times"] == probe(src)["times"][:25]


@pytest.mark.parametrize("flags", ["", "faststart"])
def test_an_mp4_whose_index_is_cut_says_so(run_cli, probe, tmp_path, flags):
    # The index at the end, cut inside its sound's track: FFmpeg read the picture whole and took the sound's track
    # for a data stream of no kind, so the sound was left out without a word, exit 0. At the start (faststart),
    # cut inside it: "no video stream", exit 2, as if the user had given a sound file.
    src, cut, out = tmp_path / "in.mp4", tmp_path / "cut.mp4", tmp_path / "out.mp4"
    write_video(src, frames=50, audio=True, options={"movflags": flags} if flags else None)
    data = src.read_bytes()
    index = data.find(b"moov") - 4
    # (inside the sound's track; inside the picture's, whose header is all there is of it)
    end = data.find(b"trak", data.find(b"trak", index) + 4) + 100 if not flags else data.find(b"trak", index) + 100
    cut.write_bytes(data[:end])
    code, err = run_cli(cut, out, "--model", "dcp")
    said = f"the last {index + int.from_bytes(data[index: index + 4], 'big') - end} bytes of its index are missing"
    if flags:
        assert code == 1 and err == f"streamdehaze: error: cannot read {cut}: it is truncated: {said}, and no video " \
                                    "stream can be read\n", err
    else:
        assert code == 1 and err == f"streamdehaze: error: {cut} is truncated: {said}; {out} holds the 50 frames " \
                                    "decoded before the cut\n", err
        assert probe(out)["count"] == 50


@pytest.mark.parametrize("options", [
    {"movflags": "+frag_keyframe+empty_moov+default_base_moof", "frag_duration": "1000000"},  # a live recording's
    {"movflags": "faststart"}])  # (an edit list: x264's B-frames)
def test_an_mp4_that_ends_where_it_says_is_not_taken_for_truncated(run_cli, probe, tmp_path, options):
    # Those that start at 10 s, and a recording killed between two fragments (it states no more than it holds).
    src = tmp_path / "in.mp4"
    write_video(src, pts=[(250 + i) * 512 for i in range(150)], gop=25, audio=True, options=options)
    killed = tmp_path / "killed.mp4"
    data = src.read_bytes()
    killed.write_bytes(data[: data.rfind(b"moof", 0, len(data) * 8 // 10) - 4] if b"moof" in data else data)
    for path in (src, killed):
        out = tmp_path / f"out_{path.name}"
        code, err = run_cli(path, out, "--model", "dcp")
        assert code == 0, err
        assert probe(out)["times"] == probe(path)["times"]


def test_truncated_file_without_its_index_is_refused(make_video, run_cli, tmp_path):
    src = make_video(frames=30)
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # moov is at the end: nothing in it can be found
    code, err = run_cli(cut, tmp_path / "o.mp4")
    assert code == 1 and "corrupt or truncated" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "in.mp4"]


def test_a_recording_whose_clock_restarts_goes_on_where_it_was(run_cli, probe, caplog, tmp_path):
    # Two recordings of the same camera, the second restarting its clock at zero, spliced as a recorder does
    # (MPEG-TS: concatenated bytes). No muxer takes timestamps that go back, so the rest continues after them.
    parts = [tmp_path / "a.ts", tmp_path / "b.ts"]
    for part in parts:
        write_video(part, frames=50, audio=True)
    src, out = tmp_path / "spliced.ts", tmp_path / "out.mp4"
    src.write_bytes(b"".join(p.read_bytes() for p in parts))
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    assert "timestamps jump back 2.0 s at 2.0 s (a splice or a restarted clock)" in caplog.text
    a, b = probe(src), probe(out)
    assert b["count"] == a["count"] == 100
    steps = {t1 - t0 for t0, t1 in zip(b["times"], b["times"][1:])}
    assert steps == {Fraction(1, 25)}  # the second part follows the first one frame later
    with av.open(str(out)) as c:
        audio = [p.pts * p.time_base for p in c.demux(c.streams.audio[0]) if p.size]
    assert len(audio) >= len(a["audio"]) - 2  # the packet cut by the splice may go
    assert all(t0 < t1 for t0, t1 in zip(audio, audio[1:])) and audio[-1] > 3.9


@pytest.mark.parametrize("second", [0, 12])
def test_a_splice_of_recordings_under_a_second_long_goes_on_where_it_was(run_cli, probe, caplog, tmp_path, second):
    # A DVR's one-second files joined (cat), picture only, the second starting its clock where the first did, or
    # 0.48 s after: a step back of less than a second, which once dropped the second file's frames as damaged.
    parts = [tmp_path / "a.ts", tmp_path / "b.ts"]
    for part, start in zip(parts, (0, second)):
        write_video(part, pts=[(start + i) * 3600 for i in range(25)], time_base=Fraction(1, 90000))
    src, out = tmp_path / "spliced.ts", tmp_path / "out.mp4"
    src.write_bytes(b"".join(p.read_bytes() for p in parts))
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    assert caplog.text.count("timestamps jump back") == 1, caplog.text
    assert probe(out)["times"] == [Fraction(i, 25) for i in range(50)]


@pytest.mark.parametrize("limit", [(), ("--duration", 3)])
def test_a_splice_whose_sound_comes_first_goes_on_where_it_was(run_cli, probe, caplog, tmp_path, limit):
    # A camera's or a DVR's files joined (cat a.ts b.ts), each with its sound starting 0.1 s before its pictures:
    # the demuxer hands the first part's last picture over after the second part's first sound. That picture once
    # took the shift of the second part, 2 s on, and made a second jump: a 2 s hole in picture and sound, and
    # --duration counted the hole.
    part = tmp_path / "a.ts"
    write_video(part, frames=50, audio=True, pts=[(i + 2) * 3600 for i in range(50)], time_base=Fraction(1, 90000))
    src, out = tmp_path / "spliced.ts", tmp_path / "out.mp4"
    src.write_bytes(part.read_bytes() * 2)
    code, err = run_cli(src, out, "--model", "dcp", *limit)
    assert code == 0, err
    assert caplog.text.count("timestamps jump back") == 1, caplog.text
    times = probe(out)["times"]
    steps = sorted(t1 - t0 for t0, t1 in zip(times, times[1:]))
    # The second part's pictures come as far after the first's as its sound leads them (0.1 s), not 2 s after.
    assert set(steps[:-1]) == {Fraction(1, 25)} and steps[-1] < Fraction(1, 5), steps[-1]
    if limit:  # 3 s of the recording, the splice's 0.1 s included
        assert times[-1] - times[0] < 3 <= times[-1] + Fraction(1, 25) - times[0], (len(times), times[-1])
    else:
        assert len(times) == 100
    with av.open(str(out)) as c:
        audio = [p.pts * p.time_base for p in c.demux(c.streams.audio[0]) if p.size]
    sound_steps = [t1 - t0 for t0, t1 in zip(audio, audio[1:])]
    assert min(sound_steps) > 0 and max(sound_steps) < Fraction(3 * 1024, 48000), max(sound_steps)
    assert abs(audio[-1] - times[-1]) < Fraction(2, 25) and abs(audio[0] - times[0]) < Fraction(3, 25)


def test_a_camera_that_pauses_keeps_its_timestamps(run_cli, probe, caplog, tmp_path):
    # A stalled camera piped through `ffmpeg -c copy -f mpegts`: 3 s without a frame, then 25 fps again. MPEG-TS
    # video packets carry no duration, so the pause must not be taken for a frame's length.
    pts = [i * 3600 for i in range(11)] + [(10 + i) * 3600 + 3 * 90000 for i in range(1, 40)]
    src, out = tmp_path / "pause.ts", tmp_path / "out.mp4"
    write_video(src, pts=pts, time_base=Fraction(1, 90000))
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0 and "jump back" not in caplog.text, err
    times = probe(src)["times"]  # (an MP4 of an MPEG-TS starts at zero)
    assert probe(out)["times"] == [t - times[0] for t in times] and len(times) == 50


def test_a_recording_that_starts_below_zero_keeps_every_frame(run_cli, probe, caplog, tmp_path):
    # An MPEG-TS whose 33-bit clock wraps 1 s in: FFmpeg gives its first second negative times, and MP4 hid every
    # frame before zero behind its edit list. The whole recording moves up to start at zero.
    src, out = tmp_path / "wrap.ts", tmp_path / "out.mp4"
    write_video(src, pts=[(1 << 33) - 90000 + i * 3600 for i in range(50)], time_base=Fraction(1, 90000))
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    assert "timestamps start at -1.00 s: moved up to start at 0" in caplog.text
    before = probe(src)["times"]
    assert before[0] == -1 and probe(out)["times"] == [t + 1 for t in before]


def _with_subtitles(tmp_path: Path, lines: list[tuple[int, int, str]]) -> Path:
    """A 3 s MKV (75 frames) with SRT lines (start ms, duration ms, text), muxed in order of their start."""
    video, path = tmp_path / "v.mp4", tmp_path / "subs.mkv"
    write_video(video, frames=75)
    with av.open(str(video)) as vc, av.open(str(path), "w") as oc:
        v, s = oc.add_stream_from_template(vc.streams.video[0]), oc.add_mux_stream("subrip")
        packets = [(p.dts * p.time_base, p, v) for p in vc.demux(vc.streams.video[0]) if p.size]
        for start, length, text in lines:
            packet = av.Packet(text.encode())
            packet.pts = packet.dts = start
            packet.duration, packet.time_base = length, Fraction(1, 1000)
            packets.append((Fraction(start, 1000), packet, s))
        for _, packet, stream in sorted(packets, key=lambda item: item[0]):
            packet.stream = stream
            oc.mux(packet)
    return path


def subtitles(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.subtitles[0]) if p.size]


def test_subtitles_that_overlap_or_start_together_are_copied_as_they_are(run_cli, probe, caplog, tmp_path):
    # A sign shown for 2.5 s with dialogue over it; two speakers at once: routine in SRT and ASS files.
    src = _with_subtitles(tmp_path, [(20, 2500, "A sign"), (500, 1000, "- One"), (500, 1000, "- Two"),
                                     (2600, 300, "End")])
    out = tmp_path / "out.mkv"
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0 and "jump back" not in caplog.text and "corrupt" not in err, err
    assert subtitles(out) == subtitles(src) == [(20, b"A sign"), (500, b"- One"), (500, b"- Two"), (2600, b"End")]
    assert probe(out)["times"] == probe(src)["times"]


def test_a_stream_that_appears_mid_file_does_not_end_the_run(run_cli, probe, tmp_path):
    # A PES on a PID the programme table never announced (damage, or a broadcast adding a stream): FFmpeg adds a
    # stream mid-file, which PyAV's demuxer does not know when it flushes at the end.
    src = tmp_path / "clean.ts"
    write_video(src, frames=150)
    data = src.read_bytes()
    packets = [data[i: i + 188] for i in range(0, len(data), 188)]
    pes = bytes([0, 0, 1, 0xE0, 0, 0, 0x80, 0, 0, 0, 0, 1, 0xB3]).ljust(184, b"\xff")
    stray = [bytes([0x47, 0x43, 0x00, 0x10 | k]) + pes for k in range(3)]  # PID 0x300, payload only
    late = len(packets) * 9 // 10  # past the 5 s FFmpeg reads when it opens the file, which would list it
    damaged, out = tmp_path / "new_pid.ts", tmp_path / "out.mp4"
    damaged.write_bytes(b"".join(packets[:late] + stray + packets[late:]))
    code, err = run_cli(damaged, out, "--model", "dcp")
    assert code == 0, err
    times = probe(src)["times"]  # (an MP4 of an MPEG-TS starts at zero)
    assert probe(out)["times"] == [t - times[0] for t in times]


def test_audio_that_starts_late_is_copied(run_cli, probe, tmp_path):
    # The microphone comes on 8 s in: further than FFmpeg's first look for the audio's format.
    src, out = tmp_path / "late_audio.ts", tmp_path / "out.ts"
    with av.open(str(src), "w") as oc:
        video = oc.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        audio = oc.add_stream("aac", rate=48000, layout="mono")
        for i in range(300):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 40 + i % 150, np.uint8), format="rgb24")
            frame.pts = i
            oc.mux(video.encode(frame))
        oc.mux(video.encode(None))
        for start in range(8 * 48000, 12 * 48000, 1024):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, start
            oc.mux(audio.encode(chunk))
        oc.mux(audio.encode(None))
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    a, b = probe(src), probe(out)
    assert b["count"] == a["count"] == 300
    assert len(a["audio"]) > 150 and b["audio"] == a["audio"]


def test_only_a_regular_file_is_read_on_after_a_stop(tmp_path):
    # After Ctrl-C a file on disk is read on for the sound stored after its picture; a pipe is not: its writer may
    # keep it open and say nothing more (a run stopped on a fed pipe waited 10 s, or for ever)
    import os
    import threading

    from streamdehaze.sources import VideoFileSource

    src = tmp_path / "in.ts"
    write_video(src, frames=50, audio=True)
    with VideoFileSource(src) as source:
        first = next(item for item in source if isinstance(item, av.VideoFrame))
        assert source.cut_after(first) == first.pts * first.time_base + Fraction(1, 25)
        assert all(isinstance(item, av.Packet) for item in source)  # the sound up to there, no more frames
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(src.read_bytes()))
    feeder.start()
    try:
        with VideoFileSource(fifo) as source:
            first = next(item for item in source if isinstance(item, av.VideoFrame))
            assert source.cut_after(first) is None
            assert sum(isinstance(item, av.VideoFrame) for item in source) == 49  # read as before
    finally:
        feeder.join(30)


def test_a_named_pipe_is_an_input(run_cli, probe, tmp_path):
    # A feeder writing into a FIFO (mkfifo): its size on disk is 0, and it was refused as an empty input
    import os
    import threading

    src, fifo = tmp_path / "in.ts", tmp_path / "feed"
    write_video(src, frames=20)
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(src.read_bytes()))
    feeder.start()
    try:
        code, err = run_cli(fifo, tmp_path / "out.mp4", "--model", "dcp")
    finally:
        if feeder.is_alive():  # (refused before it was opened: the feeder waits for a reader)
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        feeder.join(30)
    assert code == 0, err
    assert probe(tmp_path / "out.mp4")["count"] == 20

"""End-to-end file runs: every frame kept with its timestamp, streams copied, layout preserved."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streamdehaze.frames import planes_of
from streamdehaze.hdr import hdr10_of
from tests.conftest import decoded_sound, hazy_pattern, pitch, sound_that_changes, with_damaged_sound


def test_constant_rate_with_audio(make_video, probe, run_cli, tmp_path):
    src = make_video(frames=20, audio=True)
    out = tmp_path / "out.mp4"
    code, err = run_cli(src, out, "--model", "dcp", "--quiet")
    assert code == 0, err
    a, b = probe(src), probe(out)
    assert b["count"] == a["count"] == 20
    assert b["times"] == a["times"]
    assert a["audio"] and b["audio"] == a["audio"]  # byte-identical packets, none re-encoded
    assert b["size"] == a["size"] and b["pix_fmt"] == "yuv420p"


def test_matroska_keeps_the_times_of_sound_that_starts_before_zero(make_video, probe, run_cli, tmp_path):
    # FFmpeg's AAC starts 1024 samples (21 ms) before zero, its encoder's priming: Matroska holds that as it is,
    # where it shifted the whole file 21 ms later.
    src, out = make_video(frames=25, audio=True), tmp_path / "out.mkv"
    code, err = run_cli(src, out, "--model", "dcp", "--quiet")
    assert code == 0, err

    def first_sound(path):
        with av.open(str(path)) as c:
            return next(p.pts * p.time_base for p in c.demux(c.streams.audio[0]) if p.size)

    assert first_sound(src) == Fraction(-1024, 48000) and round(first_sound(out), 3) == round(first_sound(src), 3)
    assert probe(out)["times"] == probe(src)["times"]


def test_variable_frame_rate_timestamps(make_video, probe, run_cli, tmp_path):
    pts = [0, 300, 700, 1000, 2600, 2700, 4100, 4200, 4250, 6000]  # 1/1000 s ticks, irregular
    src = make_video("vfr.mkv", pts=pts, time_base=Fraction(1, 1000))
    out = tmp_path / "vfr_out.mkv"
    assert run_cli(src, out, "--quiet")[0] == 0
    assert probe(out)["times"] == [Fraction(p, 1000) for p in pts]


def test_variable_frame_rate_mp4(make_video, probe, run_cli, tmp_path):
    pts = [0, 512, 1536, 1700, 4000, 4512, 9000]
    src = make_video("vfr.mp4", pts=pts, time_base=Fraction(1, 12800))
    out = tmp_path / "vfr_out.mp4"
    assert run_cli(src, out, "--quiet")[0] == 0
    assert probe(out)["times"] == probe(src)["times"] == [Fraction(p, 12800) for p in pts]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_time_lapse_is_whole(make_video, probe, run_cli, tmp_path, suffix):
    # A frame every 2 s: its last frame starts 2 s before the stated end, and was taken for a cut ("is truncated:
    # its video ends at 8.0 s of the 10.0 s it states", exit 1).
    src = make_video(f"lapse{suffix}", frames=5, rate=Fraction(1, 2), time_base=Fraction(1, 1000))
    out = tmp_path / f"out{suffix}"
    assert run_cli(src, out, "--model", "dcp", "--quiet") == (0, "")
    assert probe(out)["times"] == probe(src)["times"] == [0, 2, 4, 6, 8]


def test_odd_size_is_preserved(make_video, probe, run_cli, tmp_path):
    src = make_video(width=317, height=241, pix_fmt="yuv444p", frames=6)
    out = tmp_path / "odd.mp4"
    assert run_cli(src, out, "--quiet")[0] == 0
    info = probe(out)
    assert info["size"] == (317, 241) and info["count"] == 6
    assert info["pix_fmt"] == "yuv444p"  # 4:2:0 cannot hold an odd size


def test_rotation_tag_is_preserved(make_video, probe, run_cli, tmp_path):
    src = make_video(rotation=90, frames=4)
    out = tmp_path / "rot.mp4"
    assert run_cli(src, out, "--quiet")[0] == 0
    assert probe(src)["rotation"] == probe(out)["rotation"] == 90


@pytest.mark.parametrize("output", ["out.ts", "-"])
def test_mpeg_ts_keeps_the_times_of_b_frames_from_zero(make_video, probe, capfdbinary, tmp_path, output):
    # x264's B-frames are decoded before 0: FFmpeg would shift a whole MPEG-TS later by that (0.08 s).
    from streamdehaze.cli import main
    src, out = make_video(frames=10), tmp_path / "out.ts"
    assert main([str(src), "-" if output == "-" else str(out), "--model", "dcp", "--quiet"]) == 0
    if output == "-":
        out.write_bytes(capfdbinary.readouterr().out)
    assert probe(out)["times"] == probe(src)["times"] == [Fraction(i, 25) for i in range(10)]


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".ts"])
def test_a_clip_cut_from_mpeg_ts_starts_at_zero_on_its_ticks(make_video, probe, run_cli, tmp_path, suffix):
    """A transport stream's clock starts anywhere (an NVR's at 10:00:00, FFmpeg's at 1.4 s): an MP4 or MKV kept it
    as ten hours of nothing before the picture. It starts at zero, every frame on its tick (FFmpeg's milliseconds
    once moved 100450 ticks of 90 kHz to 1.116 s, every frame 1 ms early); another MPEG-TS keeps the clock."""
    first = 36000 * 90000 + 450
    src = make_video("cut.ts", pts=[first + 3600 * i for i in range(6)], time_base=Fraction(1, 90000))
    out = tmp_path / f"out{suffix}"
    assert run_cli(src, out, "--model", "dcp", "--quiet") == (0, "")
    times = probe(src)["times"]
    assert times[0] == Fraction(first, 90000)
    assert probe(out)["times"] == (times if suffix == ".ts" else [t - times[0] for t in times])
    with av.open(str(out)) as written:
        assert suffix == ".ts" or written.duration < av.time_base  # (0.24 s of frames, not ten hours)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".ts"])
def test_every_segment_of_an_nvr_s_recording_starts_at_zero(make_video, probe, run_cli, tmp_path, suffix):
    """The first segment of an MPEG-TS whose clock starts at 10:00:00 kept that clock (ten hours before its first
    frame, in players that read it), the later ones starting at 0; and segments named by their time were named ten
    hours late."""
    first = 36000 * 90000 + 450
    src = make_video("nvr.ts", pts=[first + 3600 * i for i in range(50)], time_base=Fraction(1, 90000))
    assert run_cli(src, tmp_path / f"cam{suffix}", "--model", "dcp", "--segment-time", 0.8, "--quiet") == (0, "")
    starts = [probe(tmp_path / f"cam_{n:05d}{suffix}")["times"][0] for n in range(3)]
    assert starts == [0, 0, 0], starts
    run_cli(src, tmp_path / f"at_%Y%m%d-%H%M%S{suffix}", "--model", "dcp", "--segment-time", 0.8, "--quiet")
    named = sorted(p.name for p in tmp_path.glob("at_*"))
    began = [datetime.datetime.strptime(name[3:18], "%Y%m%d-%H%M%S") for name in named]
    assert len(named) == 3 and all(abs((datetime.datetime.now() - t).total_seconds()) < 120 for t in began), named


def test_a_rotation_tag_mpeg_ts_cannot_hold_is_said(make_video, run_cli, caplog, tmp_path):
    src = make_video(rotation=90, frames=4)
    assert run_cli(src, tmp_path / "rot.ts", "--model", "dcp")[0] == 0
    assert "rot.ts (mpegts) has no rotation tag: the picture is written as stored, turned 90 degrees from upright " \
           "(.mp4, .mov or .mkv keep the tag)" in caplog.text


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv444p", "yuv422p"])
def test_other_pixel_formats_are_converted(make_video, probe, run_cli, tmp_path, pix_fmt):
    src = make_video(pix_fmt=pix_fmt, frames=5, width=64, height=48)
    out = tmp_path / f"{pix_fmt}.mp4"
    assert run_cli(src, out, "--quiet")[0] == 0
    a, b = probe(src), probe(out)
    assert b["count"] == 5 and b["pix_fmt"] == "yuv420p"
    # Dehazing darkens the haze: output mean below input mean, but the picture is still there.
    assert np.mean(b["rgb"][2]) < np.mean(a["rgb"][2]) - 5
    assert np.corrcoef(a["rgb"][2].ravel(), b["rgb"][2].ravel())[0, 1] > 0.5


def test_ten_bits_in_stay_ten_bits_out_where_the_encoder_plays_them(make_video, run_cli, tmp_path):
    src = make_video("deep.mkv", pix_fmt="yuv420p10le", frames=4, width=64, height=48)
    deep, plain = tmp_path / "deep_out.mkv", tmp_path / "plain_out.mkv"
    assert run_cli(src, deep, "--codec", "libx265", "--crf", 0, "--quiet")[0] == 0
    assert run_cli(src, plain, "--crf", 0, "--quiet")[0] == 0  # H.264 at 10 bits plays on few decoders: 8
    with av.open(str(deep)) as a, av.open(str(plain)) as b:
        frames = [next(a.decode(video=0)), next(b.decode(video=0))]
    assert [f.format.name for f in frames] == ["yuv420p10le", "yuv420p"]
    luma = [planes_of(f)[0].astype(np.float64) for f in frames]
    assert len(np.unique(luma[0] % 4)) == 4  # finer steps than 8 bits hold, not 8-bit levels shifted up
    assert np.abs(luma[0] / 4 - luma[1]).mean() < 1.0  # the same picture, at 4x the resolution of levels


@pytest.mark.parametrize("pix_fmt", ["yuv422p10le", "yuv444p", "yuv422p"])
def test_a_master_s_codec_keeps_the_input_s_chroma_and_depth(make_video, run_cli, tmp_path, pix_fmt):
    # FFV1, lossless, was given 4:2:0 of a 4:2:2 master though it takes any layout (ProRes kept 4:2:2: it has no
    # 4:2:0). Delivery codecs still write 4:2:0 (test_other_pixel_formats_are_converted).
    src = make_video("in.mkv", codec="ffv1", pix_fmt=pix_fmt, frames=3, width=64, height=48)
    out = tmp_path / "out.mkv"
    assert run_cli(src, out, "--model", "dcp", "--strength", 0, "--codec", "ffv1", "--quiet")[0] == 0
    with av.open(str(src)) as a, av.open(str(out)) as b:
        read, written = next(a.decode(video=0)), next(b.decode(video=0))
    assert written.format.name == pix_fmt
    # every chroma sample of the input's there: at strength 0 the picture is the input's, but for rounding
    level = 4 if "10" in pix_fmt else 1
    for plane, was in zip(planes_of(written), planes_of(read)):
        assert plane.shape == was.shape and np.abs(plane.astype(int) - was).mean() < level


def test_prores_carries_the_colour_of_its_input(make_video, run_cli, tmp_path):
    # The ProRes encoder writes each frame's colour tags, not its stream's: an HLG master came out untagged (shown
    # as SDR) and BT.709 decoded as unspecified.
    src = make_video("hlg.mkv", pix_fmt="yuv420p10le", frames=3, width=64, height=48,
                     colour={"color_trc": 18, "color_primaries": 9, "colorspace": 9})
    out = tmp_path / "out.mov"
    assert run_cli(src, out, "--model", "dcp", "--codec", "prores_ks", "--quiet") == (0, "")
    with av.open(str(out)) as written:
        frame = next(written.decode(video=0))
        assert (written.streams.video[0].codec_context.name, frame.format.name) == ("prores", "yuv422p10le")
    assert (int(frame.colorspace), int(frame.color_primaries), int(frame.color_trc), int(frame.color_range)) \
        == (9, 9, 18, 1)


def _hdr10(path: Path) -> None:
    """An HDR10 clip: PQ over BT.2020 in 10 bits, with its mastering display (BT.2020's primaries, D65, 1000 and
    0.0001 cd/m²) and light levels (MaxCLL 1000, MaxFALL 400)."""
    params = "log-level=error:hdr10=1:master-display=G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)" \
             "L(10000000,1):max-cll=1000,400"
    with av.open(str(path), "w") as oc:
        stream = oc.add_stream("libx265", rate=25, options={"x265-params": params})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p10le"
        ctx = stream.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = 9, 9, 16
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(hazy_pattern(i, 64, 48), format="rgb24").reformat(format=stream.pix_fmt)
            frame.pts = i
            oc.mux(stream.encode(frame))
        oc.mux(stream.encode(None))


@pytest.mark.parametrize("codec", ["libx265", "libsvtav1"])
def test_hdr10_s_mastering_display_and_light_levels_go_along(run_cli, tmp_path, codec):
    # A TV tone-maps HDR10 by these; they were dropped (PyAV writes no container side data: the encoder must).
    src, out = tmp_path / "hdr10.mkv", tmp_path / "out.mkv"
    _hdr10(src)
    assert run_cli(src, out, "--model", "dcp", "--codec", codec, "--quiet") == (0, "")
    with av.open(str(src)) as a, av.open(str(out)) as b:
        stated, kept = hdr10_of(next(a.decode(video=0))), hdr10_of(next(b.decode(video=0)))
    assert stated.light == kept.light == (1000, 400)
    # (AV1 states chromaticities in steps of 1/65536, the least luminance in steps of 1/16384 cd/m²)
    assert np.allclose(np.array(kept.display, float), np.array(stated.display, float), atol=4e-5)
    assert stated.display[0] == (Fraction(177, 250), Fraction(73, 250))  # (red: BT.2020's 0.708, 0.292)


def test_hdr10_metadata_an_encoder_cannot_write_is_said(run_cli, caplog, tmp_path):
    src, out = tmp_path / "hdr10.mkv", tmp_path / "out.mov"
    _hdr10(src)
    assert run_cli(src, out, "--model", "dcp", "--codec", "prores_ks")[0] == 0
    assert "the input's HDR10 mastering display and light levels are not written by prores_ks (--codec libx265 " \
           "writes them)" in caplog.text


def test_hdr10_written_in_eight_bits_says_its_metadata_goes_too(run_cli, caplog, tmp_path):
    # The 8-bit warning stood alone: the mastering display and light levels were dropped without a word.
    src, out = tmp_path / "hdr10.mkv", tmp_path / "out.mp4"
    _hdr10(src)
    assert run_cli(src, out, "--model", "dcp")[0] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["the input is HDR video in 10 bits; libx264 writes it in 8, which shows banding, and without "
                        "its HDR10 mastering display and light levels (--codec libx265 keeps both)"], warnings
    with av.open(str(out)) as written:
        assert hdr10_of(next(written.decode(video=0))) is None


def test_hdr_written_in_eight_bits_says_so(make_video, run_cli, caplog, tmp_path):
    # (4 frames: x265 run again and again in one process fails to finish a third of 2-frame clips)
    src = make_video("hlg.mkv", pix_fmt="yuv420p10le", frames=4, width=64, height=48,
                     colour={"color_trc": 18, "color_primaries": 9, "colorspace": 9})
    assert run_cli(src, tmp_path / "out.mkv", "--model", "dcp")[0] == 0
    assert "the input is HDR video in 10 bits; libx264 writes it in 8, which shows banding (--codec libx265 " \
           "keeps 10 bits)" in caplog.text
    caplog.clear()
    code, err = run_cli(src, tmp_path / "out265.mkv", "--model", "dcp", "--codec", "libx265")
    assert code == 0 and "HDR" not in caplog.text, err


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv420p"])
def test_deeper_video_written_in_eight_bits_says_so_once(make_video, probe, run_cli, caplog, tmp_path, pix_fmt):
    # H.264 High 10 (or ProRes, FFV1 at 10 bits) in SDR went to 8 bits without a word: only HDR had one.
    src = make_video("in.mkv", pix_fmt=pix_fmt, frames=4, width=64, height=48,
                     colour={"color_trc": 1, "color_primaries": 1, "colorspace": 1})
    out = tmp_path / "out.mp4"
    assert run_cli(src, out, "--model", "dcp")[0] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert probe(out)["pix_fmt"] == "yuv420p"
    assert warnings == (["the input is video in 10 bits; libx264 writes it in 8 (--codec libx265 keeps 10 bits)"]
                        if pix_fmt == "yuv420p10le" else []), warnings


def test_an_avi_with_b_frames_keeps_every_frame_in_order(make_video, probe, run_cli, tmp_path):
    # AVI stores no presentation times: the demuxer's stand-ins come out of the decoder reordered (1, 4, 3, 5, 2, ...),
    # which once cost half the frames as "damaged". Frames are timed by their decode times, as FFmpeg's tools do.
    src = make_video("in.avi", frames=20, time_base=Fraction(1, 25))  # libx264's defaults: B-frames
    out = tmp_path / "out.mp4"
    code, err = run_cli(src, out, "--strength", 0)
    a, b = probe(src), probe(out)
    assert code == 0 and "corrupt" not in err, err
    assert b["count"] == 20 and all(y - x == Fraction(1, 25) for x, y in zip(b["times"], b["times"][1:]))
    # each in its place: within 4 levels of its input frame (of the next: 12)
    assert all(np.abs(x.astype(int) - y).mean() < 4 for x, y in zip(a["rgb"], b["rgb"]))


@pytest.mark.parametrize("limit, frames", [(("--max-frames", 20), 20), (("--duration", 0.5), 13),
                                           (("--duration", 0.2), 5)])  # (0.2 as a float is just above 1/5 s)
def test_a_cut_clip_has_its_audio_end_with_its_picture(make_video, probe, run_cli, tmp_path, limit, frames):
    src = make_video(frames=50, audio=True)
    out = tmp_path / "cut.mp4"
    assert run_cli(src, out, "--model", "dcp", "--quiet", *limit)[0] == 0
    a, b = probe(src), probe(out)
    assert b["count"] == frames
    assert b["audio"] == a["audio"][: len(b["audio"])]  # the first packets, untouched
    with av.open(str(out)) as cut:
        audio_end = max((p.pts + p.duration) * p.time_base for p in cut.demux(audio=0) if p.size)
    picture_end = b["times"][-1] + Fraction(1, 25)
    assert picture_end <= audio_end < picture_end + Fraction(1024, 48000)  # within one AAC packet of it


def test_a_clip_cut_in_a_pause_has_its_sound_end_at_the_cut(make_video, probe, run_cli, tmp_path):
    """--duration 1.5 where the picture pauses from 1 s to 3 s (a phone's frozen video): the sound ran on to the
    next frame's time, 3 s, twice the length asked for."""
    pts = [i * 512 for i in range(25)] + [3 * 12800 + i * 512 for i in range(25)]  # 25 fps, 1/12800
    src = make_video(frames=len(pts), pts=pts, audio=True)
    out = tmp_path / "cut.mp4"
    assert run_cli(src, out, "--model", "dcp", "--quiet", "--duration", 1.5)[0] == 0
    assert probe(out)["count"] == 25
    with av.open(str(out)) as cut:
        audio_end = max((p.pts + p.duration) * p.time_base for p in cut.demux(audio=0) if p.size)
    assert Fraction(3, 2) <= audio_end < Fraction(3, 2) + Fraction(1024, 48000), float(audio_end)


def test_a_matroska_file_whose_clock_starts_an_hour_in_starts_at_zero_in_mp4(probe, run_cli, tmp_path):
    """A Matroska file remuxed from a recorder's transport stream: every stream an hour in. Its MP4 began with an
    empty edit of an hour (3604 s long, an hour of nothing in players); its streams are moved alike to 0."""
    src, out = tmp_path / "late.mkv", tmp_path / "o.mp4"
    start = 3600 * 1000  # ms
    with av.open(str(src), "w") as oc:
        v = oc.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 96, 64, "yuv420p"
        a = oc.add_stream("aac", rate=48000, layout="mono")
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 40 + 4 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = start + 40 * i, Fraction(1, 1000)
            oc.mux(v.encode(frame))
        oc.mux(v.encode(None))
        for i in range(0, 48000, 1024):  # the sound 0.2 s after the picture
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = 48000, (start + 200) * 48 + i, Fraction(1, 48000)
            oc.mux(a.encode(chunk))
        oc.mux(a.encode(None))
    assert run_cli(src, out, "--model", "dcp", "--quiet")[0] == 0
    read, written = probe(src)["times"], probe(out)["times"]
    assert [t - read[0] for t in read] == written and written[0] == 0
    with av.open(str(out)) as c:
        sound = min(p.pts * p.time_base for p in c.demux(audio=0) if p.size and p.pts is not None)
        assert c.duration < 2 * av.time_base, c.duration  # (not 3602 s)
    assert abs(sound - Fraction(1, 5)) <= Fraction(1, 40), float(sound)  # the sound as far after the picture


def test_subtitles_are_copied(make_video, probe, run_cli, tmp_path):
    src = make_video("subs.mkv", subtitles=True, audio=True)
    out = tmp_path / "subs_out.mkv"
    assert run_cli(src, out, "--quiet")[0] == 0
    a, b = probe(src), probe(out)
    assert len(a["subtitles"]) == 3 and b["subtitles"] == a["subtitles"]
    assert b["audio"] == a["audio"]


def test_subtitles_mpeg_ts_cannot_hold_are_left_out_with_a_warning(make_video, run_cli, caplog, tmp_path):
    src, out = make_video("subs.mkv", subtitles=True, audio=True), tmp_path / "out.ts"
    assert run_cli(src, out, "--model", "dcp")[0] == 0
    assert "not copying subtitle stream #2: subrip cannot be stored in .ts" in caplog.text
    with av.open(str(out)) as written:  # not stored as a stream of unnamed data
        assert [s.type for s in written.streams] == ["video", "audio"]


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])
def test_segments_of_a_file_run_carry_its_audio(make_video, probe, run_cli, tmp_path, suffix):
    src = make_video(frames=30, audio=True)
    out = tmp_path / "segments" / f"out{suffix}"
    out.parent.mkdir()
    code, err = run_cli(src, out, "--segment-time", 10, "--model", "dcp", "--quiet")
    assert code == 0, err
    (segment,) = out.parent.iterdir()  # 1.2 s: one segment
    a, b = probe(src), probe(segment)
    assert b["count"] == 30 and len(b["audio"]) == len(a["audio"]) > 50
    if suffix == ".mp4":
        assert b["audio"] == a["audio"]  # (MPEG-TS adds a header to each AAC packet)


def test_each_segment_has_its_sound_to_its_last_frame(make_video, run_cli, tmp_path):
    # An MP4 stores its sound up to a second after its picture: a segment was closed with the first frame of the
    # next, and the sound of its last second, come after that, was dropped (0.8 s of a 4 s segment here)
    src = make_video(frames=500, width=320, height=240, audio=True)  # 20 s, its sound stored 1.1 s behind
    out = tmp_path / "segments" / "out.mp4"
    out.parent.mkdir()
    assert run_cli(src, out, "--segment-time", 4, "--model", "dcp", "--quiet") == (0, "")
    ends, sound = [], []
    for segment in sorted(out.parent.iterdir()):
        with av.open(str(segment)) as c:
            packets = [(p.stream.type, (p.pts + p.duration) * p.time_base, bytes(p)) for p in c.demux() if p.size]
        ends.append([float(max(end for which, end, _ in packets if which == kind)) for kind in ("video", "audio")])
        sound += [payload for which, _, payload in packets if which == "audio"]
    assert [round(picture, 2) for picture, _ in ends] == [4] * 5
    assert all(abs(heard - seen) < 0.025 for seen, heard in ends), ends  # (an AAC frame: 21 ms)
    with av.open(str(src)) as c:
        assert sound == [bytes(p) for p in c.demux(audio=0) if p.size]  # each packet once, in order


def test_segments_shorter_than_their_sound_s_delay_keep_it_too(make_video, tmp_path):
    # With sound 1.5 s behind the pictures, a segment of 1 s was closed as the one after it ended, before its sound
    # came: the sound dropped (the dehazing's own delay hid it through the command line)
    from streamdehaze.encoders import choose_encoding
    from streamdehaze.sinks import SegmentedSink, VideoSink
    from streamdehaze.sources import VideoFileSource, packet_start

    source = VideoFileSource(make_video(frames=100, audio=True))  # 4 s
    encoding = choose_encoding(source.info)
    with source:
        items = list(source)
        sound = [item for item in items if isinstance(item, av.Packet)]
        late = [item for item in items if isinstance(item, av.VideoFrame)]
        for packet in sound:  # each after the pictures of 1.5 s later
            later = [i for i, f in enumerate(late) if isinstance(f, av.VideoFrame) and
                     f.pts * f.time_base > packet_start(packet) + Fraction(3, 2)]
            late.insert(later[0] if later else len(late), packet)
        sink = SegmentedSink(tmp_path / "cam_%05d.mp4", 1.0, 0, lambda path, start: VideoSink(
            path, source.info, encoding, start=start, exclusive=True, as_it_goes=True))
        for item in late:
            sink.write(item)
        sink.close()
    kept = []
    for segment in sorted(tmp_path.glob("cam_*.mp4")):
        with av.open(str(segment)) as c:
            packets = [(p.stream.type, (p.pts + p.duration) * p.time_base, bytes(p)) for p in c.demux() if p.size]
        picture, heard = (max(end for which, end, _ in packets if which == kind) for kind in ("video", "audio"))
        assert abs(heard - picture) < 0.025, (segment.name, float(picture), float(heard))
        kept += [payload for which, _, payload in packets if which == "audio"]
    assert sink.frames == 100 and kept == [bytes(p) for p in sound]


def test_segments_cut_at_their_time_and_each_starts_at_zero(make_video, probe, run_cli, tmp_path):
    src = make_video(frames=60, audio=True)  # 2.4 s
    out = tmp_path / "segments" / "out.mkv"
    out.parent.mkdir()
    code, err = run_cli(src, out, "--segment-time", 1, "--model", "dcp")
    assert code == 0 and err.endswith(f"-> {out.parent / 'out_00000.mkv'} .. out_00002.mkv\n"), err  # what exists
    parts = [probe(out.parent / f"out_{n:05d}.mkv") for n in range(3)]
    assert sorted(p.name for p in out.parent.iterdir()) == [f"out_{n:05d}.mkv" for n in range(3)]
    assert [p["count"] for p in parts] == [25, 25, 10]  # a new file at 1 s and at 2 s of video
    # Each later one plays on its own from 0; the first, as a whole file would, from just after the sound's priming.
    lead = parts[0]["times"][0]
    assert parts[1]["times"][0] == parts[2]["times"][0] == 0 and 0 <= lead < Fraction(1, 25)
    joined = [t - lead for t in parts[0]["times"]] + [t + n for n, p in enumerate(parts) if n for t in p["times"]]
    assert joined == probe(src)["times"]  # together: every frame at its time
    assert sum(len(p["audio"]) for p in parts) == len(probe(src)["audio"])  # and all of the sound


def test_segments_named_by_their_time(make_video, probe, run_cli, caplog, tmp_path):
    """strftime's directives name each segment by the time it begins (FFmpeg's -strftime 1), in local time: of a
    file, its creation time and the time into it (a dashcam's clip); a name taken is not replaced. It was an
    internal error ("unsupported format character 'Y'")."""
    import time
    made = make_video(frames=60, audio=True)  # 2.4 s
    src = made.with_name("dashcam.mp4")
    with av.open(str(made)) as inp, av.open(str(src), "w") as out:
        out.metadata["creation_time"] = "2026-03-01T06:30:58.000000Z"
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    folder = tmp_path / "segments"
    folder.mkdir()
    begun = 1772346658  # (2026-03-01T06:30:58Z)
    names = [time.strftime("dash_%Y-%m-%d_%H-%M-%S.mkv", time.localtime(begun + n)) for n in range(3)]
    for run in range(2):
        code, err = run_cli(src, folder / "dash_%Y-%m-%d_%H-%M-%S.mkv", "--segment-time", 1, "--model", "dcp")
        assert code == 0, err
        if run == 0:
            assert err.endswith(f"-> {folder / names[0]} .. {names[2]}\n"), err
            first = {p.name: p.read_bytes() for p in folder.iterdir()}
            assert sorted(first) == names
            assert [probe(folder / name)["count"] for name in names] == [25, 25, 10]
    again = [name.replace(".mkv", ".1.mkv") for name in names]  # (the same times: taken)
    assert sorted(p.name for p in folder.iterdir()) == sorted(names + again)
    assert all((folder / name).read_bytes() == data for name, data in first.items())
    assert [probe(folder / name)["count"] for name in again] == [25, 25, 10]
    taken = [r.getMessage() for r in caplog.records if "is there already" in r.getMessage()]
    assert taken == [f"{names[0]} is there already: not replaced; this recording goes on at {again[0]}"]


@pytest.mark.parametrize("name", ["cam_%Y_%05d.mp4", "cam_%Q.mp4", "cam_%03H.mp4"])
def test_segment_names_neither_numbered_nor_timed_are_one_line(make_video, run_cli, tmp_path, name):
    code, err = run_cli(make_video(frames=5), tmp_path / name, "--segment-time", 1, "--model", "dcp")
    assert code == 2 and err.strip() == (f"streamdehaze: error: segment names {name}: give either one %d "
                                         "(numbered, %05d: 00000, 00001, ...) or strftime's %Y %m %d %H %M %S "
                                         "(named by the time each begins)"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_segment_that_cannot_be_written_ends_the_run_with_the_others_complete(make_video, tmp_path):
    # A disk that fills up just as a segment begins (FFmpeg's segment muxer crashed the process there).
    from streamdehaze.errors import MediaError
    from streamdehaze.encoders import choose_encoding
    from streamdehaze.sinks import SegmentedSink, VideoSink
    from streamdehaze.sources import VideoFileSource

    source = VideoFileSource(make_video(frames=40))
    opened = []

    def part(path, start):
        if opened:
            raise MediaError(f"cannot write {path}: No space left on device")
        opened.append(path)
        return VideoSink(path, source.info, choose_encoding(source.info, "ffv1"), start=start)

    sink = SegmentedSink(tmp_path / "cam_%05d.mkv", 1.0, 7, part)
    with source, pytest.raises(MediaError, match="No space left on device"):
        for item in source:
            sink.write(item)
    sink.abort()
    assert opened == [tmp_path / "cam_00007.mkv"] and sink.frames == 25
    with av.open(str(opened[0])) as first:  # closed when the next began: complete
        assert len(list(first.decode(video=0))) == 25


def test_a_segment_that_fails_as_it_is_closed_still_counts_its_frames(make_video, decodable, small_filesystem):
    """The disk fills up as a segment ends: closing it fails, and the frames recorded in it are still counted and
    it is still named (it holds all that fit), where it was said to hold 0 frames, then more than it held."""
    from streamdehaze.encoders import choose_encoding
    from streamdehaze.errors import MediaError
    from streamdehaze.sinks import SegmentedSink, VideoSink
    from streamdehaze.sources import VideoFileSource

    folder = small_filesystem(512)
    source = VideoFileSource(make_video(frames=60))
    encoding = choose_encoding(source.info, crf=0, live=True)
    sink = SegmentedSink(folder / "cam_%05d.mp4", 2.0, 0, lambda path, start: VideoSink(
        path, source.info, encoding, live=True, start=start, exclusive=True))
    with source:
        frames = [item for item in source if isinstance(item, av.VideoFrame)]
    for frame in frames[:40]:  # of the first segment's two seconds, a fragment (a second) is written
        sink.write(frame)
    with open(folder / "filler", "wb", buffering=0) as filler:  # something else on this disk takes its last byte
        with pytest.raises(OSError):
            while True:
                filler.write(bytes(4096))
    with pytest.raises(MediaError, match="finishing .*cam_00000.mp4 failed: No space left on device"):
        sink.write(frames[50])  # the next segment begins: the first is closed
    sink.abort()
    # it ends after its last whole frame (where its last fragment was cut: "Invalid data"), and counts those frames
    assert 25 <= sink.frames == len(decodable(folder / "cam_00000.mp4")) < 40
    assert sink.written() == str(folder / "cam_00000.mp4")
    with av.open(str(folder / "cam_00000.mp4")) as cut:  # every packet decodes
        assert sum(len(packet.decode()) for packet in cut.demux(video=0)) == sink.frames

@pytest.mark.parametrize("live", [True, False])
def test_a_segment_folder_deleted_between_segments_is_said_to_be(make_video, tmp_path, live):
    """The folder of a recording's segments (or a file run's) is deleted: found as the next segment begins, it was
    "cannot write s_00001.mp4: No such file or directory; the 50 frames recorded before it are in s_00000.mp4",
    which was gone."""
    import shutil

    from streamdehaze.encoders import choose_encoding
    from streamdehaze.outputs import RecordingDeleted
    from streamdehaze.sinks import SegmentedSink, VideoSink
    from streamdehaze.sources import VideoFileSource

    folder = tmp_path / "segments"
    folder.mkdir()
    source = VideoFileSource(make_video(frames=60))
    encoding = choose_encoding(source.info, live=live)
    sink = SegmentedSink(folder / "cam_%05d.mp4", 2.0, 0, lambda path, start: VideoSink(
        path, source.info, encoding, live=live, start=start, exclusive=True, as_it_goes=True))
    with source:
        frames = [item for item in source if isinstance(item, av.VideoFrame)]
    for frame in frames[:40]:
        sink.write(frame)
    shutil.rmtree(folder)
    with pytest.raises(RecordingDeleted, match=f"^{folder} was deleted while a recording into it ran: the segments "
                                               "written to it are gone$"):
        for frame in frames[40:]:
            sink.write(frame)
    sink.abort()


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_a_recording_s_last_fragment_that_does_not_fit_is_an_error(make_video, small_filesystem, suffix):
    """The disk fills up before a recording's last fragment is written: closing it fails and says so (FFmpeg writing
    a fragmented MP4 or MOV by name lost that error: the run ended as if complete, its last second cut short)."""
    from streamdehaze.errors import MediaError
    from streamdehaze.encoders import choose_encoding
    from streamdehaze.sinks import VideoSink
    from streamdehaze.sources import VideoFileSource

    folder = small_filesystem(512)
    source = VideoFileSource(make_video(frames=20))
    sink = VideoSink(folder / f"cam{suffix}", source.info, choose_encoding(source.info, crf=0, live=True), live=True)
    with source:
        for item in source:
            sink.write(item)
    with open(folder / "filler", "wb", buffering=0) as filler:  # something else on this disk takes its last byte
        with pytest.raises(OSError):
            while True:
                filler.write(bytes(4096))
    with pytest.raises(MediaError, match=f"finishing .*cam{suffix} failed: No space left on device"):
        sink.close()


def test_standard_input_to_standard_output(make_video, probe, tmp_path):
    # ffmpeg -i rtsp://camera -c copy -f mpegts - | streamdehaze - - | ffplay -
    src, out = make_video("in.ts", frames=20, audio=True), tmp_path / "out.ts"
    with open(src, "rb") as stdin, open(out, "wb") as stdout:
        run = subprocess.run([sys.executable, "-m", "streamdehaze", "-", "-", "--model", "dcp"],
                             stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "streamdehaze: 20 frames in " in run.stderr and run.stderr.endswith(" with dcp -> -\n")
    a, b = probe(src), probe(out)  # MPEG-TS, which a pipe carries
    assert b["count"] == 20 and b["times"] == a["times"] and b["audio"] == a["audio"]
    assert np.mean(b["rgb"][10]) < np.mean(a["rgb"][10]) - 5  # dehazed


def test_an_mp4_piped_in_with_its_index_at_the_end_is_told_apart_from_a_corrupt_file(tmp_path):
    """A pipe cannot seek back to the media of an MP4 whose index comes last (the bundled sample): the message says
    so, and what to do, rather than call a good file corrupt."""
    sample = Path(__file__).resolve().parents[2] / "samples" / "hazy_bunny.mp4"
    with open(sample, "rb") as stdin:
        run = subprocess.run([sys.executable, "-m", "streamdehaze", "-", str(tmp_path / "o.mkv"), "--model", "dcp"],
                             stdin=stdin, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and run.stderr.startswith("streamdehaze: error: cannot read standard input: an MP4 "
                                                         "or MOV file whose index comes after its media"), run.stderr
    assert run.stderr.count("\n") == 1 and not (tmp_path / "o.mkv").exists()


def test_a_grey_video_stays_grey(probe, run_cli, tmp_path):
    # An infrared camera at night: neutral chroma in, neutral chroma out.
    src, out = tmp_path / "infrared.mp4", tmp_path / "out.mp4"
    with av.open(str(src), "w") as oc:
        stream = oc.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(8):
            grey = hazy_pattern(i, 320, 240).mean(-1, keepdims=True).round().astype(np.uint8).repeat(3, -1)
            oc.mux(stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")))
        oc.mux(stream.encode(None))
    code, err = run_cli(src, out, "--quiet")
    assert code == 0, err
    for frame in probe(out)["rgb"]:
        assert np.ptp(frame.astype(int), axis=-1).max() <= 2  # (YUV to RGB rounding)


def _anamorphic(path: Path) -> None:
    """A 16:9 PAL DVD or broadcast recording: 720x576 stored, each pixel 64/45 as wide as it is high."""
    with av.open(str(path), "w") as oc:
        stream = oc.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 720, 576, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(64, 45)
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(hazy_pattern(i, 720, 576), format="rgb24")
            frame.pts = i
            oc.mux(stream.encode(frame))
        oc.mux(stream.encode(None))


@pytest.mark.parametrize("suffix, codec", [(".mp4", None), (".mkv", None), (".ts", None),
                                           (".mp4", "libvpx-vp9"), (".mov", "prores_ks")])
def test_anamorphic_pixels_keep_their_shape(run_cli, caplog, tmp_path, suffix, codec):
    src, out = tmp_path / "dvd.mp4", tmp_path / f"out{suffix}"
    _anamorphic(src)
    code, err = run_cli(src, out, "--model", "dcp", "--quiet", *(("--codec", codec) if codec else ()))
    assert code == 0, err
    with av.open(str(out)) as written:
        assert written.streams.video[0].sample_aspect_ratio == Fraction(64, 45)
    assert "pixel shape" not in caplog.text


@pytest.mark.parametrize("suffix, codec", [(".webm", None), (".mkv", "ffv1")])
def test_pixels_whose_shape_the_output_cannot_state_are_said(run_cli, caplog, tmp_path, suffix, codec):
    # Matroska states a pixel's shape in a field PyAV does not set; only codecs that carry it themselves keep it.
    src, out = tmp_path / "dvd.mp4", tmp_path / f"out{suffix}"
    _anamorphic(src)
    assert run_cli(src, out, "--model", "dcp", *(("--codec", codec) if codec else ()))[0] == 0
    warnings = [r.getMessage() for r in caplog.records if "pixel shape" in r.getMessage()]
    assert warnings == [f"{out} ({'vp9' if codec is None else codec} in {'webm' if codec is None else 'matroska'}) "
                        "cannot state the input's pixel shape (64:45): players will show it at 5:4, not 16:9 (an "
                        ".mp4 output, or H.264 in .mkv, keeps it)"]


def _two_sizes(src: Path, later: int = 10) -> None:
    """An MPEG-TS recorder that went on at another resolution: one stream, 10 frames at 160x120, then ``later``
    at 240x136 (as a reconnected camera too)."""
    with av.open(str(src), "w", format="mpegts") as oc:
        stream = oc.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        second = av.CodecContext.create("libx264", "w")
        second.width, second.height, second.pix_fmt, second.time_base = 240, 136, "yuv420p", Fraction(1, 25)
        for part, (encoder, count) in enumerate(((stream.codec_context, 10), (second, later))):
            for i in range(count):
                frame = av.VideoFrame.from_ndarray(hazy_pattern(i, encoder.width, encoder.height), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, 25)
                for packet in [*encoder.encode(frame), *(encoder.encode(None) if i == count - 1 else [])]:
                    packet.stream, packet.time_base = stream, Fraction(1, 25)
                    packet.pts, packet.dts = packet.pts + 10 * part, packet.dts + 10 * part
                    oc.mux(packet)


def test_a_size_change_mid_file_is_scaled_to_the_first_and_said(probe, run_cli, caplog, tmp_path):
    src, out = tmp_path / "changed.ts", tmp_path / "out.mp4"
    _two_sizes(src)
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    assert "the input went on at 240x136: scaled to the output's 160x120" in caplog.text
    written = probe(out)
    assert written["count"] == 20 and {f.shape for f in written["rgb"]} == {(120, 160, 3)}


def test_a_size_change_is_said_once_not_in_every_segment_after_it(run_cli, caplog, tmp_path):
    """A camera back at another size for good warned again with each new segment, every 10 minutes for days."""
    src = tmp_path / "changed.ts"
    _two_sizes(src, later=40)
    code, err = run_cli(src, tmp_path / "cam.mp4", "--model", "dcp", "--segment-time", 0.4)
    assert code == 0 and len(list(tmp_path.glob("cam_*.mp4"))) == 5, err
    said = [r.getMessage() for r in caplog.records if "the input went on at 240x136" in r.getMessage()]
    assert len(said) == 1, said


@pytest.mark.parametrize("order, field_order", [("tff", 2), ("bff", 3)])
def test_interlaced_video_stays_interlaced_in_its_field_order(probe, run_cli, tmp_path, order, field_order):
    # A broadcast or camcorder recording (1080i): players deinterlace only what says it is interlaced.
    src = tmp_path / f"{order}.mp4"
    with av.open(str(src), "w") as oc:
        stream = oc.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.options = {"x264-params": f"interlaced=1:{order}=1"}
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(hazy_pattern(i, 160, 120), format="rgb24")
            frame.pts = i
            oc.mux(stream.encode(frame))
        oc.mux(stream.encode(None))
    out = tmp_path / "out.mp4"
    assert run_cli(src, out, "--model", "dcp", "--quiet")[0] == 0
    with av.open(str(out)) as written:
        assert written.streams.video[0].codec_context.field_order == field_order
        assert all(frame.interlaced_frame for frame in written.decode(video=0))
    assert probe(out)["times"] == probe(src)["times"]


@pytest.mark.parametrize("fmt, codec, rate", [("h264", "libx264", 25), ("h264", "libx264", 30),
                                              ("hevc", "libx265", 24)])
def test_a_raw_stream_gets_times_from_its_frame_rate(probe, run_cli, tmp_path, fmt, codec, rate):
    # A camera's or recorder's dump: H.264 or HEVC with no container, so no timestamps, only the rate in its headers
    # (the raw demuxer's own stand-in, 25, once timed every dump).
    src, out = tmp_path / f"dump.{fmt}", tmp_path / "out.mp4"
    with av.open(str(src), "w", format=fmt) as oc:
        stream = oc.add_stream(codec, rate=rate, options={"x265-params": "log-level=error"} if fmt == "hevc" else {})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(hazy_pattern(i, 160, 120), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            oc.mux(stream.encode(frame))
        oc.mux(stream.encode(None))
    code, err = run_cli(src, out, "--model", "dcp", "--quiet")
    assert code == 0, err
    assert probe(out)["times"] == [Fraction(i, rate) for i in range(12)]


def _grey_frames(stream: av.VideoStream, count: int):
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 100 + i, np.uint8), format="rgb24")
        frame.pts = i
        yield from stream.encode(frame)
    yield from stream.encode(None)


def test_the_recordings_tags_go_along(run_cli, tmp_path):
    src, out = tmp_path / "camera.mov", tmp_path / "out.mp4"
    tags = {"creation_time": "2026-12-05T07:30:00.000000Z", "location": "+52.2250+021.0120/", "title": "gate"}
    with av.open(str(src), "w") as oc:
        oc.metadata.update(tags)
        video = oc.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        video.metadata["timecode"] = "07:30:00:00"
        audio = oc.add_stream("aac", rate=48000, layout="mono")
        audio.metadata["language"] = "pol"
        oc.mux(list(_grey_frames(video, 25)))
        for k in range(40):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, k * 1024
            oc.mux(audio.encode(chunk))
        oc.mux(audio.encode(None))
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    with av.open(str(out)) as c:
        assert {k: c.metadata.get(k) for k in tags} == tags
        assert c.streams.video[0].metadata["timecode"] == "07:30:00:00"
        assert c.streams.audio[0].metadata["language"] == "pol"


_IPHONE_TAGS = {"com.apple.quicktime.location.ISO6709": "+52.2250+021.0120+100.000/",
                "com.apple.quicktime.make": "Apple", "com.apple.quicktime.model": "iPhone 15 Pro",
                "com.apple.quicktime.creationdate": "2026-12-05T08:30:00+0100"}


@pytest.mark.parametrize("suffix", [".mov", ".mp4", ".mkv"])
def test_a_phone_s_own_tags_go_along(run_cli, tmp_path, suffix):
    # An iPhone stores where and with what a clip was taken under reverse-DNS keys, which FFmpeg's MP4 and MOV
    # muxers write only when told to; the usual tags come back the same either way.
    src, out = tmp_path / "IMG_0001.mov", tmp_path / f"out{suffix}"
    usual = {"creation_time": "2026-12-05T07:30:00.000000Z", "location": "+52.2250+021.0120/", "title": "gate",
             "comment": "fog"}
    with av.open(str(src), "w", options={"movflags": "use_metadata_tags"}) as oc:
        oc.metadata.update({**usual, **_IPHONE_TAGS})
        video = oc.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        video.metadata["timecode"] = "07:30:00:00"
        oc.mux(list(_grey_frames(video, 10)))
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    with av.open(str(out)) as c:
        kept = {k.lower(): v for k, v in c.metadata.items()}  # (Matroska's tag names are upper case)
        assert {k: kept.get(k.lower()) for k in {**usual, **_IPHONE_TAGS}} == {**usual, **_IPHONE_TAGS}
        assert {k.lower(): v for k, v in c.streams.video[0].metadata.items()}["timecode"] == "07:30:00:00"


def test_reverse_dns_tags_add_the_flag_that_writes_them_to_any_other(tmp_path):
    from streamdehaze.formats import output_options
    movflags = {name: output_options(str(tmp_path / name), live=live, tags=tags)[1].get("movflags")
                for name, live, tags in (("a.mp4", False, {}), ("b.mov", False, _IPHONE_TAGS),
                                         ("c.mp4", True, _IPHONE_TAGS), ("d.mp4", True, {"title": "gate"}),
                                         ("e.mkv", False, _IPHONE_TAGS))}
    assert movflags == {"a.mp4": None, "b.mov": "+use_metadata_tags",
                        "c.mp4": "+frag_keyframe+empty_moov+default_base_moof+use_metadata_tags",
                        "d.mp4": "+frag_keyframe+empty_moov+default_base_moof", "e.mkv": None}


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_chapters_and_which_track_plays_by_default_go_along(run_cli, caplog, tmp_path, suffix):
    src, out = tmp_path / "film.mkv", tmp_path / f"out{suffix}"
    with av.open(str(src), "w") as oc:
        video = oc.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        tracks = [oc.add_stream("aac", rate=48000, layout="mono") for _ in range(2)]
        tracks[0].metadata["language"], tracks[1].metadata["language"] = "eng", "deu"
        tracks[1].disposition = av.stream.Disposition.default
        oc.set_chapters([{"id": n + 1, "start": n, "end": n + 1, "time_base": Fraction(1), "metadata": {"title": t}}
                         for n, t in enumerate(("Intro", "Fog"))])
        for packet in _grey_frames(video, 50):
            oc.mux(packet)
        for track in tracks:
            for start in range(0, 96000, 1024):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 48000, start
                oc.mux(track.encode(frame))
            oc.mux(track.encode(None))
    code, err = run_cli(src, out, "--model", "dcp", "--quiet")
    assert code == 0, err
    with av.open(str(out)) as written:
        assert [(c["metadata"]["title"], c["start"] * c["time_base"]) for c in written.chapters()] == \
            [("Intro", 0), ("Fog", 1)]
        audio = written.streams.audio
        assert [(a.metadata.get("language"), bool(a.disposition & av.stream.Disposition.default)) for a in audio] \
            == [("eng", False), ("deu", True)]
    # A clip cut short keeps the chapters that begin in it, the last ending with it.
    for limit in (("--duration", 0.6), ("--max-frames", 15)):
        cut = tmp_path / f"cut{suffix}"
        assert run_cli(src, cut, "--model", "dcp", "--quiet", *limit)[0] == 0
        with av.open(str(cut)) as written:
            assert [(c["metadata"]["title"], c["start"] * c["time_base"], c["end"] * c["time_base"])
                    for c in written.chapters()] == [("Intro", 0, Fraction(3, 5))], limit
    # An MP4's chapters are a track too, which FFmpeg reads as chapters: it was said to be "not copied".
    code, err = run_cli(out, tmp_path / "again.mkv", "--model", "dcp")
    assert code == 0 and "not copying" not in caplog.text, caplog.text
    with av.open(str(tmp_path / "again.mkv")) as written:
        assert [c["metadata"]["title"] for c in written.chapters()] == ["Intro", "Fog"]


def test_a_font_goes_along_into_matroska_and_what_is_not_copied_is_said(run_cli, caplog, tmp_path):
    # Styled (ASS) subtitles are drawn with the fonts attached to a Matroska file; a second video (a picture in
    # picture, an angle) is not dehazed, and said to be left out.
    src = tmp_path / "film.mkv"
    font = b"\x00\x01\x00\x00" + bytes(range(256)) * 4
    with av.open(str(src), "w") as oc:
        streams = [oc.add_stream("libx264", rate=25) for _ in range(2)]
        for stream in streams:
            stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        oc.add_attachment("fog.ttf", "font/ttf", font)
        for stream in streams:
            for packet in _grey_frames(stream, 5):
                oc.mux(packet)
    for suffix in (".mkv", ".mp4"):
        caplog.clear()
        out = tmp_path / f"out{suffix}"
        assert run_cli(src, out, "--model", "dcp")[0] == 0
        assert "film.mkv: not copying video stream #1: only video stream #0 is written, dehazed" in caplog.text
        with av.open(str(out)) as written:
            attached = [(s.name, s.mimetype, bytes(s.data)) for s in written.streams if s.type == "attachment"]
        if suffix == ".mkv":
            assert attached == [("fog.ttf", "font/ttf", font)]
        else:
            assert not attached and "not copying attachment stream #2: fog.ttf cannot be stored in mp4" in caplog.text


def test_the_main_picture_is_dehazed_not_a_proxy_before_it(probe, run_cli, caplog, tmp_path):
    # A camera's small proxy (or a one-frame MJPEG thumbnail) listed before the picture marked to play by default:
    # FFmpeg's own tools take the main one.
    src, out = tmp_path / "two.mp4", tmp_path / "out.mp4"
    with av.open(str(src), "w") as oc:
        proxy, main = (oc.add_stream("libx264", rate=25) for _ in range(2))
        for stream, (width, height) in ((proxy, (48, 32)), (main, (160, 96))):
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        proxy.disposition, main.disposition = 0, av.stream.Disposition.default
        for stream in (proxy, main):
            oc.mux(list(_grey_frames(stream, 10)))
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    assert "two.mp4: not copying video stream #0: only video stream #1 is written, dehazed" in caplog.text
    assert probe(out)["size"] == (160, 96) and probe(out)["count"] == 10


def _with_data(path: Path, codec: str, payloads: list[bytes], step: int, time_base: Fraction,
               tag: str | None = None) -> None:
    """A second of grey video with a data stream of ``codec``: ``payloads`` ``step`` ticks of ``time_base`` apart."""
    with av.open(str(path), "w") as oc:
        video = oc.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        data = oc.add_data_stream(codec)
        if tag is not None:
            data.codec_tag = tag
        oc.mux(list(_grey_frames(video, 25)))
        for i, payload in enumerate(payloads):
            packet = av.Packet(payload)
            packet.stream, packet.pts, packet.dts, packet.time_base = data, i * step, i * step, time_base
            packet.duration = step
            oc.mux(packet)


def _data_packets(path: Path) -> list[tuple[bytes, Fraction]]:
    """The bytes and times of a file's first data stream's packets (none where it has no data stream)."""
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts * p.time_base) for p in c.demux(c.streams.data[0]) if p.size] \
            if c.streams.data else []


def test_klv_metadata_is_copied_where_the_format_takes_it(run_cli, caplog, tmp_path):
    # A drone's KLV (MISB) metadata stream in MPEG-TS: kept in a TS output, named where an MP4 cannot hold it.
    src = tmp_path / "drone.ts"
    _with_data(src, "klv", [bytes([6, 14, 43, 52, 2, 11, 1, 1, 14, 1, 3, 1, 1, 0, 0, 0, 2, 2, i]) for i in range(25)],
               3600, Fraction(1, 90000))
    assert run_cli(src, tmp_path / "out.ts", "--model", "dcp", "--quiet")[0] == 0
    assert len(_data_packets(src)) == 25 and _data_packets(tmp_path / "out.ts") == _data_packets(src)
    assert run_cli(src, tmp_path / "out.mp4", "--model", "dcp")[0] == 0
    assert "not copying data stream #1: klv cannot be stored in mp4" in caplog.text


def test_a_gopro_s_telemetry_is_copied_where_the_format_takes_it(run_cli, caplog, tmp_path):
    # GoPro's GPMF track (GPS, gyroscope): data FFmpeg names bin_data, tagged gpmd, which MP4 and MOV keep and
    # Matroska cannot hold.
    src = tmp_path / "GX010001.MP4"
    _with_data(src, "bin_data", [b"DEVC" + bytes(range(40)) + bytes([i]) for i in range(2)], 500, Fraction(1, 1000),
               tag="gpmd")
    for suffix in (".mp4", ".mov"):
        assert run_cli(src, tmp_path / f"out{suffix}", "--model", "dcp", "--quiet")[0] == 0
        assert len(_data_packets(src)) == 2 and _data_packets(tmp_path / f"out{suffix}") == _data_packets(src)
        with av.open(str(tmp_path / f"out{suffix}")) as c:
            assert c.streams.data[0].name == "bin_data"
    assert run_cli(src, tmp_path / "out.mkv", "--model", "dcp")[0] == 0
    assert "not copying data stream #1: bin_data cannot be stored in .mkv" in caplog.text
    assert not _data_packets(tmp_path / "out.mkv")


def test_max_frames_batch_and_stats(make_video, probe, run_cli, tmp_path):
    src = make_video(frames=15)
    out, stats = tmp_path / "short.mp4", tmp_path / "stats.json"
    code, err = run_cli(src, out, "--max-frames", 7, "--batch", 3, "--stats-json", stats)
    assert code == 0
    assert probe(out)["times"] == probe(src)["times"][:7]
    data = json.loads(stats.read_text())
    assert data["frames"] == 7 and data["seconds"] > 0 and data["fps"] > 0
    assert "7 frames in" in err  # the one-line summary


def test_stats_name_the_settings_that_ran(make_video, run_cli, tmp_path):
    # The README promises "the run's settings"; the file held strength and noise_floor only. "auto" is written as
    # what it became: the model's size for these frames (native: 64 px is below dcp's own size), the device.
    src, stats = make_video(frames=3), tmp_path / "stats.json"
    assert run_cli(src, tmp_path / "a.mp4", "--model", "dcp", "--stats-json", stats)[0] == 0
    data = json.loads(stats.read_text())
    assert {k: data[k] for k in ("infer_size", "batch", "codec", "crf", "preset", "temporal", "temporal_strength",
                                 "hwaccel")} == {"infer_size": "full", "batch": 4, "codec": "libx264", "crf": 18,
                                                 "preset": "veryfast", "temporal": "ema", "temporal_strength": 0.8,
                                                 "hwaccel": "none" if data["device"] == "cpu" else data["hwaccel"]}
    assert data["device"] == "cpu" or data["device"].startswith("cuda:")
    assert run_cli(src, tmp_path / "b.mp4", "--model", "dcp", "--device", "cpu", "--infer-size", 32, "--batch", 2,
                   "--crf", 23, "--preset", "ultrafast", "--temporal", "static", "--temporal-strength", 0.5,
                   "--stats-json", stats)[0] == 0
    data = json.loads(stats.read_text())
    assert {k: data[k] for k in ("infer_size", "batch", "codec", "crf", "preset", "temporal", "temporal_strength",
                                 "device")} == {"infer_size": 32, "batch": 2, "codec": "libx264", "crf": 23,
                                                "preset": "ultrafast", "temporal": "static", "temporal_strength": 0.5,
                                                "device": "cpu"}


def test_strength_0_writes_the_input_back(make_video, probe, run_cli, tmp_path):
    src = make_video(frames=5)
    out, stats = tmp_path / "none.mkv", tmp_path / "stats.json"
    assert run_cli(src, out, "--strength", 0, "--codec", "ffv1", "--stats-json", stats)[0] == 0
    got, original = probe(out), probe(src)
    assert got["times"] == original["times"] and json.loads(stats.read_text())["strength"] == 0.0
    assert max(np.abs(a.astype(int) - b).mean() for a, b in zip(got["rgb"], original["rgb"])) < 1.5


def test_batching_gives_the_same_frames(make_video, probe, run_cli, tmp_path):
    src = make_video(frames=7)
    outs = []
    for batch in (1, 3):
        out = tmp_path / f"b{batch}.mkv"
        assert run_cli(src, out, "--batch", batch, "--quiet", "--codec", "ffv1")[0] == 0
        outs.append(probe(out)["rgb"])
    # The same frames up to the model's bf16 rounding: on some CPUs oneDNN picks other kernels for another batch
    # shape, and one bf16 step in a gain moves a sample by up to ~4 levels where the gain is high (CI saw 4 once;
    # here the outputs are bit-exact). A batch mix-up moves every sample: neighbouring frames differ by ~15 levels.
    a, b = (np.stack(o).astype(int) for o in outs)
    for i in range(len(a)):
        own = np.abs(a[i] - b[i])
        assert own.max() <= 8 and own.mean() < 0.1, (i, own.max(), own.mean())
        assert all(own.mean() * 20 < np.abs(a[j] - b[i]).mean() for j in range(len(a)) if j != i)


def test_no_partial_files_left(make_video, run_cli, tmp_path):
    src = make_video(frames=3)
    assert run_cli(src, tmp_path / "o.mp4", "--quiet")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "o.mp4"]


def test_image_sequence_input(hazy_image, probe, run_cli, tmp_path):
    import cv2
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        assert cv2.imwrite(str(folder / f"f{i:03d}.png"), hazy_image(i, 64, 48)[..., ::-1].copy())
    out = tmp_path / "seq.mp4"
    code, err = run_cli(folder / "f%03d.png", out, "--quiet")
    assert code == 0, err
    assert probe(out)["count"] == 6
    code, err = run_cli(tmp_path / "none%03d.png", tmp_path / "x.mp4")
    assert code == 2 and "no images match" in err


def test_files_go_through_the_model_four_frames_a_call(make_video, probe, monkeypatch, tmp_path):
    import streamdehaze.api as api
    from streamdehaze.models.dcp import DarkChannelPrior

    calls: list[int] = []

    class Recording(DarkChannelPrior):
        def forward(self, rgb):
            calls.append(rgb.shape[0])
            return super().forward(rgb)

    monkeypatch.setattr(api, "create_model", lambda *args, **kwargs: Recording())
    src = make_video(frames=10)
    assert api.process(src, tmp_path / "out.mp4").frames == 10
    assert calls == [4, 4, 2]  # the default for files; the last batch holds what is left
    calls.clear()
    api.process(src, tmp_path / "one.mp4", batch=1)
    assert calls == [1] * 10


def _with_audio(path, codec: str, layout: str = "stereo", language: str | None = None) -> list[bytes]:
    """A 1 s clip at ``path`` with a ``codec`` track (a default video track, and a default audio track in that
    ``language``); returns the audio packets written."""
    packets = []
    with av.open(str(path), "w") as oc:
        video = oc.add_stream("mjpeg" if path.suffix == ".avi" else "libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuvj420p" if path.suffix == ".avi" else "yuv420p"
        audio = oc.add_stream(codec, rate=48000, layout=layout)
        video.disposition = audio.disposition = av.stream.Disposition.default
        if language:
            audio.metadata["language"] = language
        channels = audio.codec_context.layout.nb_channels
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(hazy_pattern(i, 64, 48), format="rgb24").reformat(format=video.pix_fmt)
            frame.pts = i
            oc.mux(video.encode(frame))
        samples = (np.sin(np.arange(48000) / 20.0) * 8000).astype(np.int16)
        for start in range(0, 48000, 960):
            chunk = np.ascontiguousarray(np.repeat(samples[start: start + 960], channels)[None])  # interleaved
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=layout)
            frame.sample_rate, frame.pts = 48000, start
            for packet in audio.encode(frame):
                packets.append(bytes(packet))
                oc.mux(packet)
        for packet in audio.encode(None):
            packets.append(bytes(packet))
            oc.mux(packet)
        oc.mux(video.encode(None))
    return packets


def test_pcm_in_no_stated_channel_order_is_copied_into_mp4(probe, run_cli, tmp_path):
    # A camera's MJPEG AVI with PCM sound: AVI states no channel order, which MP4 refused when the file was closed.
    src, out = tmp_path / "cam.avi", tmp_path / "cam.mp4"
    written = _with_audio(src, "pcm_s16le")
    with av.open(str(src)) as c:
        assert c.streams.audio[0].layout.name == "2 channels"
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    assert b"".join(probe(out)["audio"]) == b"".join(written)
    with av.open(str(out)) as c:
        assert c.streams.audio[0].layout.name == "stereo"


@pytest.mark.parametrize("codec, suffix, layout", [("pcm_s16le", ".ts", "stereo"), ("flac", ".ts", "stereo"),
                                                   ("flac", ".mov", "stereo"), ("opus", ".mov", "stereo"),
                                                   ("ac3", ".webm", "5.1(side)"), ("pcm_s16le", ".ogv", "stereo")])
def test_audio_a_format_cannot_hold_is_encoded_again(run_cli, caplog, tmp_path, codec, suffix, layout):
    # MPEG-TS would store PCM or FLAC as data no player plays; MOV lists FLAC and Opus but refuses them; WebM
    # takes Opus only, whose encoder refuses a film's 5.1(side) (and once failed the whole file): 5.1. Ogg names
    # no codec but its defaults: Opus.
    src, out = tmp_path / "in.mkv", tmp_path / f"out{suffix}"
    _with_audio(src, codec, layout, language="deu")
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    again = "libopus" if suffix in (".webm", ".ogv") else "aac"
    assert f"{codec} cannot be stored in" in caplog.text and f"audio stream #1 encoded again as {again}" in caplog.text
    with av.open(str(out)) as written:
        assert [s.codec_context.codec.canonical_name for s in written.streams] == \
            [{".webm": "vp9", ".ogv": "vp8"}.get(suffix, "h264"), "aac" if again == "aac" else "opus"]
        audio = written.streams.audio[0]
        assert audio.codec_context.layout.nb_channels == (6 if layout == "5.1(side)" else 2)
        # its language and default flag go along, as a copied track's do (and the video's); FFmpeg's MOV muxer
        # writes no language it reads back, copied or not
        assert audio.language == (None if suffix == ".mov" else "deu")
        assert [s.disposition.default for s in written.streams] == [True, True]
        rate = audio.sample_rate
        sound = np.concatenate([f.to_ndarray()[0] for f in written.decode(audio=0)])
    assert abs(len(sound) / rate - 1.0) < 0.1  # the whole second
    middle = sound[rate // 4: 3 * rate // 4]
    tone = np.argmax(np.abs(np.fft.rfft(middle))) * rate / len(middle)
    assert abs(tone - 48000 / (2 * np.pi * 20)) < 5 and 0.1 < np.sqrt(np.mean(middle ** 2)) < 0.25  # the same sound


@pytest.mark.parametrize("codec, given", [("libmp3lame", ".mp4"), ("ac3", ".mkv")])
def test_sound_encoded_again_from_before_zero_moves_no_frame(probe, run_cli, tmp_path, codec, given):
    # An MP3's or AC-3's priming lies before 0; WebM takes no time below 0, so the muxer moved every stream later
    # by it (each frame 25 or 5 ms late). What players never play of it is left out of the sound encoded again.
    src, out = tmp_path / f"in{given}", tmp_path / "out.webm"
    _with_audio(src, codec)
    with av.open(str(src)) as c:
        assert next(p for p in c.demux(c.streams.audio[0]) if p.size).pts < 0
    assert run_cli(src, out, "--model", "dcp", "--quiet") == (0, "")
    assert probe(out)["times"] == probe(src)["times"] == [Fraction(i, 25) for i in range(25)]
    with av.open(str(out)) as c:
        sound = [f for f in c.decode(audio=0)]
    assert 0 <= sound[0].time < 0.01 and abs(sum(f.samples for f in sound) / 48000 - 1.0) < 0.05


def test_mp3_is_copied_into_mpeg_ts(probe, run_cli, caplog, tmp_path):
    # MPEG-TS holds MP3: the check once took the decoder's name (mp3float) for the codec's, and encoded it again.
    src, out = tmp_path / "in.ts", tmp_path / "out.ts"
    written = _with_audio(src, "libmp3lame", language="fra")
    assert run_cli(src, out, "--model", "dcp")[0] == 0
    assert "encoded again" not in caplog.text and "not copying" not in caplog.text
    with av.open(str(out)) as c:
        audio = c.streams.audio[0]
        assert (audio.codec_context.codec.canonical_name, audio.language) == ("mp3", "fra")
    assert probe(out)["audio"] == written


def test_strength_0_gives_the_planes_back_on_every_path(make_video, run_cli, tmp_path):
    # A frame smaller than the inference size, without smoothing, goes through dcp whole; at strength 0 it must
    # still come back as it was, not through an RGB round trip that blurs colour edges.
    src = make_video("in.mkv", frames=3, width=96, height=64, codec="ffv1")
    for temporal in ("off", "ema"):
        out = tmp_path / f"out-{temporal}.mkv"
        code, err = run_cli(src, out, "--model", "dcp", "--temporal", temporal, "--strength", "0", "--codec", "ffv1")
        assert code == 0, err
        with av.open(str(src)) as a, av.open(str(out)) as b:
            for x, y in zip(a.decode(video=0), b.decode(video=0)):
                assert np.array_equal(x.to_ndarray(), y.to_ndarray()), temporal


def test_an_avi_output_has_a_frame_per_frame_of_its_input(make_video, probe, run_cli, tmp_path):
    """AVI has a frame every tick of its time base: written in the input's fine one (1/12800), it ran at 600 fps,
    padded with empty frames, three times the size."""
    src = make_video(frames=20)
    assert run_cli(src, tmp_path / "o.avi", "--model", "dcp", "--quiet")[0] == 0
    with av.open(str(tmp_path / "o.avi")) as avi:
        video = avi.streams.video[0]
        assert video.average_rate == 25 and video.frames <= 21, (video.average_rate, video.frames)
    assert probe(tmp_path / "o.avi")["count"] == 20


@pytest.mark.parametrize("suffix", [".avi", ".asf"])
def test_a_format_without_presentation_times_keeps_every_frame_time_in_order(make_video, probe, run_cli, tmp_path,
                                                                             suffix):
    # AVI and ASF store a frame's place in decoding order, no time of its own: libx264's B-frames came back as
    # 1, 3, 2, 4, 5, 6, 7, 10, 9, ... FFmpeg reads H.264 in either one frame late whatever is written (a stand-in for
    # its reordering delay), and an ASF's last frame at its predecessor's time.
    src = make_video(frames=20, time_base=Fraction(1, 25))
    out = tmp_path / f"o{suffix}"
    assert run_cli(src, out, "--model", "dcp", "--quiet")[0] == 0
    times = probe(out)["times"]
    assert times == sorted(times) and times[0] <= Fraction(1, 25), times
    if suffix == ".avi":
        assert times == [times[0] + Fraction(i, 25) for i in range(20)], times


def test_a_variable_rate_in_avi_keeps_each_frame_at_its_time(make_video, probe, run_cli, tmp_path):
    """A phone's variable rate (frames 30-35 ms apart, then a second's pause): AVI was written at the average rate,
    lowered by the pause to 20.6 fps, and the frames fell behind one tick at a time, a second behind the sound
    before the pause. It is written at the rate they fall on (FFmpeg's guess), each frame within a tick of its
    time. (MPEG-4 part 2: FFmpeg reads H.264 in AVI a frame late, and the frame before a pause after it.)"""
    steps = [30, 33, 35, 32, 31, 34] * 5 + [1000] + [33, 31, 35, 30, 34, 32] * 5
    pts = [0]
    for step in steps:
        pts.append(pts[-1] + step * 90)
    src = make_video(frames=len(pts), pts=pts, time_base=Fraction(1, 90000))
    out = tmp_path / "o.avi"
    code, err = run_cli(src, out, "--model", "dcp", "--codec", "mpeg4", "--quiet")
    assert code == 0, err
    written, read = probe(out)["times"], probe(src)["times"]
    assert len(written) == len(read) == len(pts)
    late = max(abs(w - r) for w, r in zip(written, read))
    assert late <= Fraction(1, 25), float(late)  # (a tick of 1/31 s, not a second)


def test_mpeg1_mpeg2_and_mpeg4_are_given_a_time_base_they_take(make_video, probe, run_cli, tmp_path):
    # MPEG-1/2 take only a frame rate's time base (an MP4's 1/12800 was "12800 fps"), MPEG-4 part 2 none finer than
    # 1/65535 (an MPEG-TS input's is 1/90000): each failed once the model had loaded. Every frame keeps its time.
    mp4 = make_video(frames=4)
    ts = make_video("in.ts", frames=4)
    for src, codec, out in ((mp4, "mpeg2video", "o2.mp4"), (mp4, "mpeg1video", "o1.mkv"), (ts, "mpeg4", "o4.mp4"),
                            (ts, "mpeg2video", "o2.ts")):
        code, err = run_cli(src, tmp_path / out, "--model", "dcp", "--codec", codec, "--quiet")
        assert code == 0, err
        written, read = probe(tmp_path / out)["times"], probe(src)["times"]
        assert [t - written[0] for t in written] == [t - read[0] for t in read], (codec, out)


@pytest.mark.parametrize("suffix", [".avi", ".mov", ".mkv"])
def test_mjpeg_is_written_in_full_range_with_true_colours(make_video, probe, run_cli, tmp_path, suffix):
    # (MJPEG's encoder refuses limited-range YUV: "Non full-range YUV is non-standard")
    src = make_video(frames=2, width=160, height=90)
    code, err = run_cli(src, tmp_path / f"o{suffix}", "--model", "dcp", "--strength", "0", "--codec", "mjpeg",
                        "--quiet")
    assert code == 0, err
    written, read = probe(tmp_path / f"o{suffix}"), probe(src)
    assert written["count"] == 2
    difference = np.abs(written["rgb"][1].astype(np.int16) - read["rgb"][1]).mean()
    assert difference < 3, difference  # (limited range read as full: levels 16 apart and more)


def test_a_raw_hevc_stream_is_encoded_with_x265(make_video, run_cli, tmp_path):
    # (libx264, the default, was refused by the format it defaulted for)
    code, err = run_cli(make_video(frames=4), tmp_path / "o.hevc", "--model", "dcp", "--quiet")
    assert code == 0, err
    with av.open(str(tmp_path / "o.hevc")) as written:
        assert written.streams.video[0].codec_context.name == "hevc"
        assert sum(1 for _ in written.decode(video=0)) == 4


def test_hevc_in_mp4_and_mov_is_tagged_for_apple_s_players(make_video, probe, run_cli, tmp_path):
    # QuickTime, Photos and iOS play HEVC only as hvc1 (its parameter sets in the header), not FFmpeg's hev1;
    # segments are written as a recording is, fragmented.
    src = make_video(frames=30, audio=True)
    (tmp_path / "seg").mkdir()
    for out, segments in ((tmp_path / "o.mp4", ()), (tmp_path / "o.mov", ()),
                          (tmp_path / "seg" / "o.mov", ("--segment-time", 10))):
        code, err = run_cli(src, out, "--model", "dcp", "--codec", "libx265", "--quiet", *segments)
        assert code == 0, err
        written = out.with_name("o_00000.mov") if segments else out
        with av.open(str(written)) as c:
            assert c.streams.video[0].codec_context.codec_tag == "hvc1", written
        assert probe(written)["times"] == probe(src)["times"]


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_segments_of_a_file_run_keep_every_frame_s_time(make_video, probe, run_cli, tmp_path, suffix):
    # Written as a recording's are (fragmented), with x264's B-frames: without an edit list, which an index
    # written before the first fragment cannot hold, every frame came two frames late.
    src = make_video(frames=30, audio=True)
    code, err = run_cli(src, tmp_path / f"o{suffix}", "--model", "dcp", "--segment-time", 10, "--quiet")
    assert code == 0, err
    assert probe(tmp_path / f"o_00000{suffix}")["times"] == probe(src)["times"]


def test_mpeg_ps_keeps_sound_it_cannot_hold_as_mp2(make_video, run_cli, caplog, tmp_path):
    # (AAC was left out with a warning, though MPEG-PS holds MP2)
    code, err = run_cli(make_video(frames=12, audio=True), tmp_path / "o.mpg", "--model", "dcp")
    assert code == 0, err
    assert "audio stream #1 encoded again as mp2" in caplog.text
    with av.open(str(tmp_path / "o.mpg")) as written:
        assert [s.codec_context.name for s in written.streams.audio] == ["mp2"]
        assert sum(f.samples for f in written.decode(audio=0)) > 0.4 * 48000


@pytest.mark.parametrize("suffix", [".mpg", ".vob"])
def test_surround_sound_mpeg_ps_cannot_hold_is_downmixed_to_stereo_mp2(run_cli, caplog, tmp_path, suffix):
    # MP2 takes two channels at most: a film's 5.1 AAC was left out ("cannot be stored in svcd" for a .vob).
    src, out = tmp_path / "in.mkv", tmp_path / f"out{suffix}"
    _with_audio(src, "aac", "5.1")
    code, err = run_cli(src, out, "--model", "dcp", "--max-frames", "5")
    assert code == 0, err
    assert f"aac cannot be stored in {suffix}: audio stream #1 encoded again as mp2, downmixed to stereo" \
        in caplog.text
    assert "not copying" not in caplog.text
    with av.open(str(out)) as written:
        audio = written.streams.audio[0]
        assert (audio.codec_context.name, audio.codec_context.layout.name) == ("mp2", "stereo")
        assert sum(f.samples for f in written.decode(audio=0)) > 0


def test_sound_mxf_cannot_hold_is_written_as_pcm_at_48_khz(run_cli, caplog, tmp_path):
    # FFmpeg's MXF holds PCM (at 48 kHz only), none of AAC, Opus, MP2: the sound was left out.
    src, out = tmp_path / "in.mp4", tmp_path / "out.mxf"
    _with_audio(src, "aac", "5.1")
    code, err = run_cli(src, out, "--model", "dcp", "--max-frames", "5")
    assert code == 0, err
    assert "aac cannot be stored in mxf: audio stream #1 encoded again as pcm_s16le" in caplog.text
    with av.open(str(out)) as written:
        audio = written.streams.audio[0]
        assert (audio.codec_context.name, audio.sample_rate, audio.codec_context.layout.nb_channels) == \
            ("pcm_s16le", 48000, 6)
        assert sum(f.samples for f in written.decode(audio=0)) > 0


def test_a_codec_that_does_not_open_gives_way_to_the_next(run_cli, caplog, monkeypatch, tmp_path):
    # G.723.1 opens for 8 kHz mono only: the next of the format's codecs takes the sound instead.
    from streamdehaze import sound
    monkeypatch.setattr(sound, "reencoding_codecs", lambda muxer: ["g723_1", "mp2"])
    src, out = tmp_path / "in.mkv", tmp_path / "out.mpg"
    _with_audio(src, "aac", "5.1")
    assert run_cli(src, out, "--model", "dcp", "--max-frames", "5")[0] == 0
    assert "encoded again as mp2, downmixed to stereo" in caplog.text
    with av.open(str(out)) as written:
        assert [s.codec_context.name for s in written.streams.audio] == ["mp2"]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_copied_sound_that_changes_format_is_encoded_again_in_its_first(run_cli, caplog, tmp_path, suffix):
    # MP4 and Matroska state the sound's rate and layout once, in their header: the copied 48 kHz part played at
    # 44.1 kHz, 8.8 % slow (its 440 Hz tone at 404 Hz), drifting from the picture, with nothing said.
    src, out = tmp_path / "changes.ts", tmp_path / f"out{suffix}"
    src.write_bytes(sound_that_changes())
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    frames, rate, layout = decoded_sound(out)
    assert (rate, layout) == (44100, "stereo") and {(r, x) for _, r, x, _ in frames} == {(44100, "stereo")}
    assert abs(pitch(frames, 0.5, 1.5) - 440) < 3 and abs(pitch(frames, 2.5, 3.5) - 440) < 3
    length = sum(len(x) for *_, x in frames) / 44100  # (the 48 kHz part read at 44.1 kHz: 4.13 s)
    assert abs(length - 4) < 0.06 and abs(frames[-1][0] - 4) < 0.06, (length, frames[-1][0])
    where = {".mkv": ".mkv", ".mp4": "mp4"}[suffix]  # (the format as the other messages name it)
    assert f"audio stream #1 went on at 48000 Hz mono at 2.1 s, which {where} cannot follow: encoded again from " \
           "there, as 44100 Hz stereo" in caplog.text


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("damaged", [1, 40])
def test_a_damaged_sound_packet_of_an_mpeg_ts_is_left_out(make_video, run_cli, caplog, tmp_path, suffix, damaged):
    # A DVR's recording with one AAC packet cut to its ADTS header (a bad sector): FFmpeg's ADTS-to-raw filter
    # refuses what follows it, and the whole run failed ("writing out.mp4 failed: Invalid data"), no output; near
    # the start, the MP4 muxer refused every packet after it. It is left out, as FFmpeg's tools go on past it.
    src = make_video("in.ts", frames=50, audio=True)
    cut, out = tmp_path / "cut.ts", tmp_path / f"out{suffix}"
    cut.write_bytes(with_damaged_sound(src.read_bytes(), damaged))
    code, err = run_cli(cut, out, "--model", "dcp")
    assert code == 0, err
    assert "audio stream #1: a damaged packet at" in caplog.text and "damaged packets left out in all" in caplog.text
    with av.open(str(out)) as c:
        assert len(list(c.decode(video=0))) == 50
    with av.open(str(out)) as c, av.open(str(src)) as whole:
        assert sum(f.samples for f in c.decode(audio=0)) == sum(f.samples for f in whole.decode(audio=0)) - 2048


def test_mpeg_ts_carries_a_change_of_the_sound_s_format_as_it_is(run_cli, caplog, tmp_path):
    # MPEG-TS's AAC states its format in every packet: copied, untouched.
    src, out = tmp_path / "changes.ts", tmp_path / "out.ts"
    src.write_bytes(sound_that_changes())
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0 and "went on at" not in caplog.text and "encoded again" not in caplog.text, err
    frames = decoded_sound(out)[0]
    assert {(r, x) for t, r, x, _ in frames if t < 1.9} == {(44100, "stereo")}
    assert {(r, x) for t, r, x, _ in frames if t > 2.1} == {(48000, "mono")}
    assert abs(pitch(frames, 0.5, 1.5) - 440) < 3 and abs(pitch(frames, 2.5, 3.5) - 440) < 3


@pytest.mark.parametrize("suffix, rate", [(".mpg", 44100), (".webm", 48000)])
def test_sound_encoded_again_goes_on_through_a_change_of_its_format(run_cli, tmp_path, suffix, rate):
    # The resampler took the sound's first format only: "internal error: ValueError: Frame does not match
    # AudioResampler setup", exit 1 and no output, after all the work.
    src, out = tmp_path / "changes.ts", tmp_path / f"out{suffix}"
    src.write_bytes(sound_that_changes())
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    frames, header_rate, _ = decoded_sound(out)
    assert header_rate == rate and {r for _, r, _, _ in frames} == {rate}
    assert abs(pitch(frames, 0.5, 1.5) - 440) < 3 and abs(pitch(frames, 2.5, 3.5) - 440) < 3
    length = sum(len(x) for *_, x in frames) / rate
    assert abs(length - 4) < 0.08, length


def test_hdr_warning_names_an_encoder_the_output_holds(make_video, probe, run_cli, caplog, tmp_path):
    # (a WebM was told to use libx265, which it cannot hold)
    src = make_video("hlg.mkv", pix_fmt="yuv420p10le", frames=4, width=64, height=64,
                     colour={"color_trc": 18, "color_primaries": 9, "colorspace": 9})
    assert run_cli(src, tmp_path / "out.webm", "--model", "dcp")[0] == 0
    assert "which shows banding (--codec libsvtav1 keeps 10 bits)" in caplog.text
    code, err = run_cli(src, tmp_path / "deep.webm", "--model", "dcp", "--codec", "libsvtav1", "--quiet")
    assert code == 0 and probe(tmp_path / "deep.webm")["pix_fmt"] == "yuv420p10le", err

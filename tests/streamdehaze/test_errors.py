"""Bad input: one clear line on stderr, exit 2 (usage) or 1 (runtime), never a traceback, no partial output."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("streamdehaze: error: ")
    return lines[0]


def _no_output_files(folder, keep):
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


def test_missing_input(run_cli, tmp_path):
    code, err = run_cli(tmp_path / "nope.mp4", tmp_path / "o.mp4")
    assert code == 2 and "input not found" in _one_line(err)


def test_not_a_video(run_cli, tmp_path):
    src = tmp_path / "notes.mp4"
    src.write_text("these are not the frames you are looking for\n" * 20)
    code, err = run_cli(src, tmp_path / "o.mp4")
    assert code == 2 and "not a video or image" in _one_line(err)
    _no_output_files(tmp_path, ["notes.mp4"])


def test_truncated_file(make_video, run_cli, tmp_path):
    src = make_video(frames=30)
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # moov is at the end: it is gone
    code, err = run_cli(cut, tmp_path / "o.mp4")
    assert code == 1 and "corrupt or truncated" in _one_line(err)
    _no_output_files(tmp_path, ["in.mp4", "cut.mp4"])


def test_truncated_faststart_file_fails_midway(make_video, run_cli, tmp_path):
    src = make_video(frames=60, width=160, height=120, options={"movflags": "faststart"})
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])  # index intact, media data cut off
    code, err = run_cli(cut, tmp_path / "o.mp4")
    assert code == 1 and "corrupt" in _one_line(err)
    _no_output_files(tmp_path, ["in.mp4", "cut.mp4"])


def test_no_video_stream(run_cli, tmp_path):
    import av
    import numpy as np
    src = tmp_path / "audio.m4a"
    with av.open(str(src), "w") as oc:
        a = oc.add_stream("aac", rate=48000, layout="mono")
        for i in range(20):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 48000, i * 1024
            for p in a.encode(f):
                oc.mux(p)
        for p in a.encode(None):
            oc.mux(p)
    code, err = run_cli(src, tmp_path / "o.mp4")
    assert code == 2 and "no video stream" in _one_line(err)


@pytest.mark.parametrize("target", ["missing_dir/o.mp4", "/proc/streamdehaze_o.mp4", "."])
def test_unwritable_output(make_video, run_cli, tmp_path, target):
    src = make_video(frames=3)
    out = target if target.startswith("/") else tmp_path / target
    code, err = run_cli(src, out)
    assert code == 2
    _one_line(err)
    _no_output_files(tmp_path, ["in.mp4"])


def test_output_is_input(make_video, run_cli, tmp_path):
    src = make_video(frames=3)
    before = src.read_bytes()
    code, err = run_cli(src, tmp_path / "." / "in.mp4")
    assert code == 2 and "is the input" in _one_line(err)
    assert src.read_bytes() == before


def test_unknown_model(make_video, run_cli, tmp_path):
    code, err = run_cli(make_video(frames=3), tmp_path / "o.mp4", "--model", "magic")
    assert code == 2 and "unknown model 'magic'" in _one_line(err)
    _no_output_files(tmp_path, ["in.mp4"])


@pytest.mark.parametrize("args, words", [
    (["--codec", "nonsense264"], "unknown video encoder"),
    (["--max-frames", "0"], "must be at least 1"),
    (["--device", "tpu"], "unknown device"),
])
def test_bad_options(make_video, run_cli, tmp_path, args, words):
    code, err = run_cli(make_video(frames=3), tmp_path / "o.mp4", *args)
    assert code == 2 and words in _one_line(err)
    _no_output_files(tmp_path, ["in.mp4"])


def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "streamdehaze", str(tmp_path / "x.mp4"), str(tmp_path / "y.mp4")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"streamdehaze: error: input not found: {tmp_path / 'x.mp4'}"

"""Damaged video input: corrupt packets skipped and counted as FFmpeg's own tools skip them (or, with --strict,
the first is an error); a truncated file keeps every frame decoded before the cut."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

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


def test_truncated_file_without_its_index_is_refused(make_video, run_cli, tmp_path):
    src = make_video(frames=30)
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # moov is at the end: nothing in it can be found
    code, err = run_cli(cut, tmp_path / "o.mp4")
    assert code == 1 and "corrupt or truncated" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "in.mp4"]

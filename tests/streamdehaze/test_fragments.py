"""A fragmented MP4 recording cut short by a full disk ends after its last whole frame (``fragments.py``)."""

from __future__ import annotations

import os
import shutil

import av
import numpy as np
import pytest

from streamdehaze.formats import LIVE_FILES
from streamdehaze.fragments import trim_cut_fragment, video_samples


def _record(path, frames: int = 60, gop: int = 25) -> None:
    """A live recording's layout: video and sound, a fragment a second (``formats.LIVE_FILES``) or, every frame a
    keyframe (``gop`` 1), a fragment a frame, whose size the fragment's header gives as its default."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mp4", options=LIVE_FILES[".mp4"][1]) as out:
        video = out.add_stream("libx264", rate=25, options={"g": str(gop)})
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "stereo"
        for i in range(frames):
            picture = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)  # (noise: fragments of some size)
            for packet in video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
            samples = av.AudioFrame.from_ndarray(rng.normal(0, 0.1, (1, 2 * 1920)).astype(np.float32), format="flt",
                                                 layout="stereo")
            samples.sample_rate, samples.pts = 48000, i * 1920
            for packet in sound.encode(samples):
                out.mux(packet)
        for stream in (video, sound):
            for packet in stream.encode(None):
                out.mux(packet)


def _decoded(path) -> tuple[int, int, int]:
    """Video frames and sound frames that decode, and packets that fail."""
    counts, errors = {"video": 0, "audio": 0}, 0
    with av.open(str(path)) as media:
        for packet in media.demux():
            try:
                counts[packet.stream.type] += len(packet.decode())
            except av.FFmpegError:
                errors += 1
    return counts["video"], counts["audio"], errors


@pytest.mark.parametrize("gop", [25, 1])
def test_a_whole_recording_is_left_as_it_is(tmp_path, gop):
    whole = tmp_path / "whole.mp4"
    _record(whole, gop=gop)
    data = whole.read_bytes()
    assert not trim_cut_fragment(whole) and whole.read_bytes() == data
    assert video_samples(whole) == 60 == _decoded(whole)[0]  # (a recording counted 0 would be taken for empty)


@pytest.mark.parametrize("left, gop", [(0.97, 25), (0.9, 25), (0.75, 25), (0.55, 25), (0.3, 25), (0.9, 1)])
def test_a_cut_recording_ends_after_its_last_whole_frame(tmp_path, left, gop):
    whole, cut = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    _record(whole, gop=gop)
    shutil.copy(whole, cut)
    end = int(left * whole.stat().st_size)
    os.truncate(cut, end)  # where the disk filled up
    video, sound, errors = _decoded(cut)
    assert errors == 1  # its last sample, cut: "Invalid data found when processing input"
    assert trim_cut_fragment(cut)
    assert _decoded(cut) == (video, sound, 0)  # every whole frame kept, and nothing else
    assert video_samples(cut) == video and cut.stat().st_size < end


def test_a_recording_cut_in_its_first_fragment_s_header_holds_no_frame(tmp_path):
    whole, cut = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    _record(whole)
    first = whole.read_bytes().index(b"moof") - 4
    cut.write_bytes(whole.read_bytes()[:first + 20])
    assert trim_cut_fragment(cut) and cut.stat().st_size == first and video_samples(cut) == 0

"""The reader's hand-off to the scheduler: bounded, and for a live source dropping its oldest pictures, never its
sound, which stays in order with everything else; a live source's pictures held in bytes too, whatever their size."""

from __future__ import annotations

import threading
from fractions import Fraction

import av

from streamdehaze import pipeline
from streamdehaze.pipeline import Stream
from streamdehaze.sources import VideoInfo
from streamdehaze.threads import Prefetch


def test_a_full_live_reader_drops_its_oldest_pictures_and_keeps_all_its_sound():
    items = ["f1", "p1", "f2", "p2", "f3", "p3", "f4", "p4"]  # pictures (f) and sound (p) as a camera sends them
    sent = threading.Event()

    def camera():
        yield from items
        sent.set()
    dropped: list[str] = []
    reader = Prefetch(camera(), maxsize=2, on_drop=dropped.append, kept=lambda item: item.startswith("p"))
    try:
        assert sent.wait(5)  # nobody has read yet: the reader made room as it went
        assert reader.qsize() == 2  # the pictures waiting (queue_depth), not the sound beside them
        got = list(reader)
    finally:
        reader.close()
    assert dropped == ["f1", "f2"]
    assert got == ["p1", "p2", "f3", "p3", "f4", "p4"]


def test_a_file_reader_waits_rather_than_drops():
    reader = Prefetch(iter(range(20)), maxsize=3)
    try:
        assert list(reader) == list(range(20))
    finally:
        reader.close()


class _Camera:
    """A camera that began at 96x64 and came back from an outage at 640x480: 40 frames of each, at once."""

    def __init__(self) -> None:
        self.info = VideoInfo(width=96, height=64, time_base=Fraction(1, 25), rate=Fraction(25), frames=0,
                              rotation=0, colour={})
        self.sent = threading.Event()

    def __iter__(self):
        for i in range(80):
            frame = av.VideoFrame(96, 64, "yuv420p") if i < 40 else av.VideoFrame(640, 480, "yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            yield frame
        self.sent.set()


def test_a_live_reader_holds_its_memory_budget_when_the_camera_comes_back_larger(monkeypatch):
    """The frames a camera's reader holds while the model is busy stay within the budget in bytes for the frames
    actually there, not as many as the first connection's size allowed (38 frames of 4K after 1080p: 470 MB)."""
    budget = 1 << 20
    monkeypatch.setattr(pipeline, "_LIVE_QUEUE_BYTES", budget)  # (1 MiB: two frames of 640x480, 460800 bytes each)
    camera = _Camera()
    stream = Stream(camera, sink=None, live=True, max_latency=1.0)
    stream.start(lambda: None, depth=1)  # (nothing takes the frames: a model that is busy)
    try:
        assert camera.sent.wait(10)
        held = list(stream.reader)  # (what waits, up to the camera's end)
    finally:
        stream.reader.close()
        stream.writer.cancel()
    assert sum(plane.buffer_size for frame in held for plane in frame.planes) <= budget
    assert [frame.pts for frame in held] == [78, 79]  # the latest
    assert stream.stats.dropped == 78

"""The reader's hand-off to the scheduler: bounded, and for a live source dropping its oldest pictures, never its
sound, which stays in order with everything else."""

from __future__ import annotations

import threading

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

"""Iterating over a live camera's dehazed frames with a loop slower than the camera: the loop sees recent frames
(the reader drops the oldest), not a growing backlog."""

from __future__ import annotations

import time

from streamdehaze import dehazed
from streamdehaze.live import LiveOptions


def test_a_slow_loop_over_a_camera_sees_recent_frames(rtsp_server):
    seen, start = [], None
    for record in dehazed(rtsp_server.url, model="dcp", live=LiveOptions(timeout=5), max_latency=0.5):
        start = start or time.monotonic()
        seen.append((time.monotonic() - start, record.seconds, record.index))
        if len(seen) == 16:
            break
        time.sleep(0.2)  # a loop at 5 fps over a 25 fps camera
    wall = seen[-1][0] - seen[0][0]
    span = seen[-1][1] - seen[0][1]
    indices = [i for *_, i in seen]
    assert all(b > a for a, b in zip(indices, indices[1:])) and indices[-1] > 30 and wall > 2.5  # frames skipped
    # Blocking queues would show 16 consecutive frames (0.6 s of video); the camera's own clock advances with the
    # loop's, less what the short queues hold.
    assert span > wall - 1.0, (span, wall)

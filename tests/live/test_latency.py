"""A model slower than the camera: latency stays under --max-latency, and the frames it skips are counted."""

from __future__ import annotations

import time

import torch
from torch import nn

from streamdehaze.engine import Engine
from streamdehaze.live import LiveOptions, LiveSource
from streamdehaze.pipeline import run_video
from streamdehaze.sinks import VideoSink
from streamdehaze.stats import RunStats


class SlowModel(nn.Module):
    """Identity that takes 150 ms a call: at most ~6.7 fps from a 25 fps camera."""

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        time.sleep(0.15)
        return rgb


def test_slow_model_keeps_latency_bounded(rtsp_server, tmp_path):
    stats = RunStats()
    with LiveSource(rtsp_server.url, LiveOptions(timeout=5), duration=6) as source:
        sink = VideoSink(tmp_path / "slow.mp4", source.info, live=True)
        result = run_video(source, Engine(SlowModel(), "cpu", infer_size=None), sink, live=True,
                           max_latency=0.5, stats=stats)
    snap = stats.snapshot()
    assert result.dropped > 0 and result.dropped == snap["dropped"]
    assert snap["frames"] + snap["dropped"] == snap["received"]
    # Bounded: the age limit, one model call and encoding, never the growing backlog of a blocking queue.
    assert snap["latency_p95_ms"] < 1000 * (0.5 + 0.15 + 0.35)
    assert 10 <= result.frames < snap["received"] / 2

"""Batches in flight: the pipeline keeps several submitted batches open and still writes every frame in order;
on CUDA, copy and compute streams give the CPU's frames (CUDA tests run only where a GPU is present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamdehaze.colour import YUVFormat
from streamdehaze.engine import Batch, Engine
from streamdehaze.models.dcp import DarkChannelPrior
from streamdehaze.pipeline import run_video
from streamdehaze.encoders import choose_encoding
from streamdehaze.sinks import VideoSink
from streamdehaze.sources import VideoFileSource
from streamdehaze.temporal import TemporalSmoother

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def _frames(path, n=10):
    with VideoFileSource(path) as source:
        return [f for f in source if hasattr(f, "planes")][:n]


def _run(src, dst, engine, batch):
    with VideoFileSource(src) as source:
        sink = VideoSink(dst, source.info, choose_encoding(source.info, crf=0, preset="ultrafast"))
        return run_video(source, engine, sink, batch_size=batch, temporal=TemporalSmoother())


@pytest.mark.parametrize("batch", [1, 3])
def test_batches_kept_in_flight_are_all_written_in_order(make_video, probe, tmp_path, monkeypatch, batch):
    src = make_video(frames=11, width=64, height=48)
    reference = _run(src, tmp_path / "ref.mp4", Engine(DarkChannelPrior(), "cpu"), batch)
    engine = Engine(DarkChannelPrior(), "cpu")
    engine.depth = 2  # as on a GPU: two more batches submitted before the oldest is collected,
    monkeypatch.setattr(Batch, "ready", lambda self: False)  # and none of them finished early
    result = _run(src, tmp_path / "deep.mp4", engine, batch)
    assert result.frames == reference.frames == 11
    ref, deep = probe(tmp_path / "ref.mp4"), probe(tmp_path / "deep.mp4")
    assert deep["times"] == ref["times"] == probe(src)["times"]
    assert all(np.array_equal(a, b) for a, b in zip(ref["rgb"], deep["rgb"]))


def test_submit_returns_a_batch_of_its_frames(make_video):
    frames = _frames(make_video(frames=5, width=65, height=47, pix_fmt="yuv444p"))
    engine = Engine(DarkChannelPrior(), "cpu")
    batch = engine.submit(frames, YUVFormat(matrix="bt601", subsampling=(1, 1)), "yuv444p")
    assert len(batch) == 5
    out = batch.frames()
    assert [f.pts for f in out] == [f.pts for f in frames] and (out[0].width, out[0].height) == (65, 47)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_cuda_streams_give_the_cpu_frames(make_video, batch):
    frames = _frames(make_video(frames=10, width=160, height=96))
    fmt = YUVFormat(matrix="bt601")
    # The CPU follows the camera by its optical flow, a GPU by the global shift: compare the same smoothing.
    cpu = Engine(DarkChannelPrior(), "cpu").process_frames(frames, fmt, "yuv420p", TemporalSmoother(device_motion=True))
    gpu_engine = Engine(DarkChannelPrior(), "cuda")
    assert gpu_engine.depth >= 2
    smoother = TemporalSmoother()
    submitted = [gpu_engine.submit(frames[i:i + batch], fmt, "yuv420p", smoother) for i in range(0, 10, batch)]
    gpu = [f for b in submitted for f in b.frames()]  # every batch was in flight before the first was collected
    assert [f.pts for f in gpu] == [f.pts for f in frames]
    for a, b in zip(cpu, gpu):
        diff = np.abs(a.to_ndarray().astype(int) - b.to_ndarray().astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.05  # CPU (OpenCV) and CUDA paths round differently


@pytest.mark.cuda
@cuda
def test_cuda_pinned_buffers_are_reused(make_video):
    frames = _frames(make_video(frames=6, width=160, height=96))
    engine = Engine(DarkChannelPrior(), "cuda")
    fmt = YUVFormat(matrix="bt601")
    engine.process_frames(frames[:3], fmt, "yuv420p")
    pool = engine._lanes.pool
    free = {key: [t.data_ptr() for t in ts] for key, ts in pool._free.items()}
    assert all(t.is_pinned() for ts in pool._free.values() for t in ts) and free
    engine.process_frames(frames[3:], fmt, "yuv420p")
    assert {key: sorted(t.data_ptr() for t in ts) for key, ts in pool._free.items()} == \
        {key: sorted(ptrs) for key, ptrs in free.items()}

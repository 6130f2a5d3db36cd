"""Overlapped host <-> GPU work: pinned host buffers and three CUDA streams (upload, compute, download).

A batch goes upload -> compute -> download, each step on its own stream and ordered by CUDA events, so while
batch k computes, batch k+1 uploads and batch k-1 comes back. ``Lanes.run`` only enqueues and returns at once;
the host waits for a batch when it needs the result (``Transfer.collect``), never per frame. Host buffers are
page-locked (only pinned memory copies asynchronously) and reused: pinning costs more than copying, and a
video repeats one frame size.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

R = TypeVar("R")


class PinnedPool:
    """Free page-locked host tensors by (shape, dtype); the least recently used sizes are let go. Thread-safe: the
    threads that submit to an engine take, those that collect its results give back."""

    def __init__(self, max_sizes: int = 8) -> None:
        self._free: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()
        self.max_sizes = max_sizes
        self._lock = threading.Lock()

    def take(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        key = (tuple(shape), dtype)
        with self._lock:
            free = self._free.get(key)
            if free:
                self._free.move_to_end(key)
                return free.pop()
        return torch.empty(key[0], dtype=dtype, pin_memory=True)

    def give(self, *tensors: torch.Tensor) -> None:
        with self._lock:
            for t in tensors:
                key = (tuple(t.shape), t.dtype)
                self._free.setdefault(key, []).append(t)
                self._free.move_to_end(key)
            while len(self._free) > self.max_sizes:  # a camera that changed resolution: old sizes go
                self._free.popitem(last=False)


class Transfer:
    """One batch in flight: its results land in pinned host buffers when ``done`` fires."""

    def __init__(self, pool: PinnedPool, inputs: list[torch.Tensor], outputs: list[torch.Tensor],
                 done: torch.cuda.Event) -> None:
        self._pool, self._inputs, self._outputs, self._done = pool, inputs, outputs, done

    def ready(self) -> bool:
        """Whether the results are already in host memory (never waits)."""
        return self._done.query()

    def collect(self, consume: Callable[..., R]) -> R:
        """Wait for the batch, hand its host results to ``consume`` (which must copy what it keeps), then
        return the buffers to the pool."""
        self._done.synchronize()
        try:
            return consume(*self._outputs)
        finally:
            self._pool.give(*self._inputs, *self._outputs)


class Lanes:
    """The upload, compute and download streams of one CUDA device, with their pinned buffer pool."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.upload, self.compute, self.download = (torch.cuda.Stream(device) for _ in range(3))
        self.pool = PinnedPool()

    def run(self, host_inputs: list[torch.Tensor], fn: Callable[..., Sequence[torch.Tensor]]) -> Transfer:
        """Enqueue: copy ``host_inputs`` (from ``self.pool``) to the device, ``fn(*device_inputs)`` there, and
        its output tensors back into pinned buffers. Returns without waiting."""
        # Work the caller queued on its own stream (weights, state) comes first.
        self.compute.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.upload):
            on_device = [h.to(self.device, non_blocking=True) for h in host_inputs]
            uploaded = torch.cuda.Event()
            uploaded.record(self.upload)
        self.compute.wait_event(uploaded)
        with torch.cuda.stream(self.compute):
            for t in on_device:  # allocated on the upload stream, freed after the compute stream is done
                t.record_stream(self.compute)
            outputs = list(fn(*on_device))
            computed = torch.cuda.Event()
            computed.record(self.compute)
        self.download.wait_event(computed)
        with torch.cuda.stream(self.download):
            host_outputs = [self.pool.take(t.shape, t.dtype) for t in outputs]
            for t, h in zip(outputs, host_outputs):
                t.record_stream(self.download)
                h.copy_(t, non_blocking=True)
            done = torch.cuda.Event(blocking=True)  # the waiting host thread sleeps: the encoder needs the CPU
            done.record(self.download)
        return Transfer(self.pool, host_inputs, host_outputs, done)

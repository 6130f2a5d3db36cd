"""Concurrent callers share model calls: ``SharedCalls``, and the ``Dehazer`` streams that use it."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch
from torch import nn

from streamdehaze import Dehazer
from streamdehaze.shared_calls import SharedCalls


class _Held:
    """Holds the first ``first`` calls inside the model until ``waiting`` more calls wait for it; records every
    batch size."""

    def __init__(self, shared: SharedCalls, waiting: int, first: int = 1) -> None:
        self.shared, self.waiting, self.first = shared, waiting, first
        self.sizes: list[int] = []
        self.inside, self.released = threading.Event(), threading.Event()

    def enter(self, x: torch.Tensor) -> None:
        self.sizes.append(x.shape[0])
        if len(self.sizes) <= self.first:
            if len(self.sizes) == self.first:
                self.inside.set()
            deadline = time.monotonic() + 30
            while not self.released.is_set():  # (once seen, for all held calls: the waiting ones move on)
                if self._waiting() >= self.waiting:
                    self.released.set()
                assert time.monotonic() < deadline, "the other calls never came"
                time.sleep(0.005)

    def _waiting(self) -> int:
        with self.shared._cond:  # (a call is in the list a moment before its own thread takes it)
            return len(self.shared._waiting)


def _run_all(held: _Held, first: list, others: list) -> list:
    """Run each of ``first`` in a thread; once they hold the model, each of ``others`` in a thread of its own."""
    results: list = [None] * (len(first) + len(others))

    def run(i: int, call) -> None:
        try:
            results[i] = call()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate([*first, *others])]
    for t in threads[:len(first)]:
        t.start()
    assert held.inside.wait(30)
    for t in threads[len(first):]:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_calls_waiting_for_the_model_share_the_next_call():
    shared = SharedCalls(at_once=1)
    held = _Held(shared, waiting=3)

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        held.enter(x)
        return 2 * x, x.sum(dim=(1, 2), keepdim=True)

    inputs = [torch.full((k, 2, 2), float(k)) for k in (1, 2, 3, 1)]
    results = _run_all(held, [lambda: shared(fn, inputs[0])], [lambda x=x: shared(fn, x) for x in inputs[1:]])
    assert held.sizes == [1, 6]  # the three that waited went through together
    for x, (twice, total) in zip(inputs, results):
        assert torch.equal(twice, 2 * x) and torch.equal(total, x.sum(dim=(1, 2), keepdim=True))
    assert shared(fn, inputs[3])[0].shape == (1, 2, 2) and held.sizes[-1] == 1  # alone, it runs at once


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_call_runs():
    shared = SharedCalls(at_once=1)
    held = _Held(shared, waiting=2)

    def fn(x: torch.Tensor) -> torch.Tensor:
        held.enter(x)
        if x.shape[0] > 1:
            raise RuntimeError("out of memory")
        return x + 1

    results = _run_all(held, [lambda: shared(fn, torch.zeros(1, 1))],
                       [lambda: shared(fn, torch.zeros(1, 1)), lambda: shared(fn, torch.zeros(1, 1))])
    assert torch.equal(results[0], torch.ones(1, 1))
    assert [str(r) for r in results[1:]] == ["out of memory", "out of memory"]
    assert torch.equal(shared(fn, torch.zeros(1, 1)), torch.ones(1, 1))


def test_an_interrupt_is_its_own_threads_and_the_calls_it_took_run_in_theirs():
    # Ctrl-C lands in one thread (the main one) while it runs the other streams' calls with its own: it once ended
    # them all with a KeyboardInterrupt, killing camera threads that stop only on errors of their own
    shared = SharedCalls(at_once=1)
    held = _Held(shared, waiting=2)
    interrupted: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        held.enter(x)
        if x.shape[0] == 2 and not interrupted:  # the batch of the two that waited: Ctrl-C, in the thread running it
            interrupted.append(threading.get_ident())
            raise KeyboardInterrupt
        return x + 1

    results: dict[int, object] = {}

    def run(i: int) -> None:
        try:
            results[i] = shared(fn, torch.full((1, 1), float(i)))
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    threads[0].start()
    assert held.inside.wait(30)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(60)
    assert held.sizes == [1, 2, 1]  # the batch interrupted, then the other's call again, in its own thread
    assert torch.equal(results[0], torch.ones(1, 1))
    assert sorted(type(results[i]).__name__ for i in (1, 2)) == ["KeyboardInterrupt", "Tensor"]
    survivor = next(i for i in (1, 2) if isinstance(results[i], torch.Tensor))
    assert torch.equal(results[survivor], torch.full((1, 1), survivor + 1.0))


class _Recording(nn.Module):
    def __init__(self, model: nn.Module, held: _Held) -> None:
        super().__init__()
        self.model, self.held = model, held

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.held.enter(x)
        return self.model(x)


def _clip(seed: int, frames: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, (48, 64, 3), dtype=np.uint8)
    return [np.clip(base.astype(int) + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
            for _ in range(frames)]


def test_two_calls_run_side_by_side_and_a_third_waits():
    shared = SharedCalls(at_once=2)
    held = _Held(shared, waiting=1, first=2)  # both inside at once, until a third call waits

    def fn(x: torch.Tensor) -> torch.Tensor:
        held.enter(x)
        return x + 1

    results = _run_all(held, [lambda: shared(fn, torch.zeros(1)), lambda: shared(fn, torch.zeros(1))],
                       [lambda: shared(fn, torch.zeros(1))])
    assert held.sizes == [1, 1, 1] and all(torch.equal(r, torch.ones(1)) for r in results)


def test_dehazer_streams_in_threads_share_model_calls_and_give_their_own_frames():
    first = Dehazer("dcp", device="cpu")
    streams = [first, first.stream(), first.stream(), first.stream()]
    held = _Held(first.engine._shared, waiting=2, first=2)
    first.engine.model = _Recording(first.engine.model, held)
    clips = [_clip(seed) for seed in range(4)]

    def run(stream: Dehazer, clip: list[np.ndarray]):
        return lambda: [stream(frame) for frame in clip]

    results = _run_all(held, [run(s, c) for s, c in zip(streams[:2], clips[:2])],
                       [run(s, c) for s, c in zip(streams[2:], clips[2:])])
    # two streams' first frames in the model side by side; the two others' waited, and went through together (with
    # a first stream's next frame where it came before that call began: a matter of the threads' timing)
    assert held.sizes[:2] == [1, 1] and held.sizes[2] in (2, 3) and sum(held.sizes) == 16, held.sizes
    for clip, got in zip(clips, results):
        alone = Dehazer("dcp", device="cpu")
        for frame, out in zip(clip, got):
            assert np.array_equal(out, alone(frame))  # each stream's own frames, smoothed with its own state

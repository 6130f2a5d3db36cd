"""source -> engine -> sink, with decode and encode in their own threads.

The reader thread demuxes and decodes ahead into a bounded queue; the calling thread batches frames through
the engine (on a GPU, files keep up to ``engine.depth`` more batches in flight while the oldest is collected;
finished batches go out at once); the writer thread encodes and muxes. For files, full queues block the stage
before them (backpressure), so no frame is ever dropped. For live sources the reader's queue drops its oldest frame instead,
and frames older than ``max_latency`` are skipped, so latency stays bounded when the model is slower than the
camera. Copy-stream packets skip the engine and reach the writer in demux order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import av

from .engine import Batch, Engine
from .stats import RunStats
from .threads import Prefetch, Worker


@dataclass
class RunResult:
    frames: int
    seconds: float
    interrupted: bool = False
    dropped: int = 0
    reconnects: int = 0
    corrupt: int = 0  # input packets skipped as corrupt
    output: str | None = None  # where the frames went, when that is not the target (an interrupted file run)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run_video(source: Iterable, engine: Engine, sink, *, batch_size: int = 1, queue_frames: int = 8,
              live: bool = False, max_latency: float | None = None, stats: RunStats | None = None,
              on_frames: Callable[[int], None] | None = None) -> RunResult:
    """Process every frame of ``source`` into ``sink`` and close the sink.

    Ctrl-C (KeyboardInterrupt) stops reading, writes the frames already dehazed, flushes the encoder and
    returns with ``interrupted=True``: the output is complete and playable up to that frame.
    """
    stats = stats or RunStats()
    start = time.perf_counter()
    reader = Prefetch(source, maxsize=max(2, batch_size) if live else queue_frames, name="decode",
                      on_drop=(lambda _: stats.drop()) if live else None)
    stats.queue_depth = reader.qsize
    stats.reconnects = lambda: getattr(source, "reconnects", 0)
    stats.received = lambda: getattr(source, "received", stats.frames)
    stats.corrupt = lambda: getattr(source, "corrupt", 0)

    arrival = getattr(source, "arrival", lambda pts: None)  # live sources know when each frame came in

    def write(item: av.VideoFrame | av.Packet) -> None:
        sink.write(item)
        if isinstance(item, av.VideoFrame):
            stats.frame_done(arrival(item.pts))

    writer: Worker = Worker(write, maxsize=queue_frames + batch_size, name="encode")
    batch: list[av.VideoFrame] = []
    in_flight: deque[Batch] = deque()  # submitted to the engine, oldest first
    # Live: every frame out as soon as it is done (a camera that stalls must not hold frames back).
    depth = 0 if live else engine.depth
    done = 0
    interrupted = False

    def collect() -> None:
        nonlocal done
        frames = in_flight.popleft().frames()
        for frame in frames:
            writer.put(frame)
        done += len(frames)
        if on_frames is not None:
            on_frames(len(frames))

    def flush() -> None:
        in_flight.append(engine.submit(batch, sink.yuv_format, sink.pix_fmt))
        batch.clear()
        while in_flight and (len(in_flight) > depth or in_flight[0].ready()):  # finished ones go out early
            collect()

    try:
        try:
            for item in reader:
                if isinstance(item, av.Packet):
                    writer.put(item)
                    continue
                came = arrival(item.pts)
                if max_latency is not None and came is not None and time.monotonic() - came > max_latency:
                    stats.drop()  # already too old to be worth showing
                    continue
                batch.append(item)
                if len(batch) >= batch_size:
                    flush()
            if batch:
                flush()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stop = getattr(source, "stop", None)
            if stop is not None:
                stop()
            reader.close()
        try:
            while in_flight:  # already dehazed or on their way: write them (after Ctrl-C too)
                collect()
        except KeyboardInterrupt:  # (again): skip the rest, still finish the file
            interrupted = True
        writer.finish()
        sink.close()
    except BaseException:
        writer.cancel()
        sink.abort()
        raise
    return RunResult(frames=done, seconds=time.perf_counter() - start, interrupted=interrupted,
                     dropped=stats.dropped, reconnects=getattr(source, "reconnects", 0),
                     corrupt=getattr(source, "corrupt", 0))

"""source -> engine -> sink, with decode and encode in their own threads.

The reader thread demuxes and decodes ahead into a bounded queue; the calling thread batches frames through
the engine; the writer thread encodes and muxes. Full queues block the stage before them (backpressure), so a
file run never drops a frame. Copy-stream packets skip the engine and reach the writer in demux order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import av

from .engine import Engine
from .sinks import VideoFileSink
from .threads import Prefetch, Worker


@dataclass
class RunResult:
    frames: int
    seconds: float
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run_video(source: Iterable, engine: Engine, sink: VideoFileSink, *, batch_size: int = 1,
              queue_frames: int = 8, on_frames: Callable[[int], None] | None = None) -> RunResult:
    """Process every frame of ``source`` into ``sink`` and close the sink.

    Ctrl-C (KeyboardInterrupt) stops reading, writes the frames already dehazed, flushes the encoder and
    returns with ``interrupted=True``: the output is complete and playable up to that frame.
    """
    start = time.perf_counter()
    reader = Prefetch(source, maxsize=queue_frames, name="decode")
    writer: Worker = Worker(sink.write, maxsize=queue_frames + batch_size, name="encode")
    batch: list[av.VideoFrame] = []
    done = 0
    interrupted = False

    def flush() -> None:
        nonlocal done
        for frame in engine.process_frames(batch, sink.yuv_format, sink.pix_fmt):
            writer.put(frame)
        done += len(batch)
        if on_frames is not None:
            on_frames(len(batch))
        batch.clear()

    try:
        try:
            for item in reader:
                if isinstance(item, av.Packet):
                    writer.put(item)
                    continue
                batch.append(item)
                if len(batch) >= batch_size:
                    flush()
            if batch:
                flush()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            reader.close()
        writer.finish()
        sink.close()
    except BaseException:
        writer.cancel()
        sink.abort()
        raise
    return RunResult(frames=done, seconds=time.perf_counter() - start, interrupted=interrupted)

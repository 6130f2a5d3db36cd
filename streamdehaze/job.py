"""One input dehazed into one output: the checks made before anything starts, the source, the sink, and what becomes
of the output when the run completes, is interrupted or fails. A single run (``api.process``) and every stream of
a fleet (``fleet.py``) are the same job; only who drives the pipeline differs.

Outputs (``outputs.py``): a file run is all or nothing (written to an anonymous file, named when complete, the
frames of an interrupted run kept in ``NAME.partial.EXT``); a live recording is written as it goes and kept
whatever ends it, never replacing an earlier one; segments and network targets are written as they go.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .config import StreamConfig, checked_option, keyed
from .credentials import check_url, mask
from .encoders import choose_encoding, encoder, quality_of, quality_options
from .engine import check_noise_floor, check_strength, resolve_device
from .errors import MediaError, StreamDehazeError, Truncated, UsageError
from .formats import (
    HLS,
    STDOUT,
    check_encoder_fits,
    check_live_file,
    check_segments,
    default_encoder,
    output_muxer,
    output_options,
    segment_example,
    segment_names,
    segment_pattern,
    url_format,
)
from .hwaccel import Nvidia, check_nvenc_codec, use_cuda
from .images import is_image
from .live import LiveOptions, LiveSource, Stopped, is_live
from .models import MODEL_NAMES
from .models.kanet_model import check_weights_file
from .outputs import (
    OutputFile,
    RecordingDeleted,
    check_not_recording,
    check_output,
    check_writable,
    move_aside,
    next_segment,
    remove_stale_partials,
)
from .pipeline import RunResult, Stream, deferred_signals
from .publish import PublishedSink
from .records import FrameRecord
from .sinks import CallbackSink, SegmentedSink, VideoSink
from .sources import TRANSPORT_CLOCKS, VideoFileSource, local_file, reads_a_pipe
from .stats import RunStats
from .temporal import check_mode, smoother
from .trial import trial_write

FILE_BATCH = 4  # default frames per model call for files: batches amortise per-call costs (CPU: 1.4x the fps)

Source = VideoFileSource | LiveSource


def open_source(input: str | os.PathLike, *, max_frames: int | None = None, duration: float | None = None,
                live: LiveOptions | None = None, nvdec: Nvidia | None = None, strict: bool = False,
                stop: threading.Event | None = None, copy_audio: bool = False) -> Source:
    """A file, image sequence (``frames/%05d.png``) or URL of a file -> ``VideoFileSource`` (decoded with NVDEC
    if ``nvdec``; ``strict``: a corrupt packet is an error, not skipped); a camera stream (rtsp://, rtmp://,
    srt://, udp://, http(s) streams, /dev/videoN) -> ``LiveSource`` (software decoding: a camera's few streams
    decode easily on a CPU), dialled until it answers or ``stop`` is set (standard input, a named pipe: read until
    it is). ``copy_audio``: a camera's sound comes too, as packets between the frames (a file's audio always does)."""
    for key, value in (("max_frames", max_frames), ("duration", duration)):
        if value is not None:
            checked_option(key, value)
    if is_live(str(input)):
        return LiveSource(str(input), live or LiveOptions(), max_frames=max_frames, duration=duration, stop=stop,
                          copy_audio=copy_audio)
    return VideoFileSource(input, max_frames=max_frames, duration=duration, nvdec=nvdec, strict=strict, stop=stop)


class Job:
    """``config.input`` dehazed into ``config.output`` (and/or into ``on_frame(record)``: ``sinks.CallbackSink``).

    ``check()`` (no side effects), then ``open()`` (the source: a camera may take long to answer), ``start()``
    (the output and the pipeline ``Stream``, to be driven by a scheduler), and ``complete()`` once the stream is
    drained, or ``abort()`` if driving it failed.
    """

    def __init__(self, config: StreamConfig, *, stats: RunStats | None = None,
                 on_frame: Callable[[FrameRecord], np.ndarray | None] | None = None,
                 on_frames: Callable[[int], None] | None = None, bgr: bool = True, option: str = "--{} {}") -> None:
        self.config, self.on_frame, self.on_frames, self.bgr = config, on_frame, on_frames, bgr
        self.option = option  # how messages name a setting (``create_model``): --device cuda, device=cuda
        self.stats = stats or RunStats()
        self.live = is_live(config.input)
        target = config.output
        self.dst = None if target is None or url_format(target) is not None else Path(target)
        self.source: Source | None = None
        self.stream: Stream | None = None
        self._out: OutputFile | None = None
        self.moved: tuple[str, str] | None = None  # (a partial this run kept, where an earlier one's there went)
        self._segments: SegmentedSink | None = None
        self._published: PublishedSink | None = None

    def check(self, going: Collection[Path] = ()) -> None:
        """Everything that can be checked before a camera is dialled or a model loaded; each ``UsageError`` names
        the option at fault (``config.keyed``). ``going``: files (resolved) that streams of this process are
        recording and will have finished, and moved aside, before this one starts (a fleet's reload)."""
        c = self.config
        if c.output is None and self.on_frame is None:
            raise UsageError("nothing to do: give an output or an on_frame callback")
        if self.dst is not None and is_image(self.dst):  # (it was "x.jpg (image2) cannot hold libx264 video; ...")
            with keyed("output"):
                raise UsageError(f"the output must be a video file, not an image: {self.dst} (photos: streamdehaze "
                                 "IN.jpg OUT.jpg, or Dehazer(temporal='off'))")
        muxer = self._muxer()
        with keyed("codec"):
            self.codec = encoder(c.encode.codec or (default_encoder(muxer) if muxer else "libx264")).name
            if muxer is not None:
                check_encoder_fits(muxer, self.codec, mask(str(c.output), str(c.output)))
        with keyed("crf"):
            quality_options(self.codec, c.encode.crf, option=self.option)
        with keyed("preset"):
            quality_options(self.codec, None, c.encode.preset, self.option)
        with keyed("temporal"):
            check_mode(c.temporal)
        with keyed("temporal_strength"):
            if not 0.0 <= c.temporal_strength < 1.0:
                raise UsageError(f"temporal strength must be at least 0 and below 1, not {c.temporal_strength}")
        with keyed("strength"):
            check_strength(c.model.strength)
        with keyed("noise_floor"):
            check_noise_floor(c.model.noise_floor)
        with keyed("model"):
            if c.model.model not in MODEL_NAMES:
                raise UsageError(f"unknown model {c.model.model!r}; choose one of: {', '.join(MODEL_NAMES)}")
        with keyed("weights"):
            if c.model.weights is not None:
                check_weights_file(c.model.weights)
        with keyed("device"):
            self.device = resolve_device(c.model.device, self.option.format("device", ""))
        with keyed("hwaccel"):
            self.nvidia = use_cuda(c.hwaccel, self.device, self.codec)
        with keyed("codec"):
            check_nvenc_codec(self.codec, self.device)
        with keyed("input"):
            self._check_input()
        with keyed("output"):
            self._check_output(going)
        with keyed("stats_json"):
            if c.stats_json is not None:
                check_writable(Path(c.stats_json).parent)
                check_stats_file(c.stats_json, c)

    def _muxer(self) -> str | None:
        """The output's muxer; None without an output, or for a name ``_check_output`` refuses."""
        try:
            return None if self.config.output is None else output_muxer(str(self.config.output))
        except UsageError:
            return None

    def _check_input(self) -> None:
        path = local_file(self.config.input)  # (a file: URL's too)
        if path is None:
            return
        if not path.exists():
            raise UsageError(f"input not found: {self.config.input}")
        if path.is_dir():
            raise UsageError(f"input {self.config.input} is a folder: give a video file or a camera")

    def _check_output(self, going: Collection[Path]) -> None:
        segmented = self.config.encode.segment_time is not None
        if self.dst is None:
            if segmented and self.config.output is not None:
                raise UsageError("--segment-time splits a file output, not a stream published to a URL")
            if self.config.output not in (None, STDOUT):
                check_url(str(self.config.output))
            elif self.config.output == STDOUT and os.isatty(1):  # (binary video would fill the terminal)
                raise UsageError("standard output is a terminal: redirect it (- > out.ts) or pipe it to a player")
            return
        check_output(segment_example(self.dst) if segmented else self.dst, local_file(self.config.input))
        output_muxer(str(self.dst))  # (a name that tells no format, or would be many files)
        if segmented:
            check_segments(self.dst)
        if self.live:
            check_live_file(self.dst)
        # (a recording cannot be moved aside under its run; a file run's finished output would take its name, and
        # its frames with it)
        if not segmented and self.dst.resolve() not in going and self.dst.suffix.lower() != HLS:
            check_not_recording(self.dst)
        check_writable(self.dst.parent)

    def open(self, stop: threading.Event | None = None) -> Source:
        """Open the input; a camera is dialled until it answers (``live.Stopped`` if ``stop`` is set first; standard
        input or a named pipe is read until ``stop`` is set, then meets its end). Then
        the output's encoding is chosen for its size and timing and tried in memory (``trial.py``), before the
        model loads: a pair of format and encoder FFmpeg would fail is a ``UsageError``."""
        c = self.config
        self.source = open_source(c.input, max_frames=c.max_frames, duration=c.duration, live=c.live,
                                  nvdec=self.nvidia, strict=c.strict, stop=stop, copy_audio=c.output is not None)
        try:
            with keyed("codec"):
                self._choose_encoding()
        except BaseException:
            self.source.close()
            raise
        return self.source

    def open_interruptibly(self, stopped: threading.Event | None = None) -> Source:
        """``open()``, which Ctrl-C, SIGTERM and SIGHUP end at once (their handler's KeyboardInterrupt) when called
        from the main thread, and ``stopped`` (set from any thread) with ``live.Stopped``. A camera is dialled in a
        thread of its own meanwhile: FFmpeg waits for an answer (up to the connect timeout, 10 s or more) holding
        the calling thread in C, where no Python handler runs, and PyAV loses a KeyboardInterrupt raised as that
        wait returns (the handler runs inside its error check): in the main thread the run would dial on for ever.
        Interrupted, the dial gives up with its attempt, in the background (FFmpeg's wait cannot be cut short from
        outside), and closes what it opened. Standard input and a named pipe are opened the same way: their writer
        may keep them open and send nothing, and FFmpeg waits for the data it looks at first; interrupted, their
        reading ends at once."""
        waits = self.live or reads_a_pipe(self.config.input)
        if not waits or (stopped is None and threading.current_thread() is not threading.main_thread()):
            return self.open()
        stop, lock, done = threading.Event(), threading.Lock(), []

        def dial() -> None:
            try:
                source = self.open(stop)
            except BaseException as exc:  # (live.Stopped once interrupted)
                done.append(exc)
                return
            with lock:
                if stop.is_set():  # interrupted as it answered: nobody takes it
                    source.close()
                else:
                    done.append(source)

        thread = threading.Thread(target=dial, name="dial", daemon=True)
        with deferred_signals() as run_handlers:  # (a handler run between two checks, not inside PyAV's calls)
            thread.start()
            try:
                while thread.is_alive():
                    run_handlers()
                    if stopped is not None and stopped.is_set():
                        raise Stopped
                    thread.join(0.1)
                run_handlers()
            except BaseException:
                with lock:
                    stop.set()
                    if done and not isinstance(done[0], BaseException):
                        done[0].close()
                raise
        if isinstance(done[0], BaseException):
            raise done[0]
        return done[0]

    def _choose_encoding(self) -> None:
        c, info, muxer = self.config, self.source.info, self._muxer()
        self.encoding = choose_encoding(info, self.codec, c.encode.crf, c.encode.preset, self.live, self.nvidia,
                                        muxer or "matroska")
        if muxer == "hls":  # (its segments, in memory: the HLS muxer writes files of its own)
            trial_write("mpegts", {}, info, self.encoding, self.live, str(c.output))
        elif muxer is not None and muxer != "rtsp":  # (an RTSP server is not written to in memory)
            fmt, options = output_options(str(c.output), self.dst, self.live, tags=info.tags,
                                          as_it_goes=c.encode.segment_time is not None)
            trial_write(fmt, options, info, self.encoding, self.live, mask(str(c.output), str(c.output)))

    def start(self, name: str = "") -> Stream:
        """Make the output ready (``outputs.py``) and the pipeline stream that feeds it."""
        c = self.config
        if self.dst is not None and self.dst.suffix.lower() == HLS:  # written as it goes, over an earlier playlist
            sink = self._sink(self.dst)
        elif self.dst is not None and self.live:
            if c.encode.segment_time is None:
                move_aside(self.dst)
            sink = self._sink(self.dst)
        elif self.dst is not None and c.encode.segment_time is None:
            remove_stale_partials(self.dst.parent, self.dst.name)
            self._out = OutputFile(self.dst)
            try:
                sink = self._sink(self._out.path, shown_as=self.dst)
            except BaseException:
                self._out.discard()
                raise
        else:  # segments of a file (each complete when the muxer moves on), a URL, or only the callback
            sink = self._sink(self.dst or c.output)
        batch = c.batch or (1 if self.live else FILE_BATCH)  # cameras: lowest latency
        temporal = smoother(c.temporal, c.temporal_strength)
        self.stream = Stream(self.source, sink, name=name, batch_size=batch, live=self.live,
                             max_latency=c.max_latency, stats=self.stats, temporal=temporal, on_frames=self.on_frames)
        return self.stream

    def settings(self, infer_shape: Callable[[int, int], tuple[int, int] | None]) -> dict[str, object]:
        """Once started: the settings the run goes with, as they were resolved (no "auto"): the model's size for
        the input's frames (``infer_shape``: the engine's; ``full`` at native size), frames per model call, the
        encoder and its quality, smoothing, device and hardware video."""
        c, info = self.config, self.source.info
        shape = infer_shape(info.height, info.width)
        settings: dict[str, object] = {"infer_size": "full" if shape is None else min(shape),
                                       "batch": self.stream.batch_size}
        if c.output is not None:
            crf, preset = quality_of(self.encoding)
            settings.update(codec=self.encoding.codec.name, crf=crf, preset=preset)
        device = self.device
        if device.type == "cuda" and device.index is None:  # (plain "cuda" is the current GPU: name which)
            device = torch.device("cuda", torch.cuda.current_device())
        return {**settings, "temporal": c.temporal, "temporal_strength": c.temporal_strength, "device": str(device),
                "hwaccel": "cuda" if self.nvidia else "none"}

    def _sink(self, target: Path | str | None, **more):
        c, info = self.config, self.source.info
        if c.encode.segment_time is not None:
            info = replace(info, chapters=[])  # (the input's chapters fit no one segment)
        encoding = self.encoding

        def sink(path: Path | str, **where) -> VideoSink:
            return VideoSink(path, info, encoding, live=self.live, **where)
        if target is None:
            inner = None
        elif c.encode.segment_time is not None:
            pattern = segment_pattern(Path(target))  # (numbered after those of earlier runs there)
            inner = self._segments = SegmentedSink(pattern, c.encode.segment_time, next_segment(pattern),
                                                   lambda path, start: sink(path, start=start, exclusive=True,
                                                                            as_it_goes=True),
                                                   self._clock(), origin=info.clock_start)
        elif self.dst is None and target != STDOUT:  # a server to publish to: a file's frames are never dropped
            inner = self._published = PublishedSink(lambda: sink(target), mask(str(target), str(target)),
                                                    encoding.pix_fmt, encoding.yuv_format,
                                                    c.live.reconnect if self.live else 0, stream=c.name)
            self.stats.unpublished = lambda: self._published.unsent
            self.stats.output_reconnects = lambda: self._published.reconnects
        else:  # (a recording is created, never truncated: another run may have just made that file)
            inner = sink(target, exclusive=self.live, start=self._clock_start(), **more)
        return inner if self.on_frame is None else CallbackSink(info, self.on_frame, inner, self.bgr, self.config.name)

    def _clock_start(self) -> Fraction:
        """Where the output's timestamps start from. An input's clock may start anywhere (an NVR's transport stream
        at 10:00:00, a Matroska file remuxed from one): a file with a clock of its own (MP4, MKV) starts at zero, as
        FFmpeg's tools make it, rather than after hours of nothing; a transport stream keeps it."""
        return Fraction(0) if self._muxer() in TRANSPORT_CLOCKS else self.source.info.clock_start

    def _clock(self) -> Callable[[float], float]:
        """The Unix time of a time on the output's clock, which segments named by their time are named by: a
        camera's, when its frame arrived; a file's, its creation time (a camera's or a phone's tag) and the time
        into it, or, without that tag, when the run began and the time into the file."""
        if isinstance(self.source, LiveSource):
            return self.source.wall_time
        try:
            start = datetime.fromisoformat(self.source.info.tags.get("creation_time", "")).timestamp()
        except ValueError:
            start = time.time()
        return lambda seconds: start + float(seconds)

    def release(self) -> None:
        """After the end: keep the statistics, let go of the source, the sinks and the pipeline (their codecs)."""
        self.stats.freeze()
        self.stream = self.source = self._segments = self._published = None

    def complete(self, interrupted: bool = False, run_handlers: Callable[[], None] = lambda: None) -> RunResult:
        """Once the stream is drained: finish it, and put the output where it belongs: at the target when it holds
        every frame (even if Ctrl-C came as it was being finished: the result then says ``interrupted``), else
        in ``NAME.partial.EXT``. ``run_handlers``: as for ``Stream.finish``."""
        try:
            result = self.stream.finish(interrupted, run_handlers)
        except StreamDehazeError as exc:
            self.abort()
            # whatever ended it, the recording (or the segments written) stays, and says so (unless someone deleted it)
            if (self.live or self._segments is not None) and self.dst is not None \
                    and not isinstance(exc, RecordingDeleted):
                done, frames = "recorded" if self.live else "written", self.stream.sink.frames
                # Those the file holds, not those encoded (its statistics say the same); a camera's others, lost with
                # it, count as dropped, so that received = frames + dropped still holds.
                if self.live:
                    self.stats.drop(self.stats.frames - frames)
                self.stats.frames = frames
                if frames == 0:  # (a file that would hold none is not kept: there is none to name)
                    raise MediaError(f"{exc}; nothing was {done}") from None
                raise MediaError(f"{exc}; the {frames} frames {done} before it are in {self._recorded_in()}") from None
            raise
        except BaseException:
            self.abort()
            raise
        if self._segments is not None:
            result.output = self._segments.written()
        if self._published is not None:
            result.unpublished, result.output_reconnects = self._published.unsent, self._published.reconnects
        if self._out is not None:
            if self.stream.stopped and result.frames == 0:  # (stopped before its first frame: an empty file, which
                self._out.discard()  # would have moved an earlier run's partial aside for nothing)
            elif self.stream.stopped:  # (cut short: frames of the input are not in it)
                result.output = str(self._out.keep_partial())
                if self._out.moved_aside is not None:  # (an earlier run's result names it: a fleet's restarted stream)
                    self.moved = (result.output, str(self._out.moved_aside))
            else:
                self._out.commit(ends_partial=True)
                if self.source.truncated:  # every frame before the cut is in the output: keep it, and say so
                    raise Truncated(f"{self.source.name} {self.source.truncated}; {self.dst} holds the "
                                    f"{result.frames} frames decoded before the cut", result.frames)
        return result

    def abort(self) -> None:
        """After a failure: a file run's unfinished output goes (a recording stays as it is)."""
        if self._out is not None:
            self._out.discard()
            self._out = None

    def _recorded_in(self) -> str:
        return str(self.dst) if self._segments is None else self._segments.written()


def stream_files(config: StreamConfig) -> list[tuple[str, str]]:
    """What a stream reads and writes, for ``same_file``: (its key, the resolved path, a segment pattern or an
    output URL)."""
    found = []
    if (source := local_file(config.input)) is not None:
        found.append(("input", str(source.resolve())))
    if config.output is not None:
        found.append(("output", _output_key(config)))
    if config.stats_json is not None:
        found.append(("stats_json", str(Path(config.stats_json).resolve())))
    return found


def check_stats_file(stats_json: str | Path, config: StreamConfig, shown: str | None = None) -> None:
    """A ``UsageError`` where a statistics file would be written over the stream's input or output (``shown``:
    its name in the message)."""
    stats = str(Path(stats_json).resolve())
    for what, path in stream_files(replace(config, stats_json=None)):
        if same_file(stats, path):
            raise UsageError(f"{shown or stats_json} is the {what}: name the statistics file otherwise")


def same_file(a: str, b: str) -> bool:
    """Whether two of ``stream_files``' names are one file: the same, or one a name the other's segment pattern
    (``cam_%05d.mp4``) writes."""
    if a == b:
        return True
    return any("%" in pattern and re.fullmatch(segment_names(pattern), name) is not None
               for pattern, name in ((a, b), (b, a)))



def _output_key(config: StreamConfig) -> str:
    path = Path(config.output)
    if "://" in config.output:
        return config.output
    return str((segment_pattern(path) if config.encode.segment_time is not None else path).resolve())

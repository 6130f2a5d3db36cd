"""The GStreamer element ``dehaze``: raw video in, the same frames dehazed out, buffer timestamps untouched.

    gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! dehaze model=dcp ! videoconvert \\
        ! x264enc ! mp4mux ! filesink location=out.mp4

It runs inside GStreamer's Python plugin loader (Debian: ``gstreamer1.0-python3-plugin-loader`` and
``python3-gst-1.0``); ``python -m streamdehaze.gst --env`` prints the environment that lets GStreamer find it.
Each element instance is one stream of an engine shared within the process (``shared_engines``): elements with
the same model, weights, device and inference size, in one pipeline or several, load the model once, and each keeps
its own temporal state, strength and noise floor. The engine is released when the last of them stops. I420 and NV12
are what the engine reads without conversion, so those are the formats it negotiates; ``videoconvert`` upstream
provides them.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from fractions import Fraction

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")
import numpy as np
from gi.repository import GLib, GObject, Gst, GstBase, GstVideo

from .defaults import TEMPORAL_STRENGTH
from .errors import StreamDehazeError, UsageError

FORMATS = "{ I420, NV12 }"
_CAPS = Gst.Caps.from_string(f"video/x-raw, format={FORMATS}, width=[1, 32767], height=[1, 32767]")
_FULL_RANGE = getattr(GstVideo.VideoColorRange, "0_255")  # not a Python identifier
_MATRIX = {GstVideo.VideoColorMatrix.BT709: "bt709", GstVideo.VideoColorMatrix.BT601: "bt601",
           GstVideo.VideoColorMatrix.BT2020: "bt2020"}
_AVCOL = {"bt709": 1, "bt601": 6, "bt2020": 9}
# Numbers an application may animate with GStreamer's controller (a strength that fades in), as any effect's.
_CONTROLLABLE = GObject.ParamFlags.READWRITE | Gst.PARAM_CONTROLLABLE


def _give_back_ctrl_c() -> None:
    """In a program that is not Python (gst-launch-1.0, a C application), the plugin loader's embedded Python took
    Ctrl-C for its KeyboardInterrupt, which nothing there catches: until the program set its own handler, Ctrl-C was
    lost (the whole of a model's loading). Python takes it only from the default, so the default goes back. A
    Python program (``sys.orig_argv`` names its interpreter) keeps its KeyboardInterrupt."""
    if not sys.orig_argv and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        with contextlib.suppress(ValueError):  # (loaded outside the main thread: nothing to give back from here)
            signal.signal(signal.SIGINT, signal.SIG_DFL)


_give_back_ctrl_c()


class DehazeElement(GstBase.BaseTransform):
    __gtype_name__ = "GstDehaze"  # instances are named as GStreamer names them: dehaze0, dehaze1, ...
    __gstmetadata__ = ("Dehaze", "Filter/Effect/Video", "Removes fog and haze from video (streamdehaze)",
                       "streamdehaze")
    __gsttemplates__ = (Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, _CAPS),
                        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, _CAPS))
    __gproperties__ = {
        "model": (str, "model", "model name (auto, dcp, kanet-t, ...)", "auto", GObject.ParamFlags.READWRITE),
        "weights": (str, "weights", "weights file for the model (.safetensors); empty: the shipped ones", "",
                    GObject.ParamFlags.READWRITE),
        "infer-size": (str, "infer-size", "inference short side: a number of pixels, full or auto", "auto",
                       GObject.ParamFlags.READWRITE),
        # (any number here: GLib would refuse one out of range with only a warning, and play on at the old value)
        "strength": (float, "strength", "how much of the model's correction to apply: 0 (none) to 1 (all)",
                     -GLib.MAXDOUBLE, GLib.MAXDOUBLE, 1.0, _CONTROLLABLE),
        "noise-floor": (str, "noise-floor", "8-bit levels: flat regions varying less are not amplified (0: off); auto: "
                        "from each frame's compression blocks", "auto", GObject.ParamFlags.READWRITE),
        "temporal": (str, "temporal", "flicker smoothing: ema, static (a camera that does not move) or off", "ema",
                     GObject.ParamFlags.READWRITE),
        "temporal-strength": (float, "temporal-strength", "weight of the past in flicker smoothing, in [0, 1)",
                              -GLib.MAXDOUBLE, GLib.MAXDOUBLE, TEMPORAL_STRENGTH, _CONTROLLABLE),
        "device": (str, "device", "auto, cpu, cuda or cuda:N", "auto", GObject.ParamFlags.READWRITE),
    }

    def __init__(self) -> None:
        super().__init__()
        self.props_ = {"model": "auto", "weights": "", "infer-size": "auto", "strength": 1.0, "noise-floor": "auto",
                       "temporal": "ema", "temporal-strength": TEMPORAL_STRENGTH, "device": "auto"}
        # This stream's engine (shared), its key in ``ENGINES``, smoother and correction: set when the element
        # starts and stops, and in between on the streaming thread only.
        self.engine = None
        self._key = None
        self.temporal = None
        self.correction = None
        self.info: GstVideo.VideoInfo | None = None
        self._lock = threading.Lock()  # properties are set from the application's threads
        self._changed: set[str] = set()
        # Drop frames that would reach a live sink too late, as videoconvert and videoscale do: a model slower than
        # the stream then stays near real time instead of falling behind without bound. (Not live: nothing dropped.)
        self.set_qos_enabled(True)
        # What a frame takes here, lately (seconds), and what latency queries are told it takes.
        self._took = self._reported = 0.0

    def do_get_property(self, prop: GObject.ParamSpec) -> str | float:
        with self._lock:
            return self.props_[prop.name]

    def do_set_property(self, prop: GObject.ParamSpec, value: str | float | None) -> None:
        if value is None:  # (C's NULL for a string: its default)
            value = prop.default_value
        with self._lock:  # takes effect from the next buffer
            self.props_[prop.name] = value
            self._changed.add(prop.name)

    def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
        self.info = GstVideo.VideoInfo.new_from_caps(incaps)
        return self.info is not None

    def do_start(self) -> bool:
        self._took = self._reported = 0.0
        try:
            self._release()
            self._current_engine()
        except StreamDehazeError as exc:  # a bad property: one message on the bus, the pipeline does not start
            self._error(Gst.LibraryError.quark(), Gst.LibraryError.SETTINGS, str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - a model that cannot load (memory, a torch error): said on the bus too
            self._error(Gst.LibraryError.quark(), Gst.LibraryError.INIT, f"{type(exc).__name__}: {exc}")
            return False
        return True

    def do_stop(self) -> bool:
        self._release()  # (the streaming thread has ended)
        return True

    def _release(self) -> None:
        """Let go of the shared engine: the last element holding it releases its model."""
        from .shared_engines import ENGINES

        key, self._key, self.engine, self.temporal, self.correction = self._key, None, None, None, None
        if key is not None:
            ENGINES.release(key)

    def do_gst_base_transform_query(self, direction: Gst.PadDirection, query: Gst.Query) -> bool:
        """Latency: upstream's, plus the time a frame takes here. A live pipeline's sinks then wait for the model's
        frames instead of dropping them as late (GStreamer's video sinks drop those 20 ms late). (The name says
        which ``query``: GstElement has one too.)"""
        ok = GstBase.BaseTransform.do_query(self, direction, query)
        if ok and query.type == Gst.QueryType.LATENCY and direction == Gst.PadDirection.SRC:
            live, low, high = query.parse_latency()
            ours = int(self._reported * Gst.SECOND)
            query.set_latency(live, low + ours, high if high == Gst.CLOCK_TIME_NONE else high + ours)
        return ok

    def _timed(self, seconds: float) -> None:
        """Note what a frame took: the slowest lately, decaying; where that moves by a quarter from what the
        pipeline was told, it is told again (it asks every element for its latency anew)."""
        took = self._took = max(seconds, 0.95 * self._took)
        if abs(took - self._reported) > 0.25 * max(self._reported, 0.002):
            self._reported = took
            self.post_message(Gst.Message.new_latency(self))

    def do_before_transform(self, buffer: Gst.Buffer) -> None:
        """Controlled properties take their values for this buffer's time (``GstController``)."""
        when = self.segment.to_stream_time(Gst.Format.TIME, buffer.pts)
        if when != Gst.CLOCK_TIME_NONE:
            self.sync_values(when)

    def do_sink_event(self, event: Gst.Event) -> bool:
        # After a flushing seek the frames no longer follow the ones smoothed before it: start the smoothing afresh,
        # as a new element would (GStreamer's convention for state built from earlier buffers).
        if event.type == Gst.EventType.FLUSH_STOP and self.temporal is not None:
            self.temporal.reset()
        return GstBase.BaseTransform.do_sink_event(self, event)

    def _current_engine(self):
        """The engine for the properties as they are now. A new strength, noise floor or temporal strength (a slider
        in an application) goes to this stream's correction and smoother at once; any other change takes the
        engine for the new settings (shared, loaded if no element holds it), with fresh temporal state."""
        # torch loads here, when a pipeline starts, not when GStreamer scans its plugins
        from .config import ModelOptions
        from .engine import Correction, resolve_device
        from .options import option_value, parse_infer_size, parse_noise_floor
        from .shared_engines import ENGINES, engine_key
        from .temporal import smoother

        with self._lock:
            p, changed = dict(self.props_), self._changed
            self._changed = set()
        if self.engine is not None and not changed:
            return self.engine
        try:
            floor = parse_noise_floor(p["noise-floor"])
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"noise-floor: {exc}") from None
        correction = Correction(p["strength"], floor)  # (checks the strength)
        try:  # (the command line's check: [0, 1))
            past = option_value("temporal_strength", p["temporal-strength"])
        except ValueError as exc:
            raise UsageError(f"temporal-strength: {exc}") from None
        if self.engine is not None and changed <= {"strength", "noise-floor", "temporal-strength"}:
            self.correction = correction
            if self.temporal is not None:
                self.temporal.strength = past
            return self.engine
        # this stream's own state; checks the mode before loading anything
        temporal = smoother(p["temporal"], past)
        try:
            size = parse_infer_size(p["infer-size"])
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"infer-size: {exc}") from None
        device = resolve_device(p["device"], option="device=")
        key = engine_key(ModelOptions(p["model"], p["weights"] or None, p["device"], size), device)
        engine = ENGINES.acquire(key, option="{}={}")  # (before the old one goes: the same one is not loaded again)
        self._release()
        self.engine, self._key, self.temporal, self.correction = engine, key, temporal, correction
        return engine

    def do_transform(self, inbuf: Gst.Buffer, outbuf: Gst.Buffer) -> Gst.FlowReturn:
        try:
            return self._transform(inbuf, outbuf)
        except UsageError as exc:  # a bad property set while playing: said as at start
            self._error(Gst.LibraryError.quark(), Gst.LibraryError.SETTINGS, str(exc))
            return Gst.FlowReturn.ERROR
        except Exception as exc:  # noqa: BLE001 - GStreamer cannot take a Python exception: it becomes a bus error
            self._error(Gst.StreamError.quark(), Gst.StreamError.FAILED, f"{type(exc).__name__}: {exc}")
            return Gst.FlowReturn.ERROR

    def _error(self, domain: int, code: int, text: str) -> None:
        self.post_message(Gst.Message.new_error(self, GLib.Error.new_literal(domain, f"dehaze: {text}", code), text))

    def _transform(self, inbuf: Gst.Buffer, outbuf: Gst.Buffer) -> Gst.FlowReturn:
        from .frames import planes_of

        engine = self._current_engine()
        info = self.info
        start = time.perf_counter()
        ok, src = inbuf.map(Gst.MapFlags.READ)
        if not ok:
            return Gst.FlowReturn.ERROR
        try:
            frame, fmt = self._frame(info, src.data, _layout(inbuf, info))
        finally:
            inbuf.unmap(src)
        (out,) = engine.process_frames([frame], fmt, "yuv420p", self.temporal, self.correction)
        ok, dst = outbuf.map(Gst.MapFlags.WRITE)
        if not ok:
            return Gst.FlowReturn.ERROR
        try:
            self._write(info, planes_of(out), dst.data, _layout(outbuf, info))
        finally:
            outbuf.unmap(dst)
        self._timed(time.perf_counter() - start)
        return Gst.FlowReturn.OK

    @staticmethod
    def _plane(data, layout: tuple[list[int], list[int]], i: int, rows: int, cols: int) -> np.ndarray:
        """Plane ``i`` of a mapped buffer laid out as ``layout`` says (``_layout``)."""
        start, stride = layout[0][i], layout[1][i]
        return np.frombuffer(data, np.uint8, rows * stride, start).reshape(rows, stride)[:, :cols]

    def _frame(self, info: GstVideo.VideoInfo, data, layout: tuple[list[int], list[int]]) -> tuple:
        from .colour import YUVFormat
        from .frames import frame_from_planes

        w, h = info.width, info.height
        cw, ch = (w + 1) // 2, (h + 1) // 2
        y = self._plane(data, layout, 0, h, w)
        if info.finfo.format == GstVideo.VideoFormat.NV12:
            uv = self._plane(data, layout, 1, ch, 2 * cw)
            u, v = uv[:, 0::2], uv[:, 1::2]
        else:
            u, v = self._plane(data, layout, 1, ch, cw), self._plane(data, layout, 2, ch, cw)
        matrix = _MATRIX.get(info.colorimetry.matrix, "bt709" if h >= 720 else "bt601")
        full = info.colorimetry.range == _FULL_RANGE
        frame = frame_from_planes(y, u, v, "yuv420p")  # copies the planes out of the mapped buffer
        frame.colorspace, frame.color_range = _AVCOL[matrix], 2 if full else 1
        frame.pts, frame.time_base = 0, Fraction(1, 1)
        return frame, YUVFormat(matrix=matrix, full_range=full, bits=8, subsampling=(2, 2))

    def _write(self, info: GstVideo.VideoInfo, planes: tuple, data, layout: tuple[list[int], list[int]]) -> None:
        w, h = info.width, info.height
        cw, ch = (w + 1) // 2, (h + 1) // 2
        out = memoryview(data)  # writable: mapped for writing
        self._plane(out, layout, 0, h, w)[:] = planes[0]
        if info.finfo.format == GstVideo.VideoFormat.NV12:
            uv = self._plane(out, layout, 1, ch, 2 * cw)
            uv[:, 0::2], uv[:, 1::2] = planes[1], planes[2]
        else:
            self._plane(out, layout, 1, ch, cw)[:] = planes[1]
            self._plane(out, layout, 2, ch, cw)[:] = planes[2]


def _layout(buffer: Gst.Buffer, info: GstVideo.VideoInfo) -> tuple[list[int], list[int]]:
    """Where each plane of ``buffer`` starts and how long its rows are: as its video meta says (a camera SDK's
    padded rows), else the caps' default layout."""
    meta = GstVideo.buffer_get_video_meta(buffer)
    return (meta.offset, meta.stride) if meta is not None else (info.offset, info.stride)

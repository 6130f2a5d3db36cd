"""Video sink: encode dehazed frames with the input's timestamps and copy audio/subtitle packets as they are.

Targets: a file (optionally split into segments) or a network URL to publish to (RTSP, RTMP, SRT/UDP MPEG-TS).
Live runs encode with ``tune=zerolatency`` and a one-second keyframe interval, and write MP4 files fragmented,
so a file cut short by a crash or power loss still plays up to its last fragment.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av

from . import hwaccel
from .colour import YUVFormat
from .credentials import mask
from .encoders import encoder, quality_options
from .errors import MediaError, UsageError
from .frames import PLANAR, matrix_name
from .sources import VideoInfo

log = logging.getLogger("streamdehaze")

_AVCOL_RANGE_MPEG = 1

_MATRIX_TAG = {"bt709": 1, "bt601": 6, "bt2020": 9}


def choose_pix_fmt(codec: av.Codec, width: int, height: int) -> str:
    """yuv420p where possible (plays everywhere); yuv444p when the size is odd (4:2:0 needs even sizes)."""
    supported = [f.name for f in codec.video_formats or []]
    odd = width % 2 or height % 2
    preference = ("yuv444p", "yuv444p10le") if odd else ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le")
    for name in preference:
        if name in supported:
            return name
    fallback = [name for name in supported if name in PLANAR and PLANAR[name][0] == (1, 1)] if odd else \
        [name for name in supported if name in PLANAR]
    if not fallback:
        raise UsageError(f"codec {codec.name} takes none of the planar YUV formats streamdehaze writes"
                         + (f" at the odd size {width}x{height}" if odd else ""))
    return fallback[0]


def output_format(info: VideoInfo, pix_fmt: str) -> YUVFormat:
    """How dehazed frames are written: the input's colour matrix, limited range, ``pix_fmt``'s layout."""
    subsampling, bits, _ = PLANAR[pix_fmt]
    matrix = matrix_name(info.colour.get("colorspace", 2), info.height)
    return YUVFormat(matrix=matrix, full_range=False, bits=bits, subsampling=subsampling)


_URL_FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv", "srt": "mpegts", "udp": "mpegts",
                "tcp": "mpegts"}
_SEGMENT_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".ts": "mpegts"}
_FRAGMENTED_MP4 = "+frag_keyframe+empty_moov+default_base_moof"


def url_format(target: str) -> str | None:
    """The muxer for a network target (``rtsp://...``), or None for a file path."""
    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    return _URL_FORMATS.get(scheme)


def segment_pattern(path: Path) -> Path:
    """``out.mp4`` -> ``out_00000.mp4``-style names for segments (a name with a % pattern is kept)."""
    return path if "%" in path.name else path.with_name(f"{path.stem}_%05d{path.suffix}")


class VideoSink:
    """Writes to a file ``target`` (the caller picks a temporary name and renames it), a segment pattern, or a URL."""

    def __init__(self, target: Path | str, info: VideoInfo, *, codec: str = "libx264", crf: int | None = None,
                 preset: str | None = None, live: bool = False, segment_time: float | None = None,
                 nvenc: bool = False) -> None:
        """``nvenc``: encode libx264/libx265 output with the GPU's encoder instead, where it opens."""
        self.path = Path(target) if url_format(str(target)) is None else None
        self.target = str(target)
        self.name = mask(self.target, self.target) if self.path is None else self.path.name
        self.info, self.live = info, live
        spec = encoder(codec)
        options = quality_options(codec, crf, preset)
        if nvenc:
            pix_fmt = choose_pix_fmt(spec, info.width, info.height)
            hardware = hwaccel.encoder(codec, int(options.get("crf", 18)), options.get("preset", ""), live,
                                       info.width, info.height, pix_fmt)
            if hardware is not None:
                spec, options = encoder(hardware[0]), hardware[1]
        self.container = self._open(str(target), segment_time)
        try:
            self._add_video(spec, options)
            self._copies = self._add_copies()
        except BaseException:
            self.container.close()
            raise
        self.frames = 0

    def _open(self, target: str, segment_time: float | None) -> av.container.OutputContainer:
        fmt, options = url_format(target), {}
        if fmt == "rtsp":
            options["rtsp_transport"] = "tcp"
        elif segment_time is not None:
            suffix = Path(target).suffix.lower()
            if suffix not in _SEGMENT_FORMATS:
                raise UsageError(f"--segment-time needs an output ending in {', '.join(_SEGMENT_FORMATS)}")
            target, fmt = str(segment_pattern(Path(target))), "segment"
            options.update(segment_time=str(segment_time), segment_format=_SEGMENT_FORMATS[suffix],
                           reset_timestamps="1")
            if suffix in (".mp4", ".mov"):
                options["segment_format_options"] = f"movflags={_FRAGMENTED_MP4}"
        elif self.live and Path(target).suffix.lower() in (".mp4", ".mov"):
            options["movflags"] = _FRAGMENTED_MP4
        try:
            return av.open(target, "w", format=fmt, options=options, timeout=10.0)
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise (MediaError if fmt in _URL_FORMATS.values() else UsageError)(
                f"cannot write {self.name}: {mask(str(exc), self.target)}") from None

    def _add_video(self, codec: av.Codec, options: dict[str, str]) -> None:
        info = self.info
        stream = self.container.add_stream(codec.name, rate=info.rate)
        stream.width, stream.height = info.width, info.height
        self.pix_fmt = choose_pix_fmt(codec, info.width, info.height)
        if self.pix_fmt != "yuv420p":
            log.info("encoding %s (%dx%d)", self.pix_fmt, info.width, info.height)
        stream.pix_fmt = self.pix_fmt
        # The input's time base, so every pts is written exactly as it was read (variable rate included).
        stream.time_base = info.time_base
        ctx = stream.codec_context
        ctx.time_base = info.time_base
        options = dict(options)
        if self.live:
            # Keyframes are forced once a second of *time* (write()), not every N frames: after drops N frames
            # can span much longer, and viewers joining and segment cuts both need them on time.
            ctx.gop_size = max(1, round(2 * info.rate))
            if codec.name in ("libx264", "libx265"):
                options["tune"] = "zerolatency"
            if codec.name == "libx264":
                options["forced-idr"] = "1"
        self._next_key: Fraction | None = None
        ctx.options = options
        self.yuv_format = output_format(info, self.pix_fmt)
        ctx.colorspace = _MATRIX_TAG[self.yuv_format.matrix]
        ctx.color_range = _AVCOL_RANGE_MPEG
        if info.colour.get("color_primaries", 2) != 2:
            ctx.color_primaries = info.colour["color_primaries"]
        if info.colour.get("color_trc", 2) != 2:
            ctx.color_trc = info.colour["color_trc"]
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        self.video = stream

    def _add_copies(self) -> dict[int, av.stream.Stream]:
        copies = {}
        supported = self.container.supported_codecs
        for src in self.info.copy_streams:
            name = src.codec_context.name
            if name not in supported:
                log.warning("not copying %s stream #%d: %s cannot be stored in %s",
                            src.type, src.index, name, self.container.format.name)
                continue
            copies[src.index] = self.container.add_stream_from_template(src)
        return copies

    def write(self, item: av.VideoFrame | av.Packet) -> None:
        """Encode a dehazed frame (planar, in ``self.pix_fmt``) or copy a packet of a copied stream."""
        try:
            if isinstance(item, av.Packet):
                out = self._copies.get(item.stream.index)
                if out is not None:
                    item.stream = out
                    self.container.mux(item)
                return
            if (item.width, item.height) != (self.video.width, self.video.height):
                # A camera that came back at another resolution: keep the stream's size.
                scaled = item.reformat(width=self.video.width, height=self.video.height)
                scaled.pts, scaled.time_base = item.pts, item.time_base
                item = scaled
            if self.live and item.time_base is not None:
                t = item.pts * item.time_base
                if self._next_key is None or t >= self._next_key:
                    item.pict_type = av.video.frame.PictureType.I
                    self._next_key = t + 1
            for packet in self.video.encode(item):
                self.container.mux(packet)
            self.frames += 1
        except av.FFmpegError as exc:
            raise MediaError(f"writing {self.name} failed: {mask(str(exc), self.target)}") from None

    def close(self) -> None:
        """Flush the encoder and write the trailer: after this the file is complete and playable."""
        try:
            for packet in self.video.encode(None):
                self.container.mux(packet)
        except av.FFmpegError as exc:
            raise MediaError(f"finishing {self.name} failed: {mask(str(exc), self.target)}") from None
        finally:
            self.container.close()

    def abort(self) -> None:
        """Release the file without finishing it (the caller deletes it)."""
        try:
            self.container.close()
        except av.FFmpegError:
            pass


class CallbackSink:
    """Hands every dehazed frame to ``on_frame(image, seconds)`` (numpy ``[H,W,3]`` uint8, BGR unless ``bgr`` is
    False), then to ``inner`` if given. Runs in the writer thread, so a slow callback applies backpressure."""

    def __init__(self, info: VideoInfo, on_frame, inner: VideoSink | None = None, bgr: bool = True) -> None:
        self.on_frame, self.inner, self.bgr = on_frame, inner, bgr
        if inner is not None:
            self.pix_fmt, self.yuv_format = inner.pix_fmt, inner.yuv_format
        else:
            self.pix_fmt = "yuv444p" if info.width % 2 or info.height % 2 else "yuv420p"
            self.yuv_format = output_format(info, self.pix_fmt)

    def write(self, item: av.VideoFrame | av.Packet) -> None:
        if isinstance(item, av.VideoFrame) and self.on_frame is not None:
            colorspace = "ITU709" if self.yuv_format.matrix == "bt709" else "ITU601"
            image = item.to_ndarray(format="bgr24" if self.bgr else "rgb24", src_colorspace=colorspace)
            self.on_frame(image, float(item.pts * item.time_base) if item.time_base else None)
        if self.inner is not None:
            self.inner.write(item)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

    def abort(self) -> None:
        if self.inner is not None:
            self.inner.abort()

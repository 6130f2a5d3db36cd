"""Video file sink: encode dehazed frames with the input's timestamps and copy audio/subtitle packets as they are."""

from __future__ import annotations

import logging
from pathlib import Path

import av

from .colour import YUVFormat
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


def encoder(name: str) -> av.Codec:
    try:
        codec = av.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        raise UsageError(f"unknown video encoder {name!r} (try libx264, libx265, libvpx-vp9, mpeg4)") from None
    if codec.type != "video":
        raise UsageError(f"{name!r} is not a video encoder")
    return codec


class VideoFileSink:
    """Writes to ``path`` (the caller chooses a temporary name and renames it)."""

    def __init__(self, path: Path, info: VideoInfo, *, codec: str = "libx264", crf: int = 18,
                 preset: str = "veryfast", container_format: str | None = None) -> None:
        self.path = path
        self.info = info
        spec = encoder(codec)
        try:
            self.container = av.open(str(path), "w", format=container_format)
        except (av.FFmpegError, ValueError) as exc:
            raise UsageError(f"cannot write {path.name}: {exc}") from None
        try:
            self._add_video(spec, crf, preset)
            self._copies = self._add_copies()
        except BaseException:
            self.container.close()
            raise
        self.frames = 0

    def _add_video(self, codec: av.Codec, crf: int, preset: str) -> None:
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
        options = {}
        if codec.name in ("libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1"):
            options["crf"] = str(crf)
        if codec.name in ("libx264", "libx265", "libsvtav1"):
            options["preset"] = preset
        ctx.options = options
        subsampling, bits, _ = PLANAR[self.pix_fmt]
        matrix = matrix_name(info.colour.get("colorspace", 2), info.height)
        self.yuv_format = YUVFormat(matrix=matrix, full_range=False, bits=bits, subsampling=subsampling)
        ctx.colorspace = _MATRIX_TAG[matrix]
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
                            src.type, src.index, name, self.path.suffix or self.container.format.name)
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
            for packet in self.video.encode(item):
                self.container.mux(packet)
            self.frames += 1
        except av.FFmpegError as exc:
            raise MediaError(f"writing {self.path.name} failed: {exc}") from None

    def close(self) -> None:
        """Flush the encoder and write the trailer: after this the file is complete and playable."""
        try:
            for packet in self.video.encode(None):
                self.container.mux(packet)
        except av.FFmpegError as exc:
            raise MediaError(f"finishing {self.path.name} failed: {exc}") from None
        finally:
            self.container.close()

    def abort(self) -> None:
        """Release the file without finishing it (the caller deletes it)."""
        try:
            self.container.close()
        except av.FFmpegError:
            pass

"""Video sink: encode dehazed frames with the input's timestamps and copy audio/subtitle packets as they are.

Targets: a file (optionally split into segments) or a network URL to publish to (RTSP, RTMP, SRT/UDP MPEG-TS).
Live runs encode with ``tune=zerolatency`` and a keyframe every second, and write files as they go: fragmented
MP4/MOV (a fragment at least every second), Matroska (a cluster a second) or MPEG-TS, each fragment handed to the
kernel as soon as it is complete and ``fsync``-ed about once a second. A recording cut short by a kill, a crash or
a power cut plays up to about its last second.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from .colour import rgb_to_yuv
from .credentials import mask
from .encoders import Encoding, choose_encoding, output_format
from .errors import MediaError, StreamDehazeError, UsageError
from .formats import (
    DIAL_TIMEOUT,
    FRAGMENTED,
    HOLDS_ROTATION,
    NO_REORDERING,
    PIXEL_ASPECT_CODECS,
    STATES_PIXEL_ASPECT,
    STDOUT,
    frame_ticks,
    holds_copy,
    output_options,
    segment_at,
    timed_segments,
    url_format,
)
from .fragments import trim_cut_fragment, video_samples
from .frames import frame_from_planes, to_image, upright
from .outputs import FolderWatch, RecordingDeleted, Syncer, WholeWrites, hold, next_segment
from .records import FrameRecord
from .scheduling import realtime_undone
from .sound import UNORDERED, CopiedSound, Reencoded, reencoded
from .sources import VideoInfo, packet_start, stream_tags

log = logging.getLogger("streamdehaze")

_AVCOL_RANGE_MPEG, _AVCOL_RANGE_JPEG = 1, 2

_MATRIX_TAG = {"bt709": 1, "bt601": 6, "bt2020": 9}
_TOP_FIRST, _BOTTOM_FIRST = {2, 5}, {3, 4}  # AVFieldOrder, as shown: TT and BT; BB and TB


# Seconds a server published to may take to accept a frame before it is taken for lost and dialled again
# (``publish.py``): FFmpeg would wait for a hung one for ever, through every signal.
WRITE_TIMEOUT = 10.0


# Muxers whose sound states its format in every packet (MPEG-TS: AAC as ADTS, MP2, AC-3), so that a copy follows
# a change of it mid-stream; the others state it once, in their header (``CopiedSound``).
_STATES_SOUND_IN_PACKETS = {"mpegts", "hls"}


def _tag_like(stream: av.stream.Stream, src: av.stream.Stream) -> None:
    """Give an output stream what its input stream says of itself: its language above all, which track plays by
    default, forced subtitles."""
    stream.metadata.update(stream_tags(src))
    stream.disposition = src.disposition


def add_video_stream(container: av.container.OutputContainer, info: VideoInfo, encoding: Encoding,
                     live: bool = False) -> av.video.stream.VideoStream:
    """The output's video stream as a sink encodes it (``VideoSink``, and the trial write in ``trial.py``, which
    must not drift from it): the input's size, time base (or ``frame_ticks``), tags and colour, the encoder's
    options; a live run's keyframes."""
    codec = encoding.codec
    stream = container.add_stream(codec.name, rate=info.rate)
    stream.width, stream.height, stream.pix_fmt = info.width, info.height, encoding.pix_fmt
    stream.time_base = frame_ticks(codec.name, container.format.name, info) or info.time_base
    stream.metadata.update(info.video_tags)  # a timecode becomes the output's own timecode track
    stream.disposition = info.video_disposition
    ctx = stream.codec_context
    ctx.time_base = stream.time_base
    options = dict(encoding.options)
    if live:
        # Keyframes are forced once a second of *time* (write()), not every N frames: after drops N frames
        # can span much longer, and viewers joining and segment cuts both need them on time.
        ctx.gop_size = max(1, round(2 * info.rate))
        if codec.name in ("libx264", "libx265"):
            options["tune"] = "zerolatency"
        if codec.name == "libx264":
            options["forced-idr"] = "1"
    elif container.format.name == "hls" and info.rate:  # (segments begin at keyframes: of 6 s, not the x264's 10)
        ctx.gop_size = max(1, round(2 * info.rate))
    if container.format.name in NO_REORDERING:  # (every frame encoded in the order it is shown: its time kept)
        options["bf"] = "0"
    if info.field_order in _TOP_FIRST | _BOTTOM_FIRST and codec.name == "libx264":  # so that players deinterlace
        options["x264-params"] = f"interlaced=1:{'tff' if info.field_order in _TOP_FIRST else 'bff'}=1"
    ctx.options = options
    ctx.colorspace = _MATRIX_TAG[encoding.yuv_format.matrix]
    ctx.color_range = _AVCOL_RANGE_JPEG if encoding.yuv_format.full_range else _AVCOL_RANGE_MPEG
    if info.colour.get("color_primaries", 2) != 2:
        ctx.color_primaries = info.colour["color_primaries"]
    if info.colour.get("color_trc", 2) != 2:
        ctx.color_trc = info.colour["color_trc"]
    if info.rotation:
        stream.set_display_rotation(info.rotation)
    if info.pixel_aspect:  # (else an anamorphic picture is shown squeezed)
        ctx.sample_aspect_ratio = info.pixel_aspect
    if codec.canonical_name == "hevc" and container.format.name in ("mp4", "mov"):
        # Apple's players (QuickTime, Photos, iOS) play HEVC only as hvc1, FFmpeg's -tag:v hvc1: its parameter sets
        # in the header alone; FFmpeg writes hev1 unless told.
        ctx.codec_tag = "hvc1"
    return stream


class OutputExists(UsageError):
    """A file to be written as it goes (``VideoSink(exclusive=True)``) is there already: it is never replaced."""


class VideoSink:
    """Writes to a file or a URL. A file run writes to a temporary file (``outputs.py``) and names its ``target`` in
    ``shown_as``; a live run writes to the target itself, as it goes, holding it under a lock (``outputs.hold``)."""

    def __init__(self, target: Path | str, info: VideoInfo, encoding: Encoding | None = None, *, live: bool = False,
                 shown_as: Path | None = None, start: Fraction = Fraction(0), exclusive: bool = False,
                 as_it_goes: bool = False) -> None:
        """``encoding``: libx264 at its defaults when None. ``shown_as``: the user's name for a temporary ``target``,
        for messages and the container format. ``start``: the time (seconds) written as 0, a segment's start.
        ``exclusive``: the file is created, never truncated: ``OutputExists`` where one is there already.
        ``as_it_goes``: a file written as a live run's is (a file run's segment), kept as far as it got."""
        self.target = str(target)
        self.start, self.exclusive = start, exclusive
        self.path = Path(target) if url_format(self.target) is None else None
        self.shown_as = shown_as or self.path
        self.name = mask(self.target, self.target) if self.path is None else str(self.shown_as)
        self.info, self.live = info, live
        self.as_it_goes = live or as_it_goes  # (a live run's file too: a recording)
        encoding = encoding or choose_encoding(info, live=live)
        self._file: WholeWrites | None = None  # a file's writer (``outputs.WholeWrites``: no write error is lost)
        self._pieces: list[_Piece] = []  # an HLS playlist's files being written (``_open_piece``)
        self._inode: tuple[int, int] | None = None  # that file's (device, inode): what ``path`` named when opened
        self.container = self._open(self.target)
        self._fragmented = self.container.format.name in FRAGMENTED  # (a recording written as fragments)
        self.container.metadata.update(info.tags)  # when and where it was recorded, as FFmpeg's tools keep it
        if info.chapters:
            self.container.set_chapters(info.chapters)
        # Once a second: a recording's file synced (and still named), a file run's folder still there.
        self._sync: Syncer | FolderWatch | None = None
        if self._file is not None:
            self._sync = Syncer(self._file, self.path) if self.as_it_goes else FolderWatch(self.shown_as)
        try:
            self._add_video(encoding)
            self._copies = self._add_copies()
        except BaseException:
            self.container.close()
            self._close_file()
            raise
        self.frames = 0
        self._resized: tuple[int, int] | None = None  # the other size the input went on at, once told
        self._muxed = False  # a packet went through: the header is written
        self._headless = False  # writing the header failed: FFmpeg must not be asked to write anything more

    def connect(self) -> None:
        """Write the header now rather than with the first frame: for RTSP, dial the server and announce the stream
        (``av.open`` alone dials RTMP and SRT). A protocol this FFmpeg lacks, or an address it cannot take, is a
        ``UsageError``: no retry mends it."""
        began = time.monotonic()
        try:
            self._open_encoder()
            self.container.start_encoding()
        except (av.FFmpegError, OSError) as exc:
            self._headless = True
            if time.monotonic() - began >= 0.9 * DIAL_TIMEOUT:
                raise MediaError(f"cannot write {self.name}: no answer for {DIAL_TIMEOUT:g} s") from None
            reason = failure_reason(exc, self.target)
            raise _url_error(exc)(f"cannot write {self.name}: {reason}") from None

    def _open(self, target: str) -> av.container.OutputContainer:
        fmt, options = output_options(target, self.shown_as, self.live, tags=self.info.tags,
                                      as_it_goes=self.as_it_goes)
        try:
            if self.path is not None and fmt != "hls":  # (the HLS muxer writes its playlist and segments itself)
                self._file = WholeWrites(target, "xb" if self.exclusive else "wb")
                written = os.fstat(self._file.fileno())
                self._inode = written.st_dev, written.st_ino
                if self.live:  # (marked as being recorded; on a filesystem without locks it goes on unmarked)
                    with contextlib.suppress(OSError):
                        hold(self._file.fileno())
            where = self._file or ("pipe:1" if target == STDOUT else target)
            pieces = {"io_open": self._open_piece} if self.path is not None and fmt == "hls" else {}
            return av.open(where, "w", format=fmt, options=options, timeout=10.0, **pieces)
        except FileExistsError:
            raise OutputExists(f"cannot write {self.name}: a file of that name is there already") from None
        except (av.FFmpegError, ValueError, OSError) as exc:
            if isinstance(exc, FileNotFoundError) and self.as_it_goes and self.path is not None and self.start:
                # (a recording's next segment, a file run's too: its folder, checked at the start, is gone)
                raise RecordingDeleted(f"{self.path.parent} was deleted while a recording into it ran: the "
                                       "segments written to it are gone") from None
            self._close_file()
            raise (_url_error(exc) if self.path is None else UsageError)(
                f"cannot write {self.name}: {failure_reason(exc, target)}") from None

    def _open_piece(self, url: str, flags: int, options: dict[str, str]) -> _Piece:
        """The HLS muxer's own files (each segment, and the playlist, under a temporary name it then renames), written
        through Python as any other file is: FFmpeg writing them by name reported no error, and a full disk left
        empty segments in the playlist. Never through a link planted at their (predictable) names."""
        piece = _Piece(url, "wb", opener=_no_follow)
        self._pieces.append(piece)
        return piece

    def _check_pieces(self) -> None:
        """Raise the first write error of an HLS piece (the muxer may take it for a short write, or meet it while
        closing the piece, where PyAV drops it); let go of those closed whole."""
        if not self._pieces:  # (every output but HLS: this runs with every packet)
            return
        for piece in self._pieces:
            piece.check()
        self._pieces = [piece for piece in self._pieces if not piece.closed]

    def _add_video(self, encoding: Encoding) -> None:
        info, codec, muxer = self.info, encoding.codec, self.container.format.name
        self.pix_fmt, self.yuv_format = encoding.pix_fmt, encoding.yuv_format
        if self.pix_fmt != "yuv420p":
            log.info("encoding %s (%dx%d)", self.pix_fmt, info.width, info.height)
        if info.field_order in _TOP_FIRST | _BOTTOM_FIRST and codec.name != "libx264":
            log.warning("%s: the input is interlaced; %s encodes it as progressive", self.name, codec.name)
        if info.rotation and muxer not in HOLDS_ROTATION:
            log.warning("%s (%s) has no rotation tag: the picture is written as stored, turned %d degrees from "
                        "upright (.mp4, .mov or .mkv keep the tag)", self.name, muxer, info.rotation % 360)
        if info.pixel_aspect and muxer not in STATES_PIXEL_ASPECT and codec.canonical_name not in PIXEL_ASPECT_CODECS:
            wanted, stored = info.width * info.pixel_aspect / info.height, Fraction(info.width, info.height)
            log.warning("%s (%s in %s) cannot state the input's pixel shape (%s): players will show it at %s, not %s "
                        "(an .mp4 output, or H.264 in .mkv, keeps it)", self.name, codec.canonical_name, muxer,
                        *(f"{r.numerator}:{r.denominator}" for r in (info.pixel_aspect, stored, wanted)))
        self.video = add_video_stream(self.container, info, encoding, self.live)
        self._frame_ticks = frame_ticks(codec.name, muxer, info)
        self._last_tick: int | None = None
        self._next_key: Fraction | None = None

    def _add_copies(self) -> dict[int, av.stream.Stream | Reencoded | CopiedSound]:
        copies = {}
        muxer = self.container.format.name
        where = self._format_name()
        for src in self.info.copy_streams:
            fits = holds_copy(muxer, src)
            name = src.codec_context.codec.canonical_name if src.codec_context is not None else src.name
            if not fits and src.type == "audio" and (again := reencoded(self.container, src)) is not None:
                copies[src.index] = again
                log.warning("%s cannot be stored in %s: audio stream #%d encoded again as %s%s", name, where,
                            src.index, again.stream.codec_context.name,
                            ", downmixed to stereo" if again.downmixed else "")
                _tag_like(again.stream, src)
                continue
            if not fits:
                log.warning("not copying %s stream #%d: %s cannot be stored in %s", src.type, src.index, name, where)
                continue
            copies[src.index] = copy = self.container.add_stream_from_template(src)
            if src.type == "audio" and UNORDERED.fullmatch(src.layout.name):
                # Channels in no stated order (PCM from AVI, Matroska): MP4 refuses them only when the file is
                # closed, after all the work. As FFmpeg's own tools do, take the usual layout for that count.
                with contextlib.suppress(ValueError):
                    copy.codec_context.layout = av.AudioLayout(f"{src.layout.nb_channels}c")
            _tag_like(copy, src)
            if src.type == "audio" and muxer not in _STATES_SOUND_IN_PACKETS:
                with contextlib.suppress(av.FFmpegError, ValueError):  # (no decoder for it: copied unwatched)
                    copies[src.index] = CopiedSound(self.container, src, copy, where)
        return copies

    def _format_name(self) -> str:
        """The output's format as the user named it: a file's extension where FFmpeg's muxer is called otherwise
        (.vob, not svcd; .mkv, not matroska), else the muxer."""
        muxer = self.container.format.name
        suffix = self.shown_as.suffix.lower() if self.shown_as is not None else ""
        return suffix if suffix and suffix[1:] != muxer else muxer

    @property
    def sound(self) -> set[int]:
        """The input's sound streams (their indexes) this output carries."""
        return {src.index for src in self.info.copy_streams if src.type == "audio" and src.index in self._copies}

    def write(self, item: av.VideoFrame | av.Packet) -> None:
        """Encode a dehazed frame (planar, in ``self.pix_fmt``) or copy a packet of a copied stream."""
        try:
            self._open_encoder()
            if isinstance(item, av.Packet):
                out = self._copies.get(item.stream.index)
                if out is None or not self._from_start(item):
                    return
                if isinstance(out, (Reencoded, CopiedSound)):
                    for packet in out.packets(item):
                        self._mux(packet)
                else:
                    item.stream = out
                    self._mux(item)
                return
            if self.start:
                item.pts -= round(self.start / item.time_base)
            if (item.width, item.height) != (self.video.width, self.video.height):
                # A camera that came back at another resolution: keep the stream's size.
                if (item.width, item.height) != self._resized:
                    self._resized = item.width, item.height
                    log.warning("%s: the input went on at %dx%d: scaled to the output's %dx%d", self.name, item.width,
                                item.height, self.video.width, self.video.height)
                scaled = item.reformat(width=self.video.width, height=self.video.height)
                scaled.pts, scaled.time_base = item.pts, item.time_base
                item = scaled
            if self._frame_ticks is not None:  # (a variable rate's frames on the nearest free tick)
                tick = round(item.pts * item.time_base / self._frame_ticks)
                self._last_tick = tick = tick if self._last_tick is None else max(tick, self._last_tick + 1)
                item.pts, item.time_base = tick, self._frame_ticks
            # Some encoders (ProRes) write the frame's colour tags, not the stream's: the same on both.
            ctx = self.video.codec_context
            item.colorspace, item.color_range = ctx.colorspace, ctx.color_range
            item.color_primaries, item.color_trc = ctx.color_primaries, ctx.color_trc
            if self.live and item.time_base is not None:
                t = item.pts * item.time_base
                if self._next_key is None or t >= self._next_key:
                    item.pict_type = av.video.frame.PictureType.I
                    self._next_key = t + 1
            for packet in self.video.encode(item):
                if self.live and packet.is_keyframe and packet.pts is not None and packet.time_base is not None:
                    # one of the encoder's own (a scene cut) puts off the next forced one: they came in pairs
                    self._next_key = max(self._next_key or 0, packet.pts * packet.time_base + 1)
                self._mux(packet)
            self.frames += 1
            if self._sync is not None:
                self._sync()
        except (av.FFmpegError, OSError) as exc:
            reason = failure_reason(exc, self.target)
            raise MediaError(f"writing {self.name} failed: {reason}") from None

    def _mux(self, packet: av.Packet) -> None:
        """FFmpeg writes the header with the first packet; where that fails (a full disk), it may not be asked to
        write again: the MOV muxer writing its header a second time, or a trailer after it, crashes the process."""
        try:
            self.container.mux(packet)
            self._check_pieces()
        except BaseException:
            self._headless = self._headless or not self._muxed
            raise
        self._muxed = True

    def _open_encoder(self) -> None:
        """Open the encoder where PyAV would (with the first frame, the header or the flush, in the thread that
        encodes), putting back the threads SVT-AV1 makes real-time (``scheduling.py``)."""
        if not self.video.codec_context.is_open:
            with realtime_undone():
                self.video.codec_context.open()

    def _from_start(self, packet: av.Packet) -> bool:
        """Shift a copied packet to ``start``; False for one from before it (a segment's audio that came late)."""
        if not self.start or packet.time_base is None:
            return True
        shift = round(self.start / packet.time_base)
        if packet.dts is not None and packet.dts < shift or packet.pts is not None and packet.pts < shift:
            return False
        packet.pts = None if packet.pts is None else packet.pts - shift
        packet.dts = None if packet.dts is None else packet.dts - shift
        return True

    def close(self) -> None:
        """Flush the encoder and write the trailer: after this the file is complete and playable."""
        try:
            try:
                self._open_encoder()
                for packet in self.video.encode(None):
                    self._mux(packet)
                for out in self._copies.values():
                    if isinstance(out, (Reencoded, CopiedSound)):
                        for packet in out.packets(None):
                            self._mux(packet)
            finally:
                try:
                    self.container.close()  # (the trailer: a muxer may refuse it, a disk may fill up)
                    if self._file is not None:
                        self._file.check()
                    self._check_pieces()
                finally:
                    self._release()
        except (av.FFmpegError, OSError) as exc:
            self._mend()
            reason = failure_reason(exc, self.target)
            raise MediaError(f"finishing {self.name} failed: {reason}") from None

    def _release(self) -> None:
        """Let go of the encoders: PyAV frees a codec (and its threads) only with the last reference to it, not when
        its file is closed, and a recording's segments come and go for weeks."""
        self._close_file()
        for piece in self._pieces:
            piece.close()
        self.container, self.video, self._copies, self._sync, self._pieces = None, None, {}, None, []

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def abort(self) -> None:
        """After a failure: finish the file as far as it still can be (a recording stays playable up to its last
        frame; a file run then discards its temporary file). Never raises."""
        if self.video is None:  # closed already
            return
        try:
            for packet in [] if self._headless or not self.video.codec_context.is_open else self.video.encode(None):
                self._mux(packet)
        except (av.FFmpegError, OSError, ValueError):
            pass
        try:
            self.container.close()
        except (av.FFmpegError, OSError):
            pass
        self._release()
        self._mend()

    def _mend(self) -> None:
        """After a failure, a recording holds what fit: a fragmented MP4/MOV whose last fragment a full disk cut
        ends after its last whole frame (``fragments.py``: it ended in "Invalid data"), and ``frames`` counts the
        frames it holds, not those encoded (frames in the encoder, or in a Matroska cluster the disk refused, are
        not in it); a recording that holds none goes."""
        if not self.as_it_goes or self.path is None or not self._names_its_file():
            return
        with contextlib.suppress(OSError, ValueError, struct.error):
            if self._fragmented:
                trim_cut_fragment(self.path)
                self.frames = video_samples(self.path)
            else:
                self.frames = _video_packets(self.path)
            if self.frames == 0:
                self.path.unlink()

    def _names_its_file(self) -> bool:
        """Whether ``path`` still names the file written (another program may have put a file of its own there,
        which is not this run's to mend or remove)."""
        try:
            found = os.stat(self.path)
        except OSError:
            return False
        return (found.st_dev, found.st_ino) == self._inode


class _Piece(WholeWrites):
    """A file the HLS muxer writes through ``io_open``. Its write error is kept for ``check()``, which the sink calls
    after every packet, and FFmpeg is told the write went through: raised through PyAV, or given as an error code
    (which PyAV 18.1.1 turns into an exception of its own), a second one (the muxer closing the piece) is printed as
    "PyAV library exception being dropped", with its traceback."""

    def write(self, data: bytes | memoryview) -> int:
        try:
            return super().write(data)
        except OSError:
            return memoryview(data).nbytes


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW, 0o666)


def _video_packets(path: Path) -> int:
    """The video frames a file holds, as its demuxer reads them: up to where a full disk cut it."""
    count = 0
    try:
        with av.open(str(path)) as container:
            if container.streams.video:
                for packet in container.demux(video=0):
                    count += packet.size > 0
    except av.FFmpegError:  # (cut short, or nothing readable at all: what came before is counted)
        pass
    return count


# Seconds of pictures past a segment's end that it stays open for sound stored after them: an MP4's reader takes
# sound up to a second behind the pictures (FFmpeg reads its samples in file order within a second).
SOUND_WAIT = Fraction(2)


class SegmentedSink:
    """A recording cut into files of ``segment_time`` seconds (``cam_00000.mp4``, ...; ``pattern``), numbered from
    ``first``, or named by the time each begins (``cam_%Y-%m-%d_%H-%M-%S.mp4``: ``formats.timed_segments``). Each
    file has a muxer and an encoder of its own: a segment begins with the first frame at or past its time, as a
    keyframe, with that time written as 0. Sound mostly reaches the sink ahead of the pictures of its time (they
    are being dehazed): what belongs to the next segment waits for it. A file may store its sound up to a second
    after its picture, though: a segment whose sound is not all in when the next begins stays open for it, until
    each of its sound streams has passed its end, or the pictures are ``SOUND_WAIT`` seconds past it; then it is
    complete, closed.
    (FFmpeg's segment muxer crashed the whole process when a disk filled up just as a segment began.)

    A segment never replaces a file: where its name is taken (another run recording to the same names), it takes
    the number after the highest there (a timed one: ``NAME.1.EXT``, ...), and a warning says so the first time."""

    def __init__(self, pattern: Path, segment_time: float, first: int,
                 part: Callable[[Path, Fraction], VideoSink], clock: Callable[[Fraction], float] | None = None,
                 origin: Fraction = Fraction(0)) -> None:
        """``part(path, start)``: a ``VideoSink`` writing ``path`` with ``start`` written as 0, created exclusively
        (``OutputExists`` where a file is there). ``clock``: the Unix time of a time after ``origin``, for timed
        names. ``origin``: where the input's clock starts (a transport stream's anywhere: an NVR's at 10:00:00),
        written as 0 in the first segment as each later one's start is in it."""
        self.pattern, self.segment_time, self.number = pattern, Fraction(segment_time), first
        self._part, self._clock, self._origin = part, clock, origin
        self._timed = timed_segments(pattern)
        self._numbers: list[int] = []  # the numbered segments this sink created, in order
        self._paths: list[Path] = []  # every segment it created, in order
        self._told = False  # that a name was taken
        self.current: VideoSink | None = self._open_part(origin)
        self.pix_fmt, self.yuv_format = self.current.pix_fmt, self.current.yuv_format
        self._done = 0  # frames in the segments closed so far
        self._next: Fraction | None = None  # when the next segment begins
        self._held: list[av.Packet] = []  # copied packets of the next segment, come before its first frame
        self._ending: list[_Ending] = []  # segments before, open for their sound that comes after their picture

    def _path(self, number: int) -> Path:
        return self.pattern.with_name(self.pattern.name % number)

    def _open_part(self, start: Fraction) -> VideoSink:
        """The segment numbered ``self.number`` (or after the highest there where that name is taken), or named by
        its time. One that cannot be created once others were written is a ``MediaError``: the run failed, not its
        command line."""
        chosen = path = segment_at(self.pattern, self._clock(start - self._origin)) if self._timed else \
            self._path(self.number)
        again = 0
        while True:
            try:
                part = self._part(path, start)
            except OutputExists:
                taken = path
                if self._timed:  # (NAME.1.EXT, NAME.2.EXT, ...)
                    again += 1
                    path = chosen.with_name(f"{chosen.stem}.{again}{chosen.suffix}")
                else:
                    self.number = max(self.number + 1, next_segment(self.pattern))
                    path = self._path(self.number)
                if not self._told:  # (numbered ones begin after the highest there: another run took it meanwhile)
                    self._told = True
                    log.warning("%s is there already%s: not replaced; this recording goes on at %s", taken.name,
                                "" if self._timed else " (another recording to the same names?)", path.name)
                continue
            except UsageError as exc:
                if not self._paths:
                    raise
                raise MediaError(str(exc)) from None
            if not self._timed:
                self._numbers.append(self.number)
            self._paths.append(path)
            return part

    @property
    def frames(self) -> int:
        return self._done + sum(e.sink.frames for e in self._ending) + (self.current.frames if self.current else 0)

    def written(self) -> str:
        """The segments written: ``cam_00000.mp4 .. cam_00003.mp4``, or the one; where other files came between
        them (another run's segments), how many are this run's."""
        if self._timed:
            paths = self._paths
            if paths and self.current is not None and not self.current.path.exists():
                paths = paths[:-1]
            if len(paths) <= 1:
                return str(paths[0] if paths else self.pattern)
            return f"{paths[0]} .. {paths[-1].name}"
        numbers = self._numbers
        if numbers and self.current is not None and not self.current.path.exists():  # (deleted, or nothing fit)
            numbers = numbers[:-1]
        if not numbers:
            return str(self._path(self.number))
        first, last = self._path(numbers[0]), self._path(numbers[-1])
        if len(numbers) == 1:
            return str(first)
        if numbers[-1] - numbers[0] + 1 == len(numbers):
            return f"{first} .. {last.name}"
        return f"{first} .. {last.name} ({len(numbers)} of them: the others between are not this run's)"

    def write(self, item: av.VideoFrame | av.Packet) -> None:
        if isinstance(item, av.Packet):
            start = packet_start(item)
            if self._ending and start is not None:
                late = None  # the ending segment whose time it is of
                for ending in self._ending:  # (oldest first)
                    if start < ending.end:
                        late = ending
                        break
                    ending.awaited.discard(item.stream.index)
                self._end(lambda e: not e.awaited)
                if late is not None:
                    late.sink.write(item)
                    return
            if self._next is not None and start is not None and start >= self._next:
                self._held.append(item)
            else:
                self.current.write(item)
            return
        if item.time_base is not None:
            t = item.pts * item.time_base
            self._end(lambda e: t >= e.end + SOUND_WAIT)
            if self._next is None:
                self._next = t + self.segment_time
            elif t >= self._next:
                self._cut(t)
        self.current.write(item)

    def _cut(self, t: Fraction) -> None:
        """End the segment at ``t``, where the next one begins."""
        held, self._held = self._held, []
        for packet in held:  # (the next segment begins with this frame: what came before it ends this one)
            if packet_start(packet) < t:
                self.current.write(packet)
        finished, self.current = self.current, None
        self._ending.append(_Ending(finished, t, finished.sound - {p.stream.index for p in held
                                                                   if packet_start(p) >= t}))
        self._end(lambda e: not e.awaited)  # (all in: the usual case, the sound ahead of the pictures)
        self.number += 1
        self.current = self._open_part(t)
        self.current._resized = finished._resized  # (a camera back at another size was said once)
        while self._next <= t:
            self._next += self.segment_time
        for packet in held:
            if packet_start(packet) >= t:
                self.write(packet)

    def _end(self, done: Callable[[_Ending], bool]) -> None:
        """Close the ending segments ``done`` says are complete. Closed even where that fails (it still holds its
        frames, as far as they fit), so never aborted after."""
        for ending in [e for e in self._ending if done(e)]:
            self._ending.remove(ending)
            try:
                ending.sink.close()
            finally:
                self._done += ending.sink.frames

    def close(self) -> None:
        try:
            self._end(lambda e: True)
        finally:
            if self.current is not None:
                held, self._held = self._held, []
                for packet in held:  # (the sound after the last frame)
                    self.current.write(packet)
                self.current.close()

    def abort(self) -> None:
        for ending in self._ending:
            ending.sink.abort()
            self._done += ending.sink.frames
        self._ending = []
        if self.current is not None:
            self.current.abort()


@dataclass
class _Ending:
    """A segment whose successor has begun, still taking its sound: up to ``end`` (seconds), of the streams
    ``awaited`` (indexes: those not yet past it)."""

    sink: VideoSink
    end: Fraction
    awaited: set[int]


def _url_error(exc: BaseException) -> type[StreamDehazeError]:
    """What a failure to open a URL is: a ``UsageError`` where no retry can mend it (a protocol this FFmpeg lacks,
    an address it cannot take), else a ``MediaError``."""
    permanent = isinstance(exc, (av.ProtocolNotFoundError, ValueError)) or getattr(exc, "errno", None) == errno.EINVAL
    return UsageError if permanent else MediaError


def failure_reason(exc: BaseException, target: object) -> str:
    """FFmpeg's reason without the file name it appends (a temporary name, or a URL with credentials)."""
    return getattr(exc, "strerror", None) or mask(str(exc), target)


class CallbackSink:
    """Hands every dehazed frame to ``on_frame(record)`` (a ``records.FrameRecord``), then to ``inner`` if given.
    A callback that returns an image (``[H,W,3]`` uint8, the record's layout and size) has that image written
    instead of the dehazed frame: overlays, masks. Records are upright (a video's rotation tag applied), and a
    returned image is turned back, since the output keeps the tag. Runs in the writer thread, so a slow callback
    applies backpressure."""

    wants_originals = True  # the pipeline attaches each frame's source frame (``frame.opaque``) for the record

    def __init__(self, info: VideoInfo, on_frame, inner: VideoSink | None = None, bgr: bool = True,
                 name: str = "") -> None:
        self.on_frame, self.inner, self.bgr, self.name = on_frame, inner, bgr, name
        self.frames, self.rotation = 0, info.rotation
        if inner is not None:
            self.pix_fmt, self.yuv_format = inner.pix_fmt, inner.yuv_format
        else:
            self.pix_fmt = "yuv444p" if info.width % 2 or info.height % 2 else "yuv420p"
            self.yuv_format = output_format(info, self.pix_fmt)

    def write(self, item: av.VideoFrame | av.Packet) -> None:
        if isinstance(item, av.VideoFrame):
            source, item.opaque = item.opaque, None  # the encoder has no use for it
            record = FrameRecord(
                upright(to_image(item, self.bgr, self.yuv_format.matrix), self.rotation),
                float(item.pts * item.time_base) if item.time_base else None, self.frames, self.name, self.bgr,
                source if isinstance(source, av.VideoFrame) else None)
            replaced = self.on_frame(record)
            if replaced is not None:
                item = self._frame(replaced, item)
            self.frames += 1
        if self.inner is not None:
            self.inner.write(item)

    def _frame(self, image: object, like: av.VideoFrame) -> av.VideoFrame:
        sideways = round(self.rotation / 90) % 2  # a quarter turn swaps the record's width and height
        shape = (like.width, like.height, 3) if sideways else (like.height, like.width, 3)
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != shape:
            raise UsageError(f"on_frame returned {_describe(image)}; return None, or an image of the record's shape "
                             f"{shape} and dtype uint8")
        image = upright(image, -self.rotation)  # back to the coded layout the output's rotation tag describes
        # Our own conversion, the engine's: swscale's RGB to YUV is a level off here and there.
        rgb = torch.from_numpy(np.ascontiguousarray(image[..., ::-1] if self.bgr else image)).permute(2, 0, 1)
        planes = rgb_to_yuv(rgb[None].float() / 255, self.yuv_format)
        frame = frame_from_planes(*(p[0].numpy() for p in planes), self.pix_fmt)
        frame.pts, frame.time_base = like.pts, like.time_base
        return frame

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

    def abort(self) -> None:
        if self.inner is not None:
            self.inner.abort()


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__}"

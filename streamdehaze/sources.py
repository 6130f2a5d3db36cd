"""Video sources: open a file (or anything FFmpeg can open, standard input as ``-``) and yield decoded frames in
order, plus the packets of the audio and subtitle streams that the sink copies untouched.

Opening decodes the first frame, so an input that cannot be decoded fails before any output exists, and the
stream facts that only frames carry (rotation, colour tags) are known when the sink is created.

Damage is handled as FFmpeg's own tools handle it: a corrupt packet (flagged by the demuxer or refused by the
decoder) is skipped and counted, and every frame that decodes is kept; ``strict`` makes the first one an error
(and has the decoder report damage it would otherwise conceal). An input that ends early (a short read, a read
error, fewer packets than its index lists) ends the frames there and sets ``truncated``.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import av

from . import fragments, hwaccel
from .credentials import mask
from .errors import MediaError, UsageError
from .frames import chroma_subsampling, sample_bits, to_planar
from .hdr import HDR10, hdr10_of
from .relay import PipeRelay, is_pipe

Item = av.VideoFrame | av.Packet
log = logging.getLogger("streamdehaze")
# A stream that appears mid-file (a PID a damaged or spliced MPEG-TS never announced) is unknown to PyAV's list of
# streams, and its demux fails with IndexError at the very end, when it flushes every stream FFmpeg now knows: after
# the flush packets of the streams we read (those have lower indices), so it is the end of the input.
NEW_STREAM_AT_END = IndexError
# Formats whose clock is a broadcaster's or recorder's, running on from wherever it was when the recording began
# (an NVR's .ts at 10:00:00): MPEG-TS and program streams, as demuxer and as muxer names.
TRANSPORT_CLOCKS = frozenset({"mpegts", "hls", "mpeg", "vob", "svcd", "dvd", "vcd"})
_READ_ON_S = 10  # a cut clip's file read past its end for the sound stored after its picture, seconds at most
STDIN = "-"  # the input's name for standard input (a pipe from another program)
# How far into a file to look for an audio stream's format when FFmpeg's first look (5 s) found none of it.
LOOK_FURTHER = {"analyzeduration": str(60 * 1_000_000), "probesize": str(200 << 20)}

# Tags of the input that describe the old file rather than the recording (FFmpeg's tools drop them too).
_OLD_FILE_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands"}
_STREAM_TAGS = {"timecode", "language", "title", "creation_time"}  # a stream's own: the rest is the old file's
_VARIANT = "variant_bitrate"  # FFmpeg's HLS demuxer tags each stream of a variant with its BANDWIDTH


def is_file(url: str) -> bool:
    """Whether an input names one file on disk: not a URL, a capture device, an image sequence
    (``frames/%05d.png``, FFmpeg's image2 demuxer; a file that exists under that name, ``100%.jpg``, is a file) or
    standard input."""
    if "://" in url or url.startswith("/dev/video") or url == STDIN or _FILE_PROTOCOL.match(url):
        return False
    return "%" not in Path(url).name or Path(url).is_file()


# FFmpeg's protocols that read a local file by the name after them: file:NAME, and through its cache or async one.
_FILE_PROTOCOL = re.compile(r"(?:(?:cache|async):)*file:")


def reads_a_pipe(url: str) -> bool:
    """Whether an input is standard input or a named pipe: read as it is written, for as long as its writer keeps
    it open."""
    return url == STDIN or (local := local_file(url)) is not None and is_pipe(local)


def local_file(url: str) -> Path | None:
    """The file on disk an input reads, as FFmpeg reads it (for the checks that an output never replaces it): a
    path, or what follows ``file:`` in a URL (``file:///srv/in.mp4``, ``file://srv/in.mp4``: slashes in a row are
    one); None for a camera, a capture device, an image sequence or standard input."""
    if (protocol := _FILE_PROTOCOL.match(url)) is not None:
        name = url[protocol.end():]
        return Path("/" + name.lstrip("/") if name.startswith("/") else name)
    return Path(url) if is_file(url) else None


def stream_tags(stream: av.stream.Stream) -> dict[str, str]:
    """The tags of an input stream that its copy in the output keeps (its language, its timecode, ...)."""
    return {k: v for k, v in stream.metadata.items() if k.lower() in _STREAM_TAGS}


# Leading bytes of container formats: a file that starts like one of these but will not open is corrupt or
# truncated (a runtime failure); anything else is simply not a video (a usage error).
_MAGIC = ((4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (0, b"\x1a\x45\xdf\xa3"),
          (0, b"RIFF"), (0, b"FLV"), (0, b"OggS"), (0, b"\x00\x00\x01\xba"), (0, b"\x00\x00\x00\x01"), (0, b"\x47"))


@dataclass
class VideoInfo:
    """What a sink needs to reproduce the input's timing and layout."""

    width: int
    height: int
    time_base: Fraction
    rate: Fraction
    frames: int  # declared frame count, 0 when the container does not say
    rotation: int  # counter-clockwise degrees from the display matrix
    colour: dict[str, int]  # AVColorSpace/primaries/trc of the input, for tagging the output
    copy_streams: list = field(default_factory=list)  # input audio, subtitle and data streams to copy
    tags: dict[str, str] = field(default_factory=dict)  # the input's own (creation time, location, title, ...)
    video_tags: dict[str, str] = field(default_factory=dict)  # its video stream's (timecode, language, title)
    video_disposition: int = 0  # its video stream's AV_DISPOSITION_* flags (the track played by default)
    pixel_aspect: Fraction | None = None  # a pixel's width to its height, where not square (anamorphic DVD, HDV)
    chapters: list[dict] = field(default_factory=list)  # the input's, as ``Container.chapters()`` gives them
    field_order: int = 0  # FFmpeg's AVFieldOrder: 2 to 5 for interlaced video (0 unknown, 1 progressive)
    bits: int = 8  # bits per sample of the input's pictures (10 for HEVC Main10, HDR)
    subsampling: tuple[int, int] = (2, 2)  # their chroma's (``frames.chroma_subsampling``): 4:2:0
    hdr10: HDR10 | None = None  # its mastering display and light levels, where it states them
    clock_start: Fraction = Fraction(0)  # seconds where the input's clock began (all its streams later than 0)
    base_rate: Fraction | None = None  # the rate its frames' times fall on, as FFmpeg guesses it: above ``rate``
    # (their average) where the rate varies (a phone's video: frames 30-35 ms apart, and pauses)


class Timeline:
    """Keeps an input's timestamps going forward where they jump back (a spliced recording, a camera that
    restarted its clock): from that packet on, every stream is shifted to continue where it was, as FFmpeg's own
    tools do for MPEG-TS. Without it no muxer would take the rest, and the run would be lost. Timestamps that go
    forward, gaps included, stay as they are.

    The streams of a splice are interleaved: an MPEG-TS demuxer hands over the last video packet of the first part
    after the first audio packets of the second. Each stream therefore keeps the shift it had while its packets
    still follow on from its last one, and takes the new shift with its first packet that does not."""

    JUMP = Fraction(1)  # seconds: a step back larger than this is a jump, not a damaged timestamp
    # A transport stream's: FFmpeg's tools take a step back of more than 0.1 s there for a discontinuity (cat of two
    # recordings a second long, each starting its clock where the other did, steps back 0.96 s).
    TRANSPORT_JUMP = Fraction(1, 10)

    def __init__(self, name: str, start: Fraction | None = None, transport: bool = False) -> None:
        """``start``: the input's first time. Below zero (an MPEG-TS whose clock wrapped just after it began) it is
        moved up to zero: MP4 would hide every frame before zero behind its edit list. ``transport``: the input is
        a transport stream (``TRANSPORT_CLOCKS``), which may be spliced."""
        self.name = name  # the input's, for the warnings
        self.jump = self.TRANSPORT_JUMP if transport else self.JUMP
        self.offset = Fraction(0)  # seconds added to every timestamp from the last jump on
        if start is not None and start < 0:
            log.warning("%s: timestamps start at %.2f s: moved up to start at 0", name, start)
            self.offset = -start
        self._before: dict[int, Fraction] = {}  # the shift of each stream not yet past the last jump
        self._last: dict[int, Fraction] = {}  # each stream's last decoding time
        self._step: dict[int, Fraction] = {}  # and a packet's length, where the rest follows on after a jump

    def place(self, packet: av.Packet) -> bool:
        """Shift ``packet``'s timestamps by the offset, first moving the offset on if the packet jumps back.
        False if it still does not come after its stream's previous packet (a damaged timestamp: no muxer takes
        it, so a copied packet is dropped)."""
        tb = packet.time_base
        if not tb:
            return True
        if packet.dts is None:  # (Matroska stores none: its pts alone go back with every reordered frame)
            if packet.pts is not None:
                packet.pts += round(self.offset / tb)
            return True
        index = packet.stream.index
        last = self._last.get(index)
        offset = self._before.get(index, self.offset)
        t = (packet.dts + round(offset / tb)) * tb
        if index in self._before and not last <= t <= last + self.JUMP:  # its first packet past the jump
            del self._before[index]
            offset = self.offset
            t = (packet.dts + round(offset / tb)) * tb
        if last is not None:
            # Measured from the last packet's start: a subtitle line may begin while the one before is still shown.
            if t < last - self.jump:
                expected = last + self._step[index]
                log.warning("%s: timestamps jump back %.1f s at %.1f s (a splice or a restarted clock): the rest "
                            "follows on from there", self.name, expected - t, expected)
                for other in self._last.keys() - {index}:
                    self._before.setdefault(other, self.offset)
                self.offset = offset = offset + expected - t
                t = expected
            # Muxers take equal times for subtitles and data (two lines at once), never for audio or video.
            if t < last or (t == last and packet.stream.type in ("video", "audio")):
                return False
        shift = round(offset / tb)
        if shift:
            packet.dts += shift
            if packet.pts is not None:
                packet.pts += shift
        self._step[index] = self._length(packet, t, last, self._step.get(index))
        self._last[index] = t
        return True

    @staticmethod
    def _length(packet: av.Packet, t: Fraction, last: Fraction | None, before: Fraction | None) -> Fraction:
        """A packet's length: its duration, else (MPEG-TS video gives none) the shortest step between two of
        them so far, which a camera's pause does not stretch."""
        if packet.duration:
            return packet.duration * packet.time_base
        if last is None or t == last:
            return before or Fraction(0)
        return min(t - last, before) if before else t - last


def main_video(container: av.container.InputContainer) -> av.VideoStream | None:
    """The input's picture: the video stream FFmpeg's own tools take (the one marked to play by default, else the
    one with more frames, a higher bitrate: not a camera's small proxy listed first, nor a one-frame thumbnail),
    never a cover (artwork, which FFmpeg lists as a video stream of one frame); of an HLS master playlist, the
    variant with the most pixels, then the highest bitrate (as FFmpeg's CLI takes it); or None."""
    cover = av.stream.Disposition.attached_pic
    # (FFmpeg states a variant's bitrate only in this tag: to ``best`` its streams all look alike, the first wins)
    variants = [s for s in container.streams.video if _VARIANT in s.metadata and not s.disposition & cover]
    if variants:
        return max(variants, key=lambda s: (s.codec_context.width * s.codec_context.height,
                                            int(s.metadata[_VARIANT])))
    best = container.streams.best("video")
    if best is not None and not best.disposition & cover:
        return best
    return next((s for s in container.streams.video if not s.disposition & cover), None)


def discard_other_variants(container: av.container.InputContainer, video: av.VideoStream) -> set[int]:
    """The indices of the streams of an HLS master playlist's variants other than ``video``'s (the same programme at
    other sizes and bitrates, not tracks of its own), which the demuxer is told to discard: their segments are not
    even downloaded. Streams no one variant owns (an audio rendition they share) are kept."""
    chosen = video.metadata.get(_VARIANT)
    if chosen is None:
        return set()
    others = [s for s in container.streams if s.metadata.get(_VARIANT, chosen) != chosen]
    for stream in others:
        stream.discard = av.stream.Discard.all
    return {s.index for s in others}


def known_audio(audio: av.AudioStream) -> bool:
    """Whether FFmpeg found the format of an audio stream when it opened the input."""
    return bool(audio.codec_context.sample_rate and audio.codec_context.channels)


def _looks_like_media(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    return any(head[off: off + len(magic)] == magic for off, magic in _MAGIC)


def pixel_aspect(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The shape of the input's pixels (sample aspect ratio), from the container or else the decoder (which has
    seen a frame); None for square ones."""
    for found in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if found and found != 1:
            return Fraction(found)
    return None


def frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    """The stream's frame rate, as far as it says (25 where it does not). A raw stream (a ``.h264`` dump) has no
    timestamps, and its demuxer's rate is a stand-in of 25: the rate the stream itself states (H.264's and HEVC's
    timing information) comes first there."""
    stated = stream.codec_context.framerate if stream.codec_context is not None else None
    if stated and stream.container.format.flags & av.format.Flags.no_timestamps.value:
        return Fraction(stated)
    return Fraction(stream.average_rate or stream.guessed_rate or 25)


class BestEffort:
    """A decoded frame's timestamp as FFmpeg's own tools take it (libavcodec's best-effort timestamp): its pts,
    unless the input's pts have gone back more often than its decode times, then the decode time of the packet
    that gave it. A frame the decoder flushes at the end has no decode time: it then comes one ``step`` after the
    last. ``stores_pts`` False (AVI): decode times from the first frame. What the AVI demuxer fills in for pts
    comes out of the decoder reordered where there are B-frames, while decode times keep their order."""

    def __init__(self, stores_pts: bool = True) -> None:
        self.faulty_pts, self.faulty_dts = (0 if stores_pts else 1), 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None

    def __call__(self, pts: int | None, dts: int | None, step: int) -> int | None:
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        if self.faulty_pts <= self.faulty_dts:
            return pts if pts is not None else dts
        if dts is None and self.last_dts is not None:
            self.last_dts += step
            return self.last_dts
        return dts


def _time_base(stream: av.video.stream.VideoStream) -> Fraction:
    return stream.time_base or Fraction(1, 90000)


class VideoFileSource:
    """Frames of the input's main video stream (``main_video``) in decode order, interleaved with copy-stream
    packets."""

    def __init__(self, url: str | os.PathLike, *, max_frames: int | None = None,
                 duration: float | None = None, nvdec: hwaccel.Nvidia | None = None, strict: bool = False,
                 stop: threading.Event | None = None) -> None:
        """``nvdec``: decode on that GPU (frames still arrive in host memory); a stream NVDEC cannot decode is
        decoded in software with a warning (an error if NVDEC is required). ``strict``: the first corrupt packet is
        an error instead of being skipped. ``stop``: standard input or a named pipe read no more once it is set
        (or ``stop()``), its end then met at once, even as the input is opened."""
        self.url = str(url)
        self._relay: PipeRelay | None = None  # standard input's or a named pipe's (``relay.py``)
        self._stop = stop
        self.name = "standard input" if self.url == STDIN else mask(self.url, self.url)
        # (a pipe is read once: no NVDEC, whose fallback to software opens the input again)
        nvdec = None if reads_a_pipe(self.url) else nvdec
        self.max_frames, self.duration, self.nvdec, self.strict = max_frames, duration, nvdec or None, strict
        self.corrupt = 0  # packets skipped as corrupt
        self.truncated: str | None = None  # why the input ended early, if it did
        self._cut_at: Fraction | None = None  # ``cut_after``'s end
        if self.nvdec is None:
            self._open()
            return
        try:
            self._open(self.nvdec)
            if self.stream.codec_context.is_hwaccel:
                return
            reason = f"NVDEC has no decoder for {self.stream.codec_context.name}"
            self.close()
        except MediaError as exc:  # NVDEC failed to start (or the input is damaged: software will say)
            reason = f"NVDEC cannot decode it ({exc})"
        if self.nvdec.required:
            raise UsageError(f"--hwaccel cuda: {self.name}: {reason} (use --hwaccel auto to decode in software)")
        log.warning("%s: %s: decoding in software", self.name, reason)
        self.corrupt, self.truncated = 0, None
        self._open()

    def _open(self, nvdec: hwaccel.Nvidia | None = None) -> None:
        path, piped = Path(self.url), reads_a_pipe(self.url)
        on_disk = is_file(self.url) and not piped  # (a named pipe is read once, as it is written)
        if (local := local_file(self.url)) is not None:  # (a file: URL's too)
            if not local.exists():
                raise UsageError(f"input not found: {self.name}")
            if local.is_dir():
                raise UsageError(f"input {self.name} is a folder: give a video file or a camera")
            if local.is_file() and local.stat().st_size == 0:  # (a named pipe's size is 0 too: it is read)
                raise UsageError(f"input is empty: {self.name}")
        try:
            url = "pipe:0" if self.url == STDIN else self.url
            if os.name == "posix" and piped:
                self._relay = PipeRelay(0 if self.url == STDIN else local, self._stop)
                url = self._relay.url
            self.container = av.open(url, "r", hwaccel=hwaccel.decoder(nvdec) if nvdec else None)
            if on_disk and not all(known_audio(s) for s in self.container.streams.audio):
                # Audio that starts late (a camera's microphone switched on): FFmpeg looks 5 s in by default.
                self.container.close()
                self.container = av.open(self.url, "r", hwaccel=hwaccel.decoder(nvdec) if nvdec else None,
                                         options=LOOK_FURTHER)
        except (av.FFmpegError, OSError) as exc:
            self._let_go_of_the_pipe()
            if isinstance(exc, av.ProtocolNotFoundError):  # (foo://: a scheme no FFmpeg protocol takes)
                raise UsageError(f"cannot read {self.name}: this FFmpeg has no {urlsplit(self.url).scheme}:// "
                                 "protocol") from None
            if "%" in path.name:
                raise UsageError(f"no images match the sequence pattern {self.name}") from None
            if getattr(exc, "errno", None) in _NOT_THE_DATA:  # (nothing was read to be corrupt)
                raise MediaError(f"cannot read {self.name}: {_reason(exc)}") from None
            if on_disk and not _looks_like_media(path):
                raise UsageError(f"not a video or image file: {self.name}") from None
            raise MediaError(f"cannot read {self.name}: corrupt or truncated ({_reason(exc)})") from None
        except BaseException:  # (Ctrl-C)
            self._let_go_of_the_pipe()
            raise
        try:
            self._init_streams()
        except BaseException:
            self.container.close()
            self._let_go_of_the_pipe()
            raise

    def _init_streams(self) -> None:
        self.stream = main_video(self.container)
        if self.stream is None and (cut := self._unread_rest()):  # (a damaged index: no user's mistake)
            raise MediaError(f"cannot read {self.name}: it {cut}, and no video stream can be read")
        if self.stream is None:
            raise UsageError(f"no video stream in {self.name}")
        self.stream.thread_type = "AUTO"
        if self.stream.codec_context.is_hwaccel:
            # Each frame thread adds decode surfaces, and NVDEC fails to start past 32 of them; the GPU decodes,
            # so one thread loses nothing.
            self.stream.codec_context.thread_count = 1
        if self.strict:  # FFmpeg's own strictness: damage the decoder would conceal becomes an error
            self.stream.codec_context.options = {"err_detect": "+explode"}
        self.copy_streams = []
        others = discard_other_variants(self.container, self.stream)
        for s in self.container.streams:
            if s.index in others:  # (another variant of the same programme: not an extra track to copy)
                continue
            if s.type == "data" and s.discard == av.stream.Discard.all:  # (an MP4's chapter track: its chapters go)
                continue
            if s.type == "audio" and not known_audio(s):
                # No audio where FFmpeg looked: a muxer refuses a stream with no format, and the video must not
                # be lost for it.
                log.warning("%s: not copying audio stream #%d: its format is unknown (no audio near the start)",
                            self.name, s.index)
            elif s.type in ("audio", "subtitle", "attachment") or s.type == "data" and s.name:
                # (data: a drone's KLV, say; a data stream FFmpeg cannot name, such as a QuickTime timecode track,
                # is no stream to copy: the timecode goes along as the video's tag. Attachments: the fonts that
                # Matroska's styled subtitles are drawn with.)
                self.copy_streams.append(s)
            elif s.type == "video" and s is not self.stream:  # (said, not dropped in silence)
                kind = "cover art" if s.disposition & av.stream.Disposition.attached_pic else "video stream"
                log.warning("%s: not copying %s #%d: only video stream #%d is written, dehazed", self.name,
                            kind, s.index, self.stream.index)
        self._items = self._demux()
        self._pending: list[Item] = []
        first = None
        for item in self._items:
            self._pending.append(item)
            if isinstance(item, av.VideoFrame):
                first = item
                break
        if first is None:
            if self.url == STDIN and "mp4" in self.container.format.name:  # (mov,mp4,m4a,3gp,3g2,mj2)
                raise MediaError("cannot read standard input: an MP4 or MOV file whose index comes after its media "
                                 "cannot be read from a pipe (give its name instead, or pipe MPEG-TS: ffmpeg -i IN "
                                 "-c copy -f mpegts -)")
            raise MediaError(f"cannot read {self.name}: no decodable video frame (corrupt or truncated)")
        st = self.stream
        self.info = VideoInfo(
            width=first.width, height=first.height, time_base=_time_base(st), rate=frame_rate(st),
            frames=int(st.frames or 0), rotation=int(first.rotation or 0), pixel_aspect=pixel_aspect(st),
            colour={"colorspace": int(first.colorspace), "color_primaries": int(st.codec_context.color_primaries),
                    "color_trc": int(st.codec_context.color_trc)},
            copy_streams=self.copy_streams,
            tags={k: v for k, v in self.container.metadata.items() if k.lower() not in _OLD_FILE_TAGS},
            video_tags=stream_tags(st), video_disposition=int(st.disposition), chapters=self._chapters(first),
            field_order=int(st.codec_context.field_order or 0), bits=sample_bits(first), hdr10=hdr10_of(first),
            subsampling=chroma_subsampling(first), clock_start=self._clock_start(),
            base_rate=Fraction(st.guessed_rate) if st.guessed_rate else None,
        )

    def _clock_start(self) -> Fraction:
        # A transport stream's clock starts anywhere, and so does that of a file cut or remuxed from one (a Matroska
        # file at 1 h): MP4 wrote an hour of nothing before it, an empty edit that players show. An MP4's or MOV's
        # own start is its edit list's, meant as it is (a lead-in, B-frames' delay): kept.
        start = self.container.start_time
        if start is None or start <= 0 or "mp4" in self.container.format.name:  # (mov,mp4,m4a,3gp,3g2,mj2)
            return Fraction(0)  # (below zero: ``Timeline`` moves it up to zero)
        return Fraction(start, av.time_base)

    def _chapters(self, first: av.VideoFrame) -> list[dict]:
        """The input's chapters; a clip cut with ``max_frames`` or ``duration`` keeps those that begin before its
        end (as far as it is known before the frames are read: at the stream's rate), the last ending there."""
        chapters = self.container.chapters()
        if first.pts is None or first.time_base is None or self.max_frames is None and self.duration is None:
            return chapters
        length = min(_exact(self.duration) if self.duration is not None else math.inf,
                     self.max_frames / frame_rate(self.stream) if self.max_frames is not None else math.inf)
        end = first.pts * first.time_base + length
        kept = [dict(c) for c in chapters if c["start"] * c["time_base"] < end]
        for chapter in kept:
            chapter["end"] = min(chapter["end"], round(end / chapter["time_base"]))
        return kept

    def _demux(self) -> Iterator[Item]:
        decoded = packets = listed = 0
        first: Fraction | None = None
        last: int | None = None  # the last frame's pts
        last_end: int | None = None  # and where it ends (a time-lapse's frames last seconds)
        start = self.container.start_time
        timeline = Timeline(self.name, None if start is None else Fraction(start, av.time_base),
                            transport=self.container.format.name in TRANSPORT_CLOCKS)
        demuxed = self.container.demux(self.stream, *self.copy_streams)
        # With a limit, copied packets wait for the video to pass their time: the decoder gives frames later than
        # their packets arrive, and audio read ahead of the last frame kept would run on past the picture.
        held: list[av.Packet] | None = [] if self.max_frames is not None or self.duration is not None else None
        best_effort = BestEffort(stores_pts=self.container.format.name != "avi")
        rate = frame_rate(self.stream)
        step = max(1, round(1 / (rate * _time_base(self.stream))))
        broken: str | None = None  # why the input could not be read on
        while broken is None:
            if self._cut_at is not None:
                yield from self._cut(demuxed, timeline, held, self._cut_at)
                return
            try:
                packet = next(demuxed)
            except (StopIteration, NEW_STREAM_AT_END):
                yield from held or ()
                break
            except av.FFmpegError as exc:  # a read error: the input ends here
                broken, packet = _read_error(exc), None
            if packet is None:  # (the frames the decoder still holds, which reordering and its threads keep back)
                frames = self._drained()
            else:
                in_order = timeline.place(packet)
                if packet.stream is not self.stream:
                    if packet.size and in_order and held is not None:
                        held.append(packet)
                    elif packet.size and in_order:
                        yield packet
                    elif packet.size:
                        self._damaged(decoded)
                    continue
                packets += bool(packet.size)
                if packet.size and packet.dts is not None:
                    listed = packet.dts + 1  # (an AVI's timestamps count its index's entries, the empty ones too)
                damaged = packet.is_corrupt  # e.g. the short read at the end of a truncated file
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    damaged, frames = True, []
                if damaged:
                    self._damaged(decoded)
            for frame in frames:
                frame.pts = best_effort(frame.pts, frame.dts, step)
                if frame.pts is None:  # none in the container (a raw .h264 stream): frames counted at its rate
                    frame.time_base = frame.time_base or _time_base(self.stream)
                    frame.pts = round(decoded / (rate * frame.time_base))
                if last is not None and frame.pts <= last:  # a damaged timestamp: no encoder takes it
                    self._damaged(decoded)
                    continue
                previous, last = last, frame.pts
                last_end = last + (frame.duration or step)
                t = frame.pts * frame.time_base if frame.time_base is not None else None
                if self.duration is not None and t is not None:
                    first = t if first is None else first
                    if t - first >= _exact(self.duration):
                        # The sound up to the cut, or to the end of the last frame's usual length where that is
                        # later: not up to this frame, which a pause puts seconds later.
                        shown = (previous + step) * frame.time_base if previous is not None else t
                        yield from self._cut(demuxed, timeline, held, min(t, max(first + _exact(self.duration), shown)))
                        return
                if held:
                    yield from _before(held, t)
                yield to_planar(frame)
                decoded += 1
                if self.max_frames is not None and decoded >= self.max_frames:
                    length = frame.duration * frame.time_base if frame.duration and t is not None else 1 / rate
                    yield from self._cut(demuxed, timeline, held, None if t is None else t + length)
                    return
        if broken is not None:
            yield from held or ()
            self.truncated = f"cannot be read after frame {decoded} ({broken})"
        elif self.stream.frames and packets < self.stream.frames and not (
                self.container.format.name == "avi" and listed >= self.stream.frames):
            # The index lists packets the file no longer holds; an AVI's also lists a dropped frame's, empty (a
            # capture card's), which the file still holds when it holds the last entry.
            self.truncated = f"is truncated: {packets} of its {self.stream.frames} video packets are there"
        elif (stated := _stated_length(self.stream)) is not None and last_end is not None and \
                stated - last_end * _time_base(self.stream) > 1:  # (Matroska's tags; MP4's header, a fragment's)
            self.truncated = f"is truncated: its video ends at {float(last * _time_base(self.stream)):.1f} s of " \
                             f"the {float(stated):.1f} s it states"
        else:
            self.truncated = self._unread_rest()

    def cut_after(self, frame: av.VideoFrame) -> Fraction | None:
        """End the clip after ``frame`` (a run stopped by Ctrl-C: the last frame it took); returns that frame's end
        in seconds, or None where it does not cut. From then on the source gives what a cut there gives (``_cut``):
        the sound the file stores further on, up to that end, which a stop without it left out (an MP4's last
        second). Only a regular file on disk is read on: a pipe or a server may keep the reader waiting, and a
        stop must not. Called from another thread than the one reading."""
        local = local_file(self.url)
        if local is None or not local.is_file() or frame.pts is None or frame.time_base is None:
            return None
        length = frame.duration * frame.time_base if frame.duration else 1 / frame_rate(self.stream)
        self._cut_at = frame.pts * frame.time_base + length
        return self._cut_at

    def _cut(self, demuxed: Iterator[av.Packet], timeline: Timeline, held: list[av.Packet] | None,
             end: Fraction | None) -> Iterator[av.Packet]:
        """Where a clip is cut at ``end``: the copied packets that start before it, those held, then those the file
        holds further on (its sound written after its picture, seconds apart), read until each copied stream has
        passed the end, or the picture has by ``_READ_ON_S``."""
        yield from _before(held, end)
        going = {s.index for s in self.copy_streams} - {p.stream.index for p in held or ()}  # (held: past the end)
        while going and end is not None:
            try:
                packet = next(demuxed)
            except (StopIteration, NEW_STREAM_AT_END, av.FFmpegError):
                return
            start = packet_start(packet)
            if packet.stream is self.stream:
                if start is not None and start > end + _READ_ON_S:
                    return
            elif packet.stream.index in going:
                if start is None or start >= end:
                    going.discard(packet.stream.index)
                elif timeline.place(packet) and packet.size:
                    yield packet

    def _unread_rest(self) -> str | None:
        """What of an MP4/MOV file on disk its demuxer cannot have read (``fragments.unread_rest``); None for others."""
        mp4 = "mp4" in self.container.format.name  # (mov,mp4,m4a,3gp,3g2,mj2)
        return fragments.unread_rest(self.url) if mp4 and is_file(self.url) else None

    def _drained(self) -> list[av.VideoFrame]:
        try:
            frames = self.stream.codec_context.decode(None)
        except av.FFmpegError:
            return []
        for frame in frames:  # (the codec's, unlike the stream's decoding, leaves their time base unset)
            frame.time_base = frame.time_base or self.stream.time_base
        return frames

    def _damaged(self, decoded: int) -> None:
        self.corrupt += 1
        if self.strict:
            raise MediaError(f"{self.name}: corrupt packet after frame {decoded} (--strict)")

    def __iter__(self) -> Iterator[Item]:
        # The container stays open after iteration: queued packets still point into its streams.
        # Whoever opened the source closes it (it is a context manager) once the sink is done.
        while self._pending:
            yield self._pending.pop(0)
        yield from self._items

    def stop(self) -> None:
        """Read no more of standard input or a named pipe, whose writer may keep it open and silent: its end comes
        at once."""
        if (relay := self._relay) is not None:  # (the owner may let go of it meanwhile)
            relay.end()

    def _let_go_of_the_pipe(self) -> None:
        if self._relay is not None:
            self._relay.close()
            self._relay = None

    def close(self) -> None:
        self._items.close()
        self.container.close()
        self._let_go_of_the_pipe()

    def __enter__(self) -> "VideoFileSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stated_length(stream: av.video.stream.VideoStream) -> Fraction | None:
    """When a stream says it ends where its container states it apart from its index: an MP4 or MOV header's start
    and duration of the track (of a fragmented file, as far as the fragments' headers read say, the last one's
    included where its data is cut off), or Matroska's DURATION tag (FFmpeg writes it once the file is complete),
    "HH:MM:SS.nnnnnnnnn". Other demuxers' durations may be FFmpeg's estimate from the bitrate, which says nothing."""
    if "mp4" in stream.container.format.name:  # (mov,mp4,m4a,3gp,3g2,mj2)
        if not stream.duration:
            return None  # (a fragmented file with no fragment read)
        return ((stream.start_time or 0) + stream.duration) * _time_base(stream)
    stated = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", stream.metadata.get("DURATION", ""))
    if stated is None:
        return None
    hours, minutes, seconds = stated.groups()
    return (int(hours) * 60 + int(minutes)) * 60 + Fraction(seconds)


def packet_start(packet: av.Packet) -> Fraction | None:
    """When a packet begins, in seconds (None where it does not say)."""
    start = packet.pts if packet.pts is not None else packet.dts
    return None if start is None or packet.time_base is None else start * packet.time_base


def adts_configuration(packet: av.Packet) -> tuple[int, int] | None:
    """What the ADTS header of an AAC packet (AAC in MPEG-TS) states of its sound: its profile, sampling rate and
    channel configuration (bits 16 to 25, less the private bit); None for a packet without one (raw AAC)."""
    head = bytes(packet)[:4]
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xF0 != 0xF0:
        return None
    return head[2] & 0xFD, head[3] & 0xC0


def _before(held: list[av.Packet] | None, end: Fraction | None) -> Iterator[av.Packet]:
    """Take from ``held`` the packets that start before ``end`` (all of them where ``end`` is None)."""
    if not held:
        return
    kept = []
    for packet in held:
        start = packet_start(packet)
        if end is None or start is None or start < end:
            yield packet
        else:
            kept.append(packet)
    held[:] = kept


# Why an input would not open that is not its data: a file's permissions, a server that refused or did not answer.
_NOT_THE_DATA = {errno.EACCES, errno.EPERM, errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT,
                 errno.EHOSTUNREACH, errno.ENETUNREACH}


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _read_error(exc: av.FFmpegError) -> str:
    """Why an input could not be read on. FFmpeg runs out of memory reading a file when it takes a damaged size
    (a box's, a packet's) at its word: said so, not left to read as the machine's fault."""
    if exc.errno == errno.ENOMEM:
        return "damaged: it states a size too large for memory"
    return _reason(exc)


def _exact(seconds: float) -> Fraction:
    """``--duration``'s seconds as the fraction meant (0.2 is 1/5, not the float just above it, which let a 25 fps
    clip keep a sixth frame)."""
    return Fraction(seconds).limit_denominator(10**6)

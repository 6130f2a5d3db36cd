"""Live sources: cameras over RTSP/RTMP/HTTP/UDP/SRT and webcams, which must survive network faults.

A live source opens with low-latency options, reads with a timeout, and on any failure, timeout or end of stream
reconnects with exponential backoff; both the outage and its end are logged, the end with the outage's length. A
stall is "no data for ``timeout`` s", measured from the last packet: FFmpeg hands over the last frame before a stall
only when the read gives up (its parser waits for the next frame's start), so a read that waited that long is the
stall, whatever it returned. Frames come out on one monotonic clock (``LIVE_TIME_BASE``): within a connection the
camera's own timestamp deltas (except where its clock jumps back, or ahead by more than the time that passed; frames
without timestamps, which some formats have, by their arrival), across a reconnect the real time that passed (from
the lost connection's frames that came on time: not its last, which came out late), so the output file's timeline
stays true and never goes backwards. ``arrival(pts)`` gives a recent frame's arrival time (``time.monotonic()``) for
latency accounting; output pts are unique, so they key it. With ``copy_audio``, the camera's sound comes along as
packets on the same clock, for a recording or a server published to. A reconnection opens the stream with the
demuxer its first connection found, instead of guessing it again from what comes first (``_open_once``).
"""

from __future__ import annotations

import functools
import io
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import av

from .credentials import check_url, mask
from .errors import MediaError, UsageError
from .formats import VIDEO_SUFFIXES
from .frames import chroma_subsampling, sample_bits, to_planar
from .hdr import hdr10_of
from .images import is_image_url
from .sound import RawAAC
from .sources import (NEW_STREAM_AT_END, VideoInfo, adts_configuration, discard_other_variants, frame_rate,
                      known_audio, main_video, packet_start, pixel_aspect)

log = logging.getLogger("streamdehaze")

LIVE_TIME_BASE = Fraction(1, 90000)
LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "srt", "tcp"}
_PLAYLIST_SUFFIXES = (".m3u8",)  # HLS: video on demand, or live (a sliding window): FFmpeg tells which
_PLAYLIST_TIMEOUT_S = 10.0  # to read a playlist (and what FFmpeg reads of its first segments) when judging it
_MAX_DECODE_ERRORS = 50  # consecutive undecodable packets before the connection is considered broken
# A camera's clock that runs ahead of ours by more than this jumped (a clock set, a restart): frames come at the
# camera's pace, so its clock and ours advance alike. Measured against the least late of the connection's last
# _RECENT frames (each frame's arrival less its time): late frames (a burst after a stall, or the frames before a
# short loss of data, which come out only with the data after it) are no reference.
_JUMP_S = 1.0
_RECENT = 64
# Frames without timestamps of their own (MJPEG over HTTP, raw H.264 over TCP: FFmpeg numbers them at a rate it
# guesses, 25 fps) are timed by their arrival: spaced by the mean interval between the last _RECENT arrivals (the
# stream's stated rate until there are two), and drawn toward their arrival by 1/_STEER per frame (network jitter
# smoothed out, no drift either way); one later than _GAP_S came after a loss, and is placed at its arrival.
_GAP_S = 0.5
_STEER = 8
_WAITED_S = 0.002  # a read of a packet that took this long waited for the network: not one of a buffer's
# A connection lost sooner than this after it came back (a URL that gives one picture and ends, a camera that drops
# every viewer at once) is no recovery: the next reconnection waits on from the backoff reached, rather than dialling
# again at once, hundreds of times a second.
_BRIEF_S = 2.0


def is_live(url: str) -> bool:
    """Network streams and capture devices; an http(s) URL of a plain media file counts as a file, and so does one
    of a finished HLS playlist (video on demand); a playlist that cannot be read yet is taken for live (dialled
    until it answers, as a camera is)."""
    if url.startswith("/dev/video"):
        return True
    check_url(url)
    parts = urlsplit(url)
    if parts.path.lower().endswith(".mpd") and not _reads("dash"):
        # (FFmpeg's DASH demuxer needs libxml2, which PyAV's own builds leave out: a live URL would fail for ever)
        raise UsageError(f"{mask(url, url)} is a DASH manifest, which this FFmpeg cannot read (it has no DASH "
                         "demuxer): give the stream's HLS playlist (.m3u8) or its media file")
    if parts.scheme not in LIVE_SCHEMES:
        return False
    if parts.scheme in ("http", "https"):
        path = parts.path.lower()
        if PurePosixPath(path).suffix in VIDEO_SUFFIXES or is_image_url(url):
            return False
        if path.endswith(_PLAYLIST_SUFFIXES):
            try:
                return not _finished_playlist(url)
            except (av.FFmpegError, OSError):
                return True
    return True


def _reads(format: str) -> bool:
    """Whether this FFmpeg has a demuxer of that name."""
    try:
        av.format.ContainerFormat(format, "r")
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=64)
def _finished_playlist(url: str) -> bool:
    """Whether an HLS playlist is finished (``#EXT-X-ENDLIST``): FFmpeg's demuxer states a duration for a finished
    one only (of a master playlist: its first variant's), a live one's being unknown. Read once per URL (the CLI,
    the job and its source all ask)."""
    with av.open(url, "r", timeout=_PLAYLIST_TIMEOUT_S) as container:
        return _finished(container)


def _finished(container: av.container.InputContainer) -> bool:
    return container.format.name == "hls" and container.duration is not None


@dataclass
class LiveOptions:
    timeout: float = 5.0  # seconds without data before a read fails
    connect_timeout: float | None = None  # seconds to the first frame of a connection; default max(timeout, 10)
    reconnect: float = math.inf  # reconnection attempts for each outage; inf = for ever
    rtsp_transport: str = "tcp"
    backoff_start: float = 0.5
    backoff_max: float = 10.0


class LiveSource:
    """Video frames of a live stream, reconnecting as needed, until ``stop()``, a limit, or reconnects run out."""

    closes_while_read = True  # ``close`` from another thread while one reads it is safe: the reader lets go

    def __init__(self, url: str, options: LiveOptions | None = None, *, max_frames: int | None = None,
                 duration: float | None = None, stop: threading.Event | None = None, copy_audio: bool = False) -> None:
        """Connects (retrying as ``options`` say) before returning; setting ``stop`` meanwhile gives up with
        ``Stopped``. ``copy_audio``: the camera's audio streams come too, as packets between the frames."""
        self.url, self.name = url, mask(url, url)
        self.options = options or LiveOptions()
        self.max_frames, self.duration = max_frames, duration
        self.reconnects = 0
        self.received = 0  # frames decoded from the stream (written + dropped, once the run is over)
        self.corrupt = 0  # packets the decoder refused (lost on the network), skipped
        self._last_data = time.monotonic()  # when the camera last sent something
        self._stop = stop or threading.Event()
        self._container: av.container.InputContainer | None = None
        self._format = "v4l2" if url.startswith("/dev/video") else None  # the demuxer, once a connection found it
        self._clock_start = time.monotonic()
        self._connected = time.monotonic()  # when the current connection gave its first frame
        self._backoff = 0.0  # the wait before the attempt that made it, after an outage
        self._last_pts: int | None = None
        self._last_wall: int | None = None  # when (LIVE_TIME_BASE) the last frame arrived
        # When this connection's last frames without timestamps arrived, from the first that was waited for (not
        # one of the burst read while FFmpeg probed the connection): their mean interval is the camera's.
        self._arrived: deque[int] = deque(maxlen=_RECENT + 1)
        self._read_waited = False  # whether the last packet read waited for the network
        self._gap = round(_GAP_S / LIVE_TIME_BASE)
        self._jump = round(_JUMP_S / LIVE_TIME_BASE)
        self._lags: deque[int] = deque(maxlen=_RECENT)  # this connection's last frames: arrival less output time
        self._lag_before: int | None = None  # the least of the lost connection's lags
        self._anchor: tuple[int, int] | None = None  # (source pts, output pts) of the connection's first frame
        self._begun: int | None = None  # output pts of the connection's first frame (with a timestamp or not)
        self._arrivals: OrderedDict[int, float] = OrderedDict()
        self._copy_audio = copy_audio
        # The first connection's audio streams, kept as templates in a container of their own (a reconnection
        # closes the connection's): every output stream of the run is made from them, and packets are sent as theirs.
        self._templates: list[av.stream.Stream] = []
        self._holder: av.container.OutputContainer | None = None
        self._audio: dict[int, av.stream.Stream] = {}  # this connection's audio stream index -> template
        self._audio_last: dict[int, Fraction] = {}  # each template's last time out, in seconds
        self._adts: dict[int, RawAAC] = {}  # this connection's AAC streams in ADTS, made raw
        self._configurations: dict[int, tuple[int, int]] = {}  # each template's first ADTS configuration
        self._reading = threading.Lock()  # held while a thread iterates: the connection is that thread's (``close``)
        self._closing = False
        self._first = self._connect()
        self._ahead = self._settle_templates() if self._templates else deque()
        st = self._stream
        self.info = VideoInfo(
            width=self._first.width, height=self._first.height, time_base=LIVE_TIME_BASE,
            rate=frame_rate(st), frames=0, rotation=int(self._first.rotation or 0),
            colour={"colorspace": int(self._first.colorspace), "color_primaries": int(self._first.color_primaries),
                    "color_trc": int(self._first.color_trc)},
            pixel_aspect=pixel_aspect(st), bits=sample_bits(self._first), hdr10=hdr10_of(self._first),
            subsampling=chroma_subsampling(self._first), copy_streams=self._templates,
        )

    def _open_options(self, connect: float) -> dict[str, str]:
        # FFmpeg's own socket timeout bounds the connection (a server's first answer may be slow); a stall once
        # frames flow is PyAV's read timeout's, and ``_decode``'s.
        micro = str(int(connect * 1e6))
        # (Not ``fflags=nobuffer``: it drops the packets read while the stream is probed, a connection's first second.)
        opts = {"flags": "low_delay", "probesize": "500000", "analyzeduration": "1000000"}
        scheme = urlsplit(self.url).scheme
        if scheme in ("rtsp", "rtsps"):
            if self.options.rtsp_transport not in ("tcp", "udp", "udp_multicast", "http", "https"):
                raise UsageError(f"unknown --rtsp-transport {self.options.rtsp_transport!r}")
            opts.update(rtsp_transport=self.options.rtsp_transport, timeout=micro)  # 'timeout' replaced 'stimeout'
        elif scheme in LIVE_SCHEMES:
            opts["rw_timeout"] = micro
        return opts

    def _connect(self) -> av.VideoFrame:
        """Open the stream and decode its first frame, retrying with backoff; returns that frame."""
        delay = self.options.backoff_start
        failures, began = 0, time.monotonic()
        while True:
            if self._stop.is_set():
                raise Stopped
            try:
                frame = self._open_once()
                if failures:  # (its failures were said; that it answered at last was not)
                    log.warning("%s: connected after %.1f s (attempt %d)", self.name, time.monotonic() - began,
                                failures + 1)
                return frame
            except (av.FFmpegError, OSError, MediaError) as exc:
                reason = self._reason(exc)
                if failures >= self.options.reconnect:
                    raise MediaError(f"cannot read live stream {self.name}: {reason}") from None
                failures += 1
                log.warning("%s: %s; retrying in %.1f s", self.name, reason, delay)
                if self._stop.wait(delay):
                    raise Stopped from None
                delay = min(delay * 2, self.options.backoff_max)

    def _reconnect(self, reason: str) -> av.VideoFrame:
        """After a loss: connect again, with backoff after a failed attempt, up to ``reconnect`` attempts for this
        outage (a recording that runs for weeks survives any number of outages); the outage is logged when it
        starts and when it ends."""
        lost, last_pts, attempts = self._last_data, self._last_pts, 0
        delay = 0.0
        if time.monotonic() - self._connected < _BRIEF_S:
            delay = min(max(2 * self._backoff, self.options.backoff_start), self.options.backoff_max)
        while True:
            if attempts >= self.options.reconnect:
                raise MediaError(f"live stream {self.name} lost ({reason}); no reconnects left")
            if self._time_left() <= 0:  # --duration ran out during the outage: the run ends as it would have
                log.warning("%s: %s; --duration reached during the outage", self.name, reason)
                raise Stopped
            attempts += 1
            log.warning("%s: %s; reconnecting (attempt %d)%s", self.name, reason, attempts,
                        f" in {delay:.1f} s" if delay else "")
            if self._stop.wait(min(delay, max(self._time_left(), 0.0))):
                raise Stopped
            if self._time_left() <= 0:
                continue
            try:
                frame = self._open_once()
            except (av.FFmpegError, OSError, MediaError) as exc:
                reason = self._reason(exc)
                delay = min(max(2 * delay, self.options.backoff_start), self.options.backoff_max)
                continue
            self.reconnects += 1  # (reconnections, not attempts: what an alert on a flaky camera counts)
            self._backoff = delay
            # (the outage as the recording shows it)
            gap = self._last_data - lost if last_pts is None else (frame.pts - last_pts) * LIVE_TIME_BASE
            log.warning("%s: back after %.1f s without data (reconnect %d)", self.name, gap, self.reconnects)
            return frame

    def wall_time(self, seconds: float) -> float:
        """The Unix time at which a frame of output time ``seconds`` came (the clock starts with the first frame)."""
        return time.time() - time.monotonic() + self._clock_start + float(seconds)

    def _time_left(self) -> float:
        """Seconds of ``duration`` left on the run's clock, which starts with the first frame."""
        return math.inf if self.duration is None else self._clock_start + self.duration - time.monotonic()

    def _open_once(self) -> av.VideoFrame:
        self._close_container()
        # Servers may build their pipeline for the first client (slow): connecting gets its own, longer bound.
        connect = self.options.connect_timeout or max(self.options.timeout, 10.0)
        started = time.monotonic()
        try:
            container = av.open(self.url, "r", format=self._format, options=self._open_options(connect),
                                timeout=(connect, self.options.timeout))
        except av.ProtocolNotFoundError:  # (no retry mends it)
            scheme = urlsplit(self.url).scheme
            raise UsageError(f"{self.name}: this FFmpeg cannot read {scheme}:// (it was built without the {scheme} "
                             "protocol)") from None
        except av.ExitError:  # PyAV's timeout interrupted FFmpeg
            # (PyAV times the opening and the probing that follows apart: with a known container format the
            # first may wait out FFmpeg's own socket timeout, and the second PyAV's, so the wait may be twice
            # ``connect``: the message says how long it was.)
            raise MediaError(f"no answer for {time.monotonic() - started:.0f} s") from None
        except av.InvalidDataError:
            # FFmpeg's RTSP demuxer says "invalid data" when the wait for an answer is cut off (by its timeout or
            # PyAV's): a server that accepts the connection and never answers (or sends what is no RTSP answer and
            # waits). Invalid data that did come ends the attempt sooner, and is reported as such.
            if time.monotonic() - started >= connect:
                raise MediaError(f"no answer for {connect:g} s") from None
            # FFmpeg's words say nothing of why: the other end closed the connection unanswered, or answered in
            # another protocol (an HTTP server on the RTSP port, MPEG-TS expected and something else sent).
            raise MediaError("nothing readable came back (closed unanswered, or another protocol or format: check the "
                             "URL's scheme and port)") from None
        self._container = container
        if self._stop.is_set():  # (while FFmpeg dialled, which nothing interrupts)
            raise Stopped
        if self._last_pts is not None and _finished(container):
            # A live playlist finished since (#EXT-X-ENDLIST): the broadcast is over, and reading it again would
            # record all of it a second time.
            log.warning("%s: the live playlist has ended", self.name)
            raise Stopped
        self._stream = main_video(container)
        if self._stream is None:
            raise UsageError(f"no video stream in {self.name}")
        others = discard_other_variants(container, self._stream)
        self._audio = self._match_audio(container, others) if self._copy_audio else {}
        self._frames = self._decode(container, self._stream)
        self._anchor = self._begun = None
        if self._lags:
            self._lag_before = min(self._lags)
        self._lags.clear()  # (the last frames of a lost connection came out late, when the loss was seen)
        self._arrived.clear()
        for item in self._frames:  # (sound before the first frame has no place on the clock yet: none comes)
            # A camera keeps its container format: later connections open with this one's demuxer. FFmpeg's guess
            # reads from a connection's start, and one opened while garbage comes (UDP has no connection to break: a
            # reconnection listens through it) may settle on another demuxer (MPEG-TS taken for MPEG-PS), which then
            # finds no stream in the good data that follows until the attempt's connect timeout, all of it lost.
            self._format = self._format or container.format.name
            self._connected = time.monotonic()
            return item
        raise MediaError("stream ended before its first frame")

    def _match_audio(self, container: av.container.InputContainer, others: set[int]) -> dict[int, av.stream.Stream]:
        """This connection's audio streams (not those of ``others``: an HLS playlist's other variants), each paired
        with the template it is sent as. The first connection makes the templates; a later one whose sound is not as
        it was (another codec, rate or channel count, which the run's outputs cannot take) goes on without it, but
        for AAC in ADTS, whose packets state another rate or channel count (``_raw``)."""
        audio = [s for s in container.streams.audio if known_audio(s) and s.index not in others]
        # AAC in MPEG-TS (ADTS) states its configuration in each packet and nowhere else, and MP4, FLV and RTSP
        # outputs need it in their header: FFmpeg's aac_adtstoasc takes it out (the first packet carries it).
        self._adts = {s.index: RawAAC() for s in audio
                      if s.codec_context.name == "aac" and not s.codec_context.extradata}
        if self._holder is None:
            self._holder = av.open(io.BytesIO(), "w", format="null")  # (a format that takes any codec)
            self._templates.extend(self._holder.add_stream_from_template(s) for s in audio)
            return {s.index: t for s, t in zip(audio, self._templates)}
        matched = {}
        for s, t in zip(audio, self._templates):
            a, b = s.codec_context, t.codec_context
            same = (a.name, a.sample_rate, a.channels) == (b.name, b.sample_rate, b.channels)
            if same or a.name == b.name and s.index in self._adts:
                matched[s.index] = t
        if len(matched) < len(self._templates):
            log.warning("%s: its audio is not as it was before the reconnection: recorded without it", self.name)
        return matched

    def _settle_templates(self) -> deque:
        """Read on (up to 2 s) until every ADTS stream has given its configuration to its template, before any
        output is made from them; returns what was read meanwhile, to be given out first."""
        ahead: deque = deque()
        deadline = time.monotonic() + 2.0
        unsettled = [t for t in self._templates if t.codec_context.name == "aac" and not t.codec_context.extradata]
        while unsettled and time.monotonic() < deadline:
            try:
                ahead.append(next(self._frames))
            except (StopIteration, av.FFmpegError, OSError, MediaError):
                break  # (the connection's end shows again where the frames are read)
            unsettled = [t for t in unsettled if not t.codec_context.extradata]
        if unsettled:
            log.warning("%s: no sound came within 2 s of the first frame: recorded without it", self.name)
            for template in unsettled:
                self._templates.remove(template)
            self._audio = {i: t for i, t in self._audio.items() if t in self._templates}
            ahead = deque(item for item in ahead if not isinstance(item, av.Packet) or item.stream in self._templates)
        # (a stream's parameters are taken from its codec context when its container starts)
        self._holder.start_encoding()
        return ahead

    def _raw(self, packet: av.Packet) -> list[av.Packet]:
        """An audio packet as outputs take it: ADTS made raw AAC (the first one's configuration kept in its
        template). Sound that goes on in another configuration stays ADTS, which states it: MPEG-TS outputs carry
        it as it is, the others encode it again in the first (``sound.CopiedSound``)."""
        adts = self._adts.get(packet.stream.index)
        if adts is None:
            return [packet]
        template, time_base = self._audio[packet.stream.index], packet.time_base
        configuration = adts_configuration(packet)
        first = self._configurations.setdefault(template.index, configuration) if configuration else None
        if first != configuration:
            return [packet]
        out, made = [], adts(packet)
        self.corrupt += not made  # (damaged on the way, as a video packet the decoder refuses)
        for raw in made:
            if raw.has_sidedata("new_extradata"):  # moved into the template: a muxer that met it again mid-stream
                if not template.codec_context.extradata:  # would rewrite its header (Matroska: twice the tracks)
                    template.codec_context.extradata = bytes(raw.get_sidedata("new_extradata"))
                plain = av.Packet(bytes(raw))
                plain.pts, plain.dts, plain.duration = raw.pts, raw.dts, raw.duration
                raw = plain
            raw.time_base = time_base
            out.append(raw)
        return out

    def _restamp_audio(self, packet: av.Packet) -> bool:
        """Put an audio packet on the output clock, as its connection's frames are put (``_restamp``). False for one
        that cannot be placed there: before the connection's first frame, out of order, or far from the pictures
        (read just before a jump of the camera's clock moved them)."""
        start, tb = packet_start(packet), packet.time_base
        if self._anchor is None or start is None or self._last_pts is None:
            return False
        shift = (self._anchor[1] - self._anchor[0]) * LIVE_TIME_BASE
        t = start + shift
        begun = self._begun * LIVE_TIME_BASE
        if t < begun:  # sound that began before the connection's first frame: what overlaps it starts with it
            if not packet.duration or t + packet.duration * tb <= begun:
                return False
            shift, t = shift + begun - t, begun
        if abs(t - self._last_pts * LIVE_TIME_BASE) > 2:
            return False
        template = self._audio[packet.stream.index]
        last = self._audio_last.get(template.index)
        if last is not None and t <= last:
            return False
        self._audio_last[template.index] = t
        moved = round(shift / tb)
        packet.pts = None if packet.pts is None else packet.pts + moved
        packet.dts = None if packet.dts is None else packet.dts + moved
        return True

    def _decode(self, container: av.container.InputContainer,
                stream: av.VideoStream) -> Iterator[av.VideoFrame | av.Packet]:
        errors = 0
        # (frames FFmpeg numbers itself, at a guessed rate: not the camera's times)
        untimed = bool(container.format.flags & av.format.Flags.no_timestamps.value)
        packets = container.demux(stream, *(container.streams[i] for i in self._audio))
        # Sound read while the connection's first frame is still in the decoder: placed once that frame sets the clock.
        early: deque[av.Packet] = deque(maxlen=256)
        while True:
            asked = time.monotonic()
            try:
                packet = next(packets)
            except (StopIteration, NEW_STREAM_AT_END):
                return
            except av.ExitError:  # PyAV's read timeout interrupted FFmpeg
                raise MediaError(f"no data for {self.options.timeout:g} s") from None
            stalled = time.monotonic() - asked >= self.options.timeout
            self._last_data = asked if stalled else time.monotonic()
            self._read_waited = self._last_data - asked >= _WAITED_S
            if packet.stream.index in self._audio:
                if packet.size and self._anchor is None:
                    early.append(packet)
                elif packet.size:
                    yield from self._sound(packet)
                if stalled:
                    raise MediaError(f"no data for {self.options.timeout:g} s")
                continue
            try:
                frames = packet.decode()
                errors = 0
            except av.InvalidDataError:  # a lost packet on the network: skip it, keep the connection
                self.corrupt += 1
                errors += 1
                if errors >= _MAX_DECODE_ERRORS:
                    raise MediaError("too many undecodable packets") from None
                frames = []
            for frame in frames:
                yield self._restamp(to_planar(frame), None if untimed else stream.time_base)
                while early and self._anchor is not None:  # (a first picture without a timestamp sets no clock)
                    yield from self._sound(early.popleft())
            if stalled:  # this packet was held back until the read timed out
                raise MediaError(f"no data for {self.options.timeout:g} s")

    def _sound(self, packet: av.Packet) -> Iterator[av.Packet]:
        """An audio packet of this connection as outputs take it, on the output clock; nothing if it has no place."""
        if self._restamp_audio(packet):
            template = self._audio[packet.stream.index]
            for raw in self._raw(packet):
                raw.stream = template
                yield raw

    def _restamp(self, frame: av.VideoFrame, time_base: Fraction | None) -> av.VideoFrame:
        arrival = time.monotonic()
        if self._last_pts is None:  # the clock (and --duration) starts with the first frame, not the dialling
            self._clock_start = arrival
        wall = round((arrival - self._clock_start) / LIVE_TIME_BASE)
        src = None if frame.pts is None or time_base is None else round(frame.pts * time_base / LIVE_TIME_BASE)
        step = round(1 / (self._stream.average_rate or 25) / LIVE_TIME_BASE)
        if src is None:
            pts = self._paced(wall, step)
        else:
            if self._anchor is None:
                # The connection's first frame: by the real time since the last one (FFmpeg's probe of a connection
                # delays its first frame alike); a reconnection's, by the lost connection's least late frame (its
                # last ones came out late, when the loss was seen), so the outage is a gap as long as it was.
                paced = wall if self._last_pts is None else self._last_pts + max(wall - self._last_wall, step)
                if self._lag_before is not None:
                    paced = max(self._last_pts + step, wall - self._lag_before)
                self._anchor = (src, paced)
            pts = self._anchor[1] + src - self._anchor[0]
            # The camera's clock jumped back, or forward by more than the time that passed (a restart, a clock
            # set): go on from the last frame, so the recording shows neither a rewind nor a false gap. A loss of
            # data shorter than a stall is no jump: the time it took passed for us too, and shows as a gap.
            ahead = bool(self._lags) and wall - pts < min(self._lags) - self._jump
            if self._last_pts is not None and (pts <= self._last_pts or ahead):
                self._anchor = (src, self._last_pts + step)
                pts = self._last_pts + step
        self._last_pts, self._last_wall = pts, wall
        self._lags.append(wall - pts)
        if self._begun is None:
            self._begun = pts
        frame.pts, frame.time_base = pts, LIVE_TIME_BASE
        self._arrivals[pts] = arrival
        if len(self._arrivals) > 4096:
            self._arrivals.popitem(last=False)
        return frame

    def _paced(self, wall: int, step: int) -> int:
        """The output time of a frame without a timestamp that arrived at ``wall`` (``step``: the stream's stated
        frame interval, the first guess of the interval between arrivals)."""
        if self._last_pts is None:
            return wall
        since = wall - self._last_wall
        if since > self._gap:  # after a loss, the camera's rate is measured afresh
            self._arrived.clear()
        if self._arrived or self._read_waited:
            self._arrived.append(wall)
        arrived = len(self._arrived)
        interval = step if arrived < 2 else (self._arrived[-1] - self._arrived[0]) / (arrived - 1)
        expected = self._last_pts + interval
        late = wall - expected
        if late > self._gap:  # after a loss (or a reconnection): the gap is in the timeline
            return wall
        return max(self._last_pts + 1, round(expected + late / _STEER))

    def _reason(self, exc: BaseException) -> str:
        """Why ``exc`` happened, without the URL FFmpeg appends (our messages name the stream, masked)."""
        return getattr(exc, "strerror", None) or mask(str(exc), self.url) or type(exc).__name__

    def arrival(self, pts: int) -> float | None:
        """When the frame with this output pts was decoded (``time.monotonic()``), if it is recent."""
        return self._arrivals.get(pts)

    def __iter__(self) -> Iterator[av.VideoFrame | av.Packet]:
        with self._reading:
            try:
                yield from self._read()
            finally:
                if self._closing:  # (``close`` came from another thread meanwhile, and left the connection to this one)
                    self._let_go()

    def _read(self) -> Iterator[av.VideoFrame | av.Packet]:
        count = 0
        pending: av.VideoFrame | av.Packet | None = self._first
        try:
            while not self._stop.is_set():
                if pending is None:
                    try:
                        pending = self._ahead.popleft() if self._ahead else next(self._frames)
                    except (StopIteration, av.FFmpegError, OSError, MediaError) as exc:
                        reason = "end of stream" if isinstance(exc, StopIteration) else self._reason(exc)
                        pending = self._reconnect(reason)
                        continue
                if isinstance(pending, av.Packet):
                    yield pending
                    pending = None
                    continue
                if self.duration is not None and pending.pts * LIVE_TIME_BASE >= self.duration:
                    return  # the run's video is [0, duration): no frame (nor a segment of one) at its end
                self.received += 1
                yield pending
                pending = None
                count += 1
                if self.max_frames is not None and count >= self.max_frames:
                    return
                if self._time_left() <= 0:
                    return
        except Stopped:
            return

    def stop(self) -> None:
        """Ask the reader to finish (thread-safe). A backoff wait ends at once; a read in progress ends with its
        next frame or its timeout (closing the container from this thread could free it under the reader)."""
        self._stop.set()

    def _close_container(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except av.FFmpegError:
                pass
            self._container = None

    def close(self) -> None:
        """Let go of the connection. Called while another thread reads it (in FFmpeg, which may be dialling a camera
        that does not answer, for up to twice the connect timeout: nothing interrupts that), it only asks the reader
        to finish, and the reader lets go of the connection when it does: closing it from here could free it under
        the reader."""
        self._closing = True
        self._stop.set()
        if self._reading.acquire(blocking=False):
            try:
                self._let_go()
            finally:
                self._reading.release()

    def _let_go(self) -> None:
        self._close_container()
        self._stream = self._frames = None  # (the decoder goes with the last reference to them)
        if self._holder is not None:
            self._holder.close()
            self._holder = None

    def __enter__(self) -> "LiveSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Stopped(Exception):
    """``stop()`` was called while the source waited or connected (outside the source: before it first connected)."""

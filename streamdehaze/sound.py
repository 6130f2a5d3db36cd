"""Sound written otherwise than it came: encoded again where the output's format cannot hold it as it is
(``Reencoded``), or copied packet for packet and watched for a change of rate or layout that the output's header
cannot follow (``CopiedSound``). ``sinks.VideoSink`` puts them in its output."""

from __future__ import annotations

import logging
import re
from fractions import Fraction

import av
import numpy as np
from av.bitstream import BitStreamFilterContext

from .formats import audio_rates, reencoding_codecs
from .sources import adts_configuration, packet_start

log = logging.getLogger("streamdehaze")

UNORDERED = re.compile(r"\d+ channels")  # FFmpeg's name for a channel layout in no stated order


def _decoder(src: av.stream.Stream) -> av.CodecContext:
    """A decoder of its own for ``src``'s sound (the input's decodes nothing: its packets are copied)."""
    given = src.codec_context
    decoder = av.CodecContext.create(given.name, "r")
    decoder.sample_rate, decoder.layout = given.sample_rate, given.layout
    if given.extradata:
        decoder.extradata = given.extradata
    return decoder


class Reencoded:
    """Sound the output's format cannot hold as it is (G.711 in MP4, PCM or FLAC in MPEG-TS), decoded and encoded
    again in ``codec``, as FFmpeg's own tools do when not told to copy; downmixed to stereo (``downmixed``) where
    the encoder takes fewer channels (MP2: two). Sound that goes on in another rate or layout (a recorder's, files
    joined) is converted back to the one it began in first: the resampler and the encoder are set up for that one.
    Raises ``av.FFmpegError`` or ``ValueError`` before it adds its stream to ``container`` where it cannot be done
    (another codec may then be tried). ``into``: the output's stream to write to instead of a stream of its own
    (a copy of the sound, from where it changed format, ``CopiedSound``)."""

    def __init__(self, container: av.container.OutputContainer, src: av.stream.Stream, codec: str,
                 into: av.AudioStream | None = None) -> None:
        given = src.codec_context
        self.decoder = _decoder(src)
        rates = audio_rates(container.format.name, codec)
        rate = given.sample_rate if not rates or given.sample_rate in rates else \
            min(rates, key=lambda r: (r < given.sample_rate, abs(r - given.sample_rate)))
        # The input's layout, else FFmpeg's usual one for as many channels (an encoder wants the channels in a stated
        # order, which AVI and WAV do not give; libopus takes 5.1, not 5.1(side)).
        channels = given.layout.nb_channels
        layouts = ([] if UNORDERED.fullmatch(given.layout.name) else [given.layout.name]) + [f"{channels}c"]
        # (more channels than the encoder takes: the resampler mixes them down to stereo)
        layout = _opening_layout(codec, rate, layouts + (["stereo"] if channels > 2 else []))
        self.downmixed = av.AudioLayout(layout).nb_channels < channels
        if into is None:
            self.stream = container.add_stream(codec, rate=rate, layout=layout)
            self.encoder = self.stream.codec_context
        else:
            self.stream, self.encoder = into, av.CodecContext.create(codec, "w")
            self.encoder.sample_rate, self.encoder.layout = rate, layout
            self.encoder.format, self.encoder.time_base = self.encoder.codec.audio_formats[0], Fraction(1, rate)
        self.encoder.open()
        self.resampler = av.AudioResampler(format=self.encoder.codec.audio_formats[0].name, layout=layout, rate=rate,
                                           frame_size=self.encoder.frame_size or None)
        self._time_base: Fraction | None = None  # the packets' (a decoder's last frames come with none)
        self._first: tuple[int, str, str] | None = None  # the sound's first format, the resampler's
        self._back: av.AudioResampler | None = None  # from the format it went on in to the first
        self._back_from: tuple[int, str, str] | None = None
        self._next: int | None = None  # where the last frame given to the resampler ends (``_time_base``)

    def packets(self, packet: av.Packet | None) -> list[av.Packet]:
        """What ``packet`` of the sound as it came is in the new codec (None: what is left at the end)."""
        return self.encoded(self.decoder.decode(packet), packet)

    def encoded(self, decoded: list[av.AudioFrame], packet: av.Packet | None) -> list[av.Packet]:
        """``decoded``, the frames of ``packet`` (None: the last ones), in the new codec."""
        if packet is not None:
            self._time_base = packet.time_base
        frames: list = []
        for frame in decoded:
            frame.time_base = self._time_base
            if (frame := _from_zero(frame)) is None:
                continue
            for first in self._as_first(frame):
                if first.pts is not None and self._next is not None and first.pts < self._next:
                    first.pts = self._next  # (a resampler's delay where the format changed: the encoder wants order)
                if first.pts is not None:
                    self._next = first.pts + round(Fraction(first.samples, first.sample_rate) / self._time_base)
                frames.extend(self.resampler.resample(first))
        if packet is None:
            frames.extend(self.resampler.resample(None))
        out = [p for frame in frames for p in self.encoder.encode(frame)]
        out += self.encoder.encode(None) if packet is None else []
        for p in out:
            p.stream = self.stream
        return out

    def _as_first(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        """``frame`` in the sound's first format: FFmpeg's resampler refuses any other after its first frame (and
        a new one would end its frame of ``frame_size`` samples short, which no encoder takes mid-stream)."""
        found = frame.sample_rate, frame.layout.name, frame.format.name
        self._first = self._first or found
        if found == self._first:
            return [frame]
        if found != self._back_from:
            rate, layout, fmt = self._first
            self._back, self._back_from = av.AudioResampler(format=fmt, layout=layout, rate=rate), found
        back = self._back.resample(frame)
        for converted in back:  # (in the time base the first resampler was set up with)
            if converted.pts is not None and self._time_base:
                converted.pts = round(converted.pts * converted.time_base / self._time_base)
            converted.time_base = self._time_base
        return back


def _from_zero(frame: av.AudioFrame) -> av.AudioFrame | None:
    """``frame`` without what comes before time 0 (an MP3's or AC-3's priming, which players never play; None if
    that is all of it): a muxer that takes no time below 0 (WebM, Ogg) moved every stream later by it."""
    if frame.pts is None or frame.pts >= 0 or not frame.time_base:
        return frame
    before = round(-frame.pts * frame.time_base * frame.sample_rate)
    if before >= frame.samples:
        return None
    samples = frame.to_ndarray()  # (planar: a row a channel; packed: one row, the channels interleaved)
    step = 1 if frame.format.is_planar else frame.layout.nb_channels
    cut = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, before * step:]), format=frame.format.name,
                                     layout=frame.layout.name)
    cut.sample_rate, cut.pts, cut.time_base = frame.sample_rate, 0, frame.time_base
    return cut


class CopiedSound:
    """Sound copied packet for packet into a format whose header states its rate and channels once for all (MP4,
    Matroska, MOV, FLV, RTSP). Each packet is decoded on the side too (AAC: about 25 ms a minute of sound), to see
    the sound go on in another rate or layout (a recorder or camera reconfigured, files joined), which a player
    would play at the header's: 48 kHz read as 44.1 plays 9 % slow and drifts from the picture. From there on it is
    encoded again in its first format (``Reencoded``), with a warning; where its codec has no encoder it is left out
    from there, as a camera's sound that comes back in another codec after a reconnection is."""

    def __init__(self, container: av.container.OutputContainer, src: av.stream.Stream, stream: av.AudioStream,
                 name: str) -> None:
        self.container, self.src, self.stream, self.name = container, src, stream, name
        self.decoder = _decoder(src)
        # AAC from MPEG-TS (ADTS) states its configuration in every packet and the output once, in its header: made
        # raw here as the muxer would make it, so that sound encoded again, raw, can follow it.
        given = src.codec_context
        self._adts = RawAAC(src) if given.name == "aac" and not given.extradata else None
        # Where the input's header states the format (raw AAC in MP4), only a packet that states another itself (a
        # camera's ADTS, ``live.py``) changes it: another found in any other is damage the decoder read as sound.
        self._stated_once = bool(given.extradata)
        self.again: Reencoded | None = None  # from the change of format on
        self.left_out = False  # from the change on, where it cannot be encoded again
        self._first: tuple[int, str] | None = None  # the rate and layout the sound began in
        self._end: Fraction | None = None  # where the sound copied so far ends, in seconds

    def packets(self, packet: av.Packet | None) -> list[av.Packet]:
        """``packet`` as it is, or its sound encoded again once the format changed (None: what is left at the
        end)."""
        if self.again is not None:
            return self._after_copies(self.again.packets(packet))
        if packet is None and self._adts is not None and self._adts.damaged > 1:
            log.warning("audio stream #%d: %d damaged packets left out in all", self.src.index, self._adts.damaged)
        if packet is None or self.left_out:
            return []
        try:
            frames = self.decoder.decode(packet)
        except av.FFmpegError:  # (damaged: copied as it is, as any other packet)
            frames = []
        formats = [(f.sample_rate, f.layout.name) for f in frames]
        self._first = self._first or next(iter(formats), None)
        new = next((f for f, found in zip(frames, formats) if found != self._first), None)
        if new is not None and (not self._stated_once or adts_configuration(packet) is not None):
            return self._changed(frames, packet, new)
        start = packet_start(packet)
        length = packet.duration * packet.time_base if packet.duration else \
            sum(Fraction(f.samples, f.sample_rate) for f in frames)
        if start is not None:
            self._end = start + length
        time_base = packet.time_base  # (the filter takes the packet)
        copied = self._adts(packet) if self._adts is not None else [packet]
        if not copied and self._adts.damaged == 1:
            log.warning("audio stream #%d: a damaged packet at %.2f s left out", self.src.index, float(start or 0))
        for raw in copied:
            raw.stream, raw.time_base = self.stream, time_base
        return copied

    def _changed(self, frames: list[av.AudioFrame], packet: av.Packet, new: av.AudioFrame) -> list[av.Packet]:
        at = float(packet_start(packet) or 0)
        change = f"audio stream #{self.src.index} went on at {new.sample_rate} Hz {new.layout.name} at {at:.1f} s, " \
                 f"which {self.name} cannot follow"
        try:
            codec = self.src.codec_context.codec.canonical_name
            self.again = Reencoded(self.container, self.src, codec, into=self.stream)
        except (av.FFmpegError, ValueError):  # (no encoder for its codec here)
            log.warning("%s: left out from there", change)
            self.left_out = True
            return []
        self.again.decoder = self.decoder  # (its state: the frames decoded so far)
        encoder = self.again.encoder
        log.warning("%s: encoded again from there, as %d Hz %s", change, encoder.sample_rate, encoder.layout.name)
        return self._after_copies(self.again.encoded(frames, packet))

    def _after_copies(self, packets: list[av.Packet]) -> list[av.Packet]:
        """Leave out an encoded packet that would mostly cover sound already copied: an encoder's first packet,
        its priming (1024 samples of AAC ahead of its first), would come before the last copied one."""
        if self._end is None:
            return packets
        kept = [p for p in packets if p.pts is None or (p.pts + (p.duration or 0) / 2) * p.time_base > self._end]
        if kept:
            self._end = None  # (all the later ones come after it)
        return kept


class RawAAC:
    """AAC in ADTS (from MPEG-TS, a camera) made raw, as MP4, Matroska and RTSP take it (FFmpeg's aac_adtstoasc). A
    packet whose header is damaged is left out and counted (``damaged``), as FFmpeg's tools go on past it: the
    filter refuses it, or reads it as data and leaves the next header in, which the MP4 muxer refuses (and, for a
    first packet, every packet after it). What such a packet carried (the configuration, with the first) goes
    with the next packet kept."""

    def __init__(self, src: av.stream.Stream | None = None) -> None:
        """``src``: the input's stream; None for a camera's, whose stream a reconnection replaces."""
        self._filter = BitStreamFilterContext("aac_adtstoasc", in_stream=src) if src is not None else \
            BitStreamFilterContext("aac_adtstoasc", "aac")
        self.damaged = 0
        self._side_data: list = []

    def __call__(self, packet: av.Packet) -> list[av.Packet]:
        try:
            filtered = self._filter.filter(packet)
        except av.FFmpegError:
            filtered = []
        raw = []
        for p in filtered:
            # (an ADTS sync word, which raw AAC never starts with)
            if bytes(memoryview(p)[:2]) in (b"\xff\xf0", b"\xff\xf1"):
                self._side_data += p.iter_sidedata()
                continue
            for side in self._side_data:
                p.set_sidedata(side)
            self._side_data = []
            raw.append(p)
        self.damaged += not raw
        return raw


def reencoded(container: av.container.OutputContainer, src: av.stream.Stream) -> Reencoded | None:
    """``src``'s sound encoded again in the first of the output's codecs for it that opens; None where none does."""
    for codec in reencoding_codecs(container.format.name):
        try:
            return Reencoded(container, src, codec)
        except (av.FFmpegError, ValueError):
            continue
    return None


def _opening_layout(codec: str, rate: int, layouts: list[str]) -> str:
    """The first of ``layouts`` the encoder opens with, tried on an encoder of its own: a stream added to the
    output and left half-made would fail the whole file."""
    for layout in layouts:
        probe = av.CodecContext.create(codec, "w")
        probe.sample_rate, probe.format = rate, av.Codec(codec, "w").audio_formats[0].name
        try:
            probe.layout = layout
            probe.open()
            return layout
        except (av.FFmpegError, ValueError):
            continue
    raise ValueError(f"{codec} opens with none of {layouts}")

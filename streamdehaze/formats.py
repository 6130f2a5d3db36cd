"""Output formats: the muxer that writes a target (a file by its extension, a URL by its scheme, standard output),
what each holds, and the options it is written with. Known by name before a camera is dialled or a model loaded."""

from __future__ import annotations

import functools
import io
import re
import time
from fractions import Fraction
from pathlib import Path

import av

from .errors import UsageError
from .sources import VideoInfo

# Video files by their extension: a folder's files for `batch`, and an http(s) URL that is a file, not a camera.
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts", ".m2ts", ".mpg",
                            ".mpeg", ".flv", ".wmv", ".asf", ".mxf", ".3gp", ".y4m", ".ogv"})
DIAL_TIMEOUT = 5.0  # seconds an RTSP server has to answer the dial
_URL_FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv", "srt": "mpegts", "udp": "mpegts",
                "tcp": "mpegts"}
STDOUT = "-"  # the output's name for standard output
# Files a live run can write as it goes: muxer and its options for a fragment (cluster) at least every second.
_FRAGMENTED = {"movflags": "+frag_keyframe+empty_moov+default_base_moof", "frag_duration": "1000000"}
# A file run's segments, written so too: a file's encoder has B-frames (a camera's, zerolatency, has none), whose delay
# needs an edit list, which an index written before the first fragment cannot hold (every frame came 2 frames late).
# The index is written with the first fragment instead.
_FILE_FRAGMENTED = {**_FRAGMENTED, "movflags": "+frag_keyframe+delay_moov+default_base_moof"}
LIVE_FILES = {".mp4": ("mp4", _FRAGMENTED), ".mov": ("mov", _FRAGMENTED),
              ".mkv": ("matroska", {"cluster_time_limit": "1000"}), ".ts": ("mpegts", {})}
FRAGMENTED = frozenset(muxer for muxer, options in LIVE_FILES.values() if options is _FRAGMENTED)  # (``fragments.py``)
HLS = ".m3u8"  # an HLS playlist, with its MPEG-TS segments beside it (``hls_options``)
# A camera's: a sliding window of 6 segments of 2 s, the older ones deleted; a file's: every segment, of 6 s.
_HLS_LIVE = {"hls_time": "2", "hls_list_size": "6",
             "hls_flags": "delete_segments+independent_segments+temp_file+program_date_time"}
_HLS_FILE = {"hls_time": "6", "hls_list_size": "0", "hls_playlist_type": "event",
             "hls_flags": "independent_segments+temp_file"}


# Muxers that give no list of the codecs they take: FFmpeg answers "unknown" for all but their defaults, which
# PyAV's supported_codecs leaves out. MPEG-TS takes AAC, MP3, AC-3, Opus and more; of subtitles only the broadcast
# kinds (others it would store as unnamed data).
_TAKES_ANY = {"mpegts"}
# The video MPEG-TS has a stream type for: it stores any other (VP9, AV1, FFV1) as data, no video to a player.
_TS_VIDEO = {"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4", "vc1", "dirac", "cavs"}
_TS_SUBTITLES = {"dvb_subtitle", "dvb_teletext"}
# The audio MPEG-TS has a stream type for; anything else (PCM, FLAC) it stores as data no player plays.
_TS_AUDIO = {"mp2", "mp3", "aac", "aac_latm", "ac3", "eac3", "dts", "truehd", "opus", "s302m"}


def _segments_of(muxer: str) -> str:
    """The muxer whose rules hold for what ``muxer`` writes: an HLS playlist's segments are MPEG-TS. (The HLS muxer
    itself must not be tried in memory: it writes its segments to files of its own.)"""
    return "mpegts" if muxer == "hls" else muxer


@functools.lru_cache(maxsize=None)
def _codecs(muxer: str) -> frozenset[str]:
    """The codecs a muxer says it can store."""
    with av.open(io.BytesIO(), "w", format=muxer) as probe:
        codecs = frozenset(probe.supported_codecs)
    # FFmpeg's Ogg muxers keep no list: they name their default codecs only, and hold these
    return codecs | _OGG if muxer in ("ogg", "ogv", "oga") else codecs


_OGG = frozenset({"opus", "libopus", "vorbis", "libvorbis", "flac", "speex", "theora", "vp8"})


# Muxers that write a display matrix (a phone's rotation tag) which FFmpeg reads back; MPEG-TS, FLV, AVI write none.
_MP4_FAMILY = {"mp4", "mov", "ipod", "3gp", "3g2", "ismv", "psp", "f4v"}
HOLDS_ROTATION = _MP4_FAMILY | {"matroska", "webm"}


# Muxers that store one time per frame, its place in decoding order (AVI a frame a tick, no time at all): frames an
# encoder sends ahead of those shown before them (B-frames) read back with each other's times, 1, 3, 2, 4. Found by
# writing libx264's B-frames to each; MP4, MOV, Matroska, MPEG-TS, FLV and NUT keep both times.
NO_REORDERING = {"avi", "asf", "mxf", "mxf_opatom"}


# Where a pixel's shape (an anamorphic picture's) is written: MP4 and MOV state it themselves (their 'pasp'), these
# codecs in their own headers. Matroska states it from a field PyAV cannot set, so VP9, AV1 or FFV1 there lose it.
STATES_PIXEL_ASPECT = _MP4_FAMILY
PIXEL_ASPECT_CODECS = {"h264", "hevc", "mpeg2video", "mpeg4", "mpeg1video", "mjpeg"}


# Encoders for sound a format cannot hold as it is, by preference, with their codec's name.
_REENCODERS = (("aac", "aac"), ("libopus", "opus"), ("mp2", "mp2"), ("ac3", "ac3"))
# FFmpeg's MXF muxer holds none of those, only PCM, and that at 48 kHz alone (any other rate fails the header).
_PCM_ONLY = {"mxf": (48000,)}


def reencoding_codecs(muxer: str) -> list[str]:
    """The codecs sound is encoded in for ``muxer`` when it cannot hold the input's, by preference: AAC, else Opus
    (WebM, Ogg), else MP2 or AC-3 (MPEG-PS: .mpg, .vob); 16-bit PCM for MXF. Empty where there is none."""
    muxer = _segments_of(muxer)
    if muxer in _TAKES_ANY or muxer == "rtsp":
        return ["aac"]
    if muxer in _PCM_ONLY:
        return ["pcm_s16le"]
    return [c for c, name in _REENCODERS if c in av.codecs_available and name in _codecs(muxer)]


def audio_rates(muxer: str, codec: str) -> tuple[int, ...] | None:
    """The sample rates ``codec``'s sound can be written at into ``muxer`` (None: any)."""
    return _PCM_ONLY.get(muxer) or av.Codec(codec, "w").audio_rates


def _header_takes(muxer: str, src: av.stream.Stream) -> bool:
    """Whether ``muxer`` writes a header with a copy of ``src``: some refuse a codec they list (Opus, FLAC in
    MOV), and would fail the run at its first packet."""
    try:
        with av.open(io.BytesIO(), "w", format=muxer) as probe:
            probe.add_stream_from_template(src)
            probe.start_encoding()
        return True
    except (av.FFmpegError, ValueError):
        return False


def holds_copy(muxer: str, src: av.stream.Stream) -> bool:
    """Whether ``muxer`` can store a copy of ``src`` (audio, subtitles, data, an attachment) as it is."""
    # (the codec's name, not its decoder's: mp3, not mp3float; data streams have none)
    name = src.codec_context.codec.canonical_name if src.codec_context is not None else src.name
    muxer = _segments_of(muxer)
    if src.type == "attachment":
        return muxer == "matroska"  # (WebM, MP4, MPEG-TS have no place for a file)
    if muxer in _TAKES_ANY:
        return {"subtitle": name in _TS_SUBTITLES, "audio": name in _TS_AUDIO}.get(src.type, True)
    if muxer == "rtsp":  # each stream goes out over RTP, which a probe can write (RTSP needs a server)
        return _header_takes("rtp", src)
    if src.type == "data":  # (no muxer lists data codecs, though MP4 and MOV keep a GoPro's GPMF, bin_data)
        return _keeps_data(muxer, src)
    return name in _codecs(muxer) and _header_takes(muxer, src)


def _keeps_data(muxer: str, src: av.stream.Stream) -> bool:
    """Whether ``muxer`` stores a data stream that reads back as what it was: a packet written and read back. A
    header is not enough: MOV takes a drone's KLV, and stores it as data FFmpeg can no longer name."""
    written = io.BytesIO()
    try:
        with av.open(written, "w", format=muxer) as probe:
            packet = av.Packet(b"\0")
            packet.stream = probe.add_stream_from_template(src)
            packet.time_base, packet.pts, packet.dts = src.time_base or Fraction(1, 1000), 0, 0
            probe.mux(packet)
        with av.open(io.BytesIO(written.getvalue())) as back:
            return any(s.type == "data" and s.name == src.name for s in back.streams)
    except (av.FFmpegError, ValueError, OSError):
        return False


# Encoders for a format that cannot hold H.264, in order of preference (WebM: VP9; a raw .hevc stream: x265).
_NOT_H264 = ("libvpx-vp9", "libsvtav1", "libaom-av1", "libvpx", "libx265")
# The encoders a refusal names, where the output holds their video.
_SUGGESTED = ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1", "libvpx", "ffv1", "prores_ks",
              "mpeg2video", "mpeg1video", "mpeg4", "libtheora")

# Muxers that answer "unknown" for most codecs, so that a stream of any is added, yet write only these videos:
# any other fails at the header, after the model has loaded (Ogg, MXF, y4m), or (MPEG-PS: .mpg, .vob) makes a
# file no player reads. Known by name before a camera is dialled; the trial write (``trial.py``) catches the rest.
_PS_VIDEO = frozenset({"mpeg1video", "mpeg2video", "h264", "hevc", "mpeg4"})
_VIDEO_ONLY = {
    "mpegts": _TS_VIDEO, "ogg": {"theora", "vp8"}, "ogv": {"theora", "vp8"},
    "mpeg": _PS_VIDEO, "vob": _PS_VIDEO, "svcd": _PS_VIDEO, "dvd": _PS_VIDEO, "vcd": _PS_VIDEO,
    "mxf": {"mpeg2video", "h264", "prores", "dnxhd", "jpeg2000", "ffv1", "dvvideo"},
    "yuv4mpegpipe": frozenset(),  # raw pictures, which streamdehaze does not write
}
# Muxers that list these codecs and refuse them in the header (VP9 in MOV: "only supported in MP4").
_VIDEO_REFUSED = {"mov": {"vp8", "vp9", "av1"}, "ismv": {"vp8", "vp9", "av1"}, "flv": {"mpeg4"}}


def output_muxer(target: str) -> str:
    """The muxer that writes ``target``: a file (or its segments), a URL or standard output."""
    fmt = url_format(target)
    if fmt is not None:
        return fmt
    path = Path(target)
    return LIVE_FILES[path.suffix.lower()][0] if path.suffix.lower() in LIVE_FILES else _muxer_for(path)


def _holds(muxer: str, codec: str, probe: bool = True) -> bool:
    """Whether ``muxer`` holds ``codec``'s video (a codec's name: h264, vp9): by the rules above, else by the codecs
    it lists, else (``probe``) by FFmpeg's answer to a stream added: PyAV refuses only what a muxer says it cannot
    hold, and takes what it says "unknown" of."""
    muxer = _segments_of(muxer)
    if muxer in _VIDEO_ONLY:
        return codec in _VIDEO_ONLY[muxer]
    if codec in _VIDEO_REFUSED.get(muxer, ()):
        return False
    if codec in _codecs(muxer) or not probe:
        return codec in _codecs(muxer)
    try:
        with av.open(io.BytesIO(), "w", format=muxer) as empty:
            empty.add_stream(codec)
        return True
    except ValueError:
        return False


def held(encoders: tuple[str, ...], muxer: str) -> list[str]:
    """Those of ``encoders`` that this FFmpeg has and whose codec ``muxer`` holds, by name."""
    return [e for e in encoders if e in av.codecs_available
            and _holds(muxer, av.Codec(e, "w").canonical_name, probe=False)]


def default_encoder(muxer: str) -> str:
    """libx264, unless ``muxer`` cannot hold H.264: then the first of ``_NOT_H264`` that it holds."""
    if _holds(muxer, "h264", probe=False):
        return "libx264"
    return next(iter(held(_NOT_H264, muxer)), "libx264")


def refusal(muxer: str, codec: str, name: str, why: str = "") -> UsageError:
    """The error for an output ``name`` that ``muxer`` cannot hold in ``codec`` (or, ``why``, that FFmpeg fails to
    write so), naming the encoders it takes."""
    fit = [e for e in held(_SUGGESTED, muxer) if e != codec]  # (not the one refused: FFmpeg failed it)
    return UsageError(f"{name} ({muxer}) " + (f"cannot be written with {codec}: {why}" if why else
                                              f"cannot hold {codec} video")
                      + (f"; encoders it takes: {', '.join(fit)}" if fit else
                         ", nor any other this writes: name a .mp4, .mkv, .mov, .webm or .ts output"))


def check_encoder_fits(muxer: str, codec: str, name: str) -> None:
    """A UsageError, naming encoders that would do, where ``muxer`` cannot hold ``codec``'s video (WebM and
    H.264, MP4 and ProRes, Ogg and H.264): found out before a camera is dialled or a model loaded."""
    if muxer != "rtsp" and not _holds(muxer, av.Codec(codec, "w").canonical_name):  # (RTSP opens a connection)
        raise refusal(muxer, codec, name)


def url_format(target: str) -> str | None:
    """The muxer for a network target (``rtsp://...``) or standard output (``-``: MPEG-TS, which a pipe carries
    to any player or FFmpeg), or None for a file path."""
    if target == STDOUT:
        return "mpegts"
    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    return _URL_FORMATS.get(scheme)


def segment_pattern(path: Path) -> Path:
    """``out.mp4`` -> ``out_00000.mp4``-style names for segments (a name with a % pattern is kept)."""
    return path if "%" in path.name else path.with_name(f"{path.stem}_%05d{path.suffix}")


# A segment name's directives: one %d (%05d) numbers the segments; strftime's (cam_%Y-%m-%d_%H-%M-%S.mp4) name
# each by the local time it begins, as FFmpeg's segment muxer does with -strftime 1.
_DIRECTIVE = re.compile(r"%(0?\d*)([a-zA-Z%])")
_TIME_DIRECTIVES = set("aAbBdeFHIjmMpsSTyYzZ")


def timed_segments(pattern: Path) -> bool:
    """Whether ``pattern`` names segments by the time they begin (strftime's directives) rather than by number (one
    %d); a ``UsageError`` for a name that is neither."""
    found = [(width, kind) for width, kind in _DIRECTIVE.findall(pattern.name) if kind != "%"]
    if len(found) == 1 and found[0][1] == "d":
        return False
    if any(kind != "d" for _, kind in found) and all(not width and kind in _TIME_DIRECTIVES for width, kind in found):
        return True
    raise UsageError(f"segment names {pattern.name}: give either one %d (numbered, %05d: 00000, 00001, ...) or "
                     "strftime's %Y %m %d %H %M %S (named by the time each begins)")


def segment_at(pattern: Path, when: float) -> Path:
    """The name ``pattern`` (``timed_segments``) gives a segment that begins at ``when`` (Unix time), in local time."""
    return pattern.with_name(time.strftime(pattern.name, time.localtime(when)))


def segment_example(path: Path) -> Path:
    """A name the segments of output ``path`` get (its pattern itself, where they are numbered), for checks."""
    pattern = segment_pattern(path)
    return segment_at(pattern, time.time()) if timed_segments(pattern) else pattern


def segment_names(pattern: str) -> str:
    """A regular expression for the names a segment pattern gives (numbered or timed); of a name that is no
    pattern (``100%.mp4``), that name."""
    def directive(m: re.Match) -> str:
        width, kind = m.groups()
        if kind == "%":
            return "%"
        return r"\d{%s,}" % (width or 1) if kind == "d" and not timed else r"[^/]+?"
    try:
        timed = timed_segments(Path(pattern))
    except UsageError:
        return re.escape(pattern)
    return _DIRECTIVE.sub(directive, re.escape(pattern))


def check_live_file(path: Path) -> None:
    """A live recording is written as it goes, which takes one of the formats in LIVE_FILES (or an HLS playlist)."""
    if path.suffix.lower() not in LIVE_FILES and path.suffix.lower() != HLS:
        raise UsageError(f"a live recording is written as it goes, so it needs a file ending in "
                         f"{', '.join(LIVE_FILES)} (or {HLS}, HLS), not {path.name}")


def hls_options(playlist: Path, live: bool) -> dict[str, str]:
    """The HLS muxer's options for ``playlist``: its segments ``NAME_N.ts`` beside it, numbered from the time the run
    began, in microseconds (a run after another writes no segment of its names: in seconds, a file's run that wrote
    more than a segment a second had its later ones written over by the next run); the playlist is rewritten whole
    (a temporary file, renamed) as each segment is complete: a file's as an event playlist, ended with the run (a
    video-on-demand one is written only at the end, and a kill left segments and no playlist)."""
    segments = playlist.with_name(f"{playlist.stem}_%d.ts")
    return {**(_HLS_LIVE if live else _HLS_FILE), "hls_segment_filename": str(segments),
            "hls_start_number_source": "epoch_us"}


def check_segments(path: Path) -> None:
    """Segments are written as they go, in one of the formats in LIVE_FILES, under names numbered or timed."""
    if path.suffix.lower() not in LIVE_FILES:
        raise UsageError(f"--segment-time needs an output ending in {', '.join(LIVE_FILES)}")
    timed_segments(segment_pattern(path))


# A tag named as a reverse domain (com.apple.quicktime.make, com.android.version): a phone's or an app's own.
_REVERSE_DNS = re.compile(r"[a-z][a-z0-9-]*(\.[\w-]+){2,}", re.IGNORECASE)


def output_options(target: str, shown_as: Path | None = None, live: bool = False, *,
                   tags: dict[str, str] | None = None, as_it_goes: bool = False) -> tuple[str, dict[str, str]]:
    """The muxer that writes ``target`` (a file named ``shown_as``: a temporary file's name says nothing) and its
    options; a live run's file, and any ``as_it_goes`` (a file run's segment), is written as it goes, each fragment
    handed to the kernel at once. ``tags``: the input's, which the output keeps."""
    fmt, options = url_format(target), {}
    if fmt == "rtsp":
        # Its socket timeout bounds the dial: PyAV holds the GIL through it, so the whole process waits.
        options = {"rtsp_transport": "tcp", "timeout": str(int(DIAL_TIMEOUT * 1e6))}
    elif fmt is None:
        shown_as = shown_as or Path(target)
        if live:
            check_live_file(shown_as)
        fmt = output_muxer(str(shown_as))
        fragments = LIVE_FILES.get(shown_as.suffix.lower(), (None, {}))[1]
        fragments = _FILE_FRAGMENTED if fragments is _FRAGMENTED and not live else fragments
        options = {**fragments, "flush_packets": "1"} if live or as_it_goes else {}
        if fmt == "hls":
            options = {**options, **hls_options(shown_as, live)}
    elif target == STDOUT and live:
        options = {"flush_packets": "1"}
    if fmt in ("mpegts", "hls", "matroska"):
        # B-frames give the first packets a decode time before 0, and an AAC encoder's priming its sound a start
        # before 0 (FFmpeg's: -21 ms), which these take as they are (MPEG-TS adds a delay to every time, Matroska
        # keeps no decode times and a block's time is signed); FFmpeg would otherwise shift the whole file later.
        options = {**options, "avoid_negative_ts": "disabled"}
    if fmt in ("mp4", "mov"):
        # A stream that starts late (a cut from MPEG-TS) starts after an edit in the file's own clock, FFmpeg's in
        # milliseconds: at 90 kHz (MPEG-TS's, and a whole tick of every common frame rate) it starts where it did.
        options = {**options, "movie_timescale": "90000"}
        if any(_REVERSE_DNS.fullmatch(key) for key in tags or {}):
            # A phone's own keys (com.apple.quicktime.location.ISO6709, ...make, ...model): these muxers write any
            # other than their few known ones only in this mode, and read the known ones back the same from it.
            options = {**options, "movflags": options.get("movflags", "") + "+use_metadata_tags"}
    return fmt, options


_AVI_FINEST_RATE = 240  # ticks a second at most (every tick an index entry): a guess of a rate from jitter is no rate


def frame_ticks(codec: str, muxer: str, info: VideoInfo) -> Fraction | None:
    """The time base frames are moved onto (each to the nearest free tick) where the input's cannot be written,
    else None: the input's own, so that every pts is written exactly as it was read (variable rate included).
    AVI has a frame every tick of its time base, and fills a finer one with empty frames; MPEG-1/2 take only a
    frame rate's (FFmpeg refuses 1/12800 as "12800 fps"); MPEG-4 part 2 none finer than 1/65535 (MPEG-TS's is
    1/90000)."""
    if info.rate and muxer == "avi":
        # A variable rate's frames come closer than its average: at that rate they fell behind, one tick at a time
        # (a second behind the sound after a pause). At the rate they fall on, each has its tick.
        return 1 / max(info.rate, min(info.base_rate or 0, _AVI_FINEST_RATE))
    if info.rate and codec in ("mpeg1video", "mpeg2video"):
        return 1 / info.rate
    if info.rate and codec == "mpeg4" and info.time_base.denominator > 65535:
        # The coarsest step down that keeps frames at the input's rate exact: 1/45000 from 1/90000 at 25 fps
        # (frames at n/m fps fall on ticks of 1/d where n divides d).
        step, within = info.rate.numerator, info.time_base.denominator
        return next((Fraction(1, d) for d in range(65535 // step * step, 0, -step) if within % d == 0), 1 / info.rate)
    return None


# Muxers that write many files of their own (a manifest, and its segments): not one output a run can write whole or
# keep as it goes, nor one the trial can write in memory (FFmpeg would write the trial's segments into the working
# folder). HLS is written (``hls_options``), and tried as the MPEG-TS of its segments.
_MANY_FILES = {"dash": "a DASH manifest", "smoothstreaming": "a Smooth Streaming manifest",
               "webm_dash_manifest": "a DASH manifest", "webm_chunk": "WebM chunks", "segment": "segments",
               "stream_segment": "segments"}


def _muxer_for(path: Path) -> str:
    """FFmpeg's muxer for a file name, chosen by its extension as ``av.open`` chooses it (nothing is created)."""
    try:
        with av.open(str(path), "w") as probe:
            muxer = probe.format.name
    except ValueError:
        raise UsageError(f"cannot tell a video format from the name {path.name} (try .mp4 or .mkv)") from None
    if muxer in _MANY_FILES:
        raise UsageError(f"{path.name} would be {_MANY_FILES[muxer]}, many files, which streamdehaze does not write: "
                         f"write HLS ({HLS}), or record .ts segments with --segment-time")
    return muxer

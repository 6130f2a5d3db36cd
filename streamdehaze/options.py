"""The options of a run, as the command line spells them: the parser, and each option's check (one line and exit 2
for a mistake). ``serve`` configurations (``config.py``) take the same options by the same names."""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .defaults import HWACCEL_MODES, MODEL_NAMES, STILL_LONGER, TEMPORAL_MODES, TEMPORAL_STRENGTH
from .errors import UsageError

DAY = 86400.0
MAX_TIMEOUT = 2147.0  # FFmpeg's RTSP timeout is a 32-bit count of microseconds: longer, and no camera connects
# Segments are a recording cut into files (minutes long, kept and deleted by the hour; a short clip cut at 0.2 s):
# below 0.1 s a segment is a file for every frame or two, and a tiny length (1e-9) made the cutting spin on the exact
# fractions of its times, deaf to SIGTERM.
MIN_SEGMENT_S = 0.1


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


def named(text: str) -> str:
    """An input or output as given, refused when empty: a script's unset variable, which read as the working folder
    (every image in it dehazed)."""
    if not text:
        raise argparse.ArgumentTypeError("empty (an unset variable?)")
    return text


def named_path(text: str) -> Path:
    """``named``, as a path."""
    return Path(named(text))


def parse_command(argv: list[str]) -> tuple[str, argparse.Namespace]:
    """``argv`` parsed: ("serve" | "batch" | "file", its arguments). Light (no torch), so that ``cli.main`` answers
    --help, --version and usage errors at once, before the seconds that torch and PyAV take to load."""
    if argv[:1] == ["serve"]:  # (an input file called 'serve': ./serve)
        return "serve", serve_parser().parse_args(argv[1:])
    if argv[:1] == ["batch"]:
        return "batch", batch_parser().parse_args(argv[1:])
    return "file", build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="streamdehaze", description="Dehaze a video, an image, or a folder of images.",
               usage="%(prog)s [options] input output\n       %(prog)s batch IN_DIR OUT_DIR [options]\n"
                     "       %(prog)s serve CONFIG [options]",
               epilog="other commands:\n"
                      "  batch IN_DIR OUT_DIR  every video and image under a folder, into the same tree under "
                      "another\n                        (streamdehaze batch --help)\n"
                      "  serve CONFIG          many cameras and files in one process, from a TOML "
                      "configuration\n                        (streamdehaze serve --help)",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=named, help="video file or URL, image, or folder of images; - for standard input")
    p.add_argument("output", type=named,
                   help="video file, image, or folder (for a folder input); - for MPEG-TS on standard output")
    add_file_options(p)
    live = p.add_argument_group("live sources (rtsp://, rtmp://, srt://, udp://, http(s) streams, /dev/videoN)")
    live.add_argument("--timeout", type=seconds(MAX_TIMEOUT), default=5.0, metavar="SECONDS",
                      help="give up a read or connection attempt after this long without data (default: 5)")
    live.add_argument("--reconnect", type=_reconnects, default=math.inf, metavar="N|inf",
                      help="reconnection attempts for each failure or end of stream of the camera, and for "
                           "each loss of a server published to (default: inf)")
    live.add_argument("--rtsp-transport", default="tcp", choices=["tcp", "udp", "udp_multicast", "http", "https"],
                      help="RTSP transport (default: tcp)")
    live.add_argument("--max-latency", type=seconds(DAY), default=1.0, metavar="SECONDS",
                      help="skip frames that have waited longer than this for the model, rather than fall behind; the "
                           "model and the encoder add their own time (default: 1)")
    live.add_argument("--segment-time", type=_number(float, "a number of seconds", MIN_SEGMENT_S, DAY),
                      metavar="SECONDS",
                      help=f"split the output file into segments of about this length, {MIN_SEGMENT_S:g} s at least "
                           "(NAME_00000.mp4, ...); a new "
                           "run continues after the highest number already there; an output named with strftime's "
                           "directives (NAME_%%Y-%%m-%%d_%%H-%%M-%%S.mp4) names each by the time it begins")
    live.add_argument("--metrics-port", type=metrics_address, metavar="[HOST:]PORT",
                      help="serve Prometheus metrics on 127.0.0.1:PORT, or on HOST:PORT (0.0.0.0:PORT: every "
                           "interface, for a Prometheus on another machine or a container's published port)")
    p.add_argument("--stats-json", type=Path, metavar="FILE",
                   help="write run statistics as JSON (live sources: one JSON line a second)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary; errors only")
    p.add_argument("--version", action="version", version=f"streamdehaze {__version__}")
    return p


def serve_parser() -> argparse.ArgumentParser:
    p = Parser(prog="streamdehaze serve", description="Dehaze many streams in one process, sharing the model.")
    p.add_argument("config", type=Path, help="TOML: defaults for every stream, then [[stream]] tables")
    p.add_argument("--duration", type=seconds(math.inf), metavar="SECONDS",
                   help="stop every stream after this much wall-clock time (a stream's own duration counts seconds "
                        "of video); a file stream not done by then is cut short, its frames kept as NAME.partial.EXT, "
                        "exit 130")
    p.add_argument("--quiet", action="store_true", help="no summary; errors only")
    p.add_argument("--ray", metavar="ADDRESS|local",
                   help="spread the streams over a Ray cluster, one worker per device, balanced by each input's "
                        "load (host:port of its head; local = a Ray instance on this machine for this run)")
    p.add_argument("--workers", type=_whole(1, 4096), metavar="N",
                   help="with --ray: workers to spread the streams over (default: one per GPU, or one per two "
                        "CPUs when the cluster has no GPU)")
    return p


def batch_parser() -> argparse.ArgumentParser:
    p = Parser(prog="streamdehaze batch",
               description="Dehaze every video and image under a folder into the same tree under another. Files "
                           "whose output exists are skipped: run it again to finish an interrupted batch.")
    p.add_argument("input", type=named_path, metavar="IN_DIR",
                   help="folder of videos and images (searched recursively)")
    p.add_argument("output", type=named_path, metavar="OUT_DIR",
                   help="folder for the outputs (made if missing)")
    add_file_options(p)
    p.add_argument("--jobs", type=_whole(1, 64), metavar="N",
                   help="files at once on this machine (1 to 64), each in a worker process of its own (default: "
                        "one per CPU core on CPU, 2 on CUDA)")
    p.add_argument("--ray", metavar="ADDRESS|local",
                   help="spread the files over a Ray cluster (host:port of its head; local = a Ray instance on "
                        "this machine for this run); every node must see IN_DIR and OUT_DIR at the same paths")
    p.add_argument("--workers", type=_whole(1, 4096), metavar="N",
                   help="with --ray: engines to run, one per worker process (default: one per GPU, or one per "
                        "two CPUs when the cluster has no GPU)")
    p.add_argument("--stats-json", type=Path, metavar="FILE", help="write a JSON summary naming each file's result")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary; errors only")
    return p


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}: {text}")
        return value
    return parse


def add_file_options(p: argparse.ArgumentParser) -> None:
    """The options of a file run (model, frames, encoding, where to stop): a single run's and ``batch``'s."""
    p.add_argument("--model", default="auto",
                   help=f"dehazing model: {', '.join(MODEL_NAMES)} (default: auto = the best model shipped for the "
                        "device: KA_Net where its weights ship with the package, else dcp)")
    p.add_argument("--weights", type=Path, help="weights file for models that take them")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch", type=_number(int, "a whole number", 1, 256), metavar="N",
                   help="frames per model call, 1 to 256 (default: 4 for files, 1 for live streams)")
    p.add_argument("--infer-size", type=parse_infer_size, default="auto", metavar="N|full|auto",
                   help="run the model with the short side at N pixels (16 to 16384) and transfer the result to "
                        "full resolution by guided upsampling; full = native resolution (default: auto = per model "
                        "and device, raised so that kanet-t's transform, and any photo's, is stretched at most 4x; "
                        "dcp runs photos natively)")
    p.add_argument("--strength", type=_number(float, "a number", 0, 1), default=1.0, metavar="S",
                   help="how much of the model's correction to apply, from 0 (the input unchanged) to 1 (all of it): "
                        "lower keeps more fog and amplifies less of a noisy camera's noise (default: 1)")
    p.add_argument("--noise-floor", type=parse_noise_floor, default="auto", metavar="LEVELS|auto",
                   help="do not amplify regions whose brightness varies by no more than LEVELS (8-bit, e.g. 1): a "
                        "noisy or heavily compressed camera's grey sky stays smooth instead of showing blocks, at the "
                        "price of faint detail there; 0 is off (default: auto = up to 0.5 level where a frame shows "
                        "compression blocks, none where it does not)")
    p.add_argument("--compile", action="store_true",
                   help="compile the model with torch.compile: a slow start (a minute or more), then faster frames "
                        "where the device gains from it")
    p.add_argument("--hwaccel", default="auto", choices=HWACCEL_MODES,
                   help="NVDEC decoding and NVENC encoding: auto = when the model runs on CUDA and they work, "
                        "else software; cuda = required (default: auto)")
    p.add_argument("--temporal", default="ema", choices=TEMPORAL_MODES,
                   help="smooth flicker between frames, following the camera's motion, reset on scene cuts; static: "
                        "the same, never looking for motion (default: ema)")
    p.add_argument("--temporal-strength", type=_number(float, "a number", 0, 1, high_inclusive=False),
                   default=TEMPORAL_STRENGTH, metavar="S",
                   help=f"weight of the past in [0, 1) (default: {TEMPORAL_STRENGTH}); a camera found still averages "
                        f"{STILL_LONGER}x longer: 1 - (1 - S) / {STILL_LONGER}")
    p.add_argument("--codec", help="video encoder (default: libx264; where the output format cannot hold H.264, "
                                   "one it holds: libvpx-vp9 for .webm, libvpx (VP8) for .ogg, libx265 for .hevc)")
    p.add_argument("--crf", type=_number(int, "a whole number", -math.inf), metavar="N",
                   help="constant quality: 0-51 for x264/x265, 0-63 for libvpx-vp9 and libaom-av1, 1-63 for libsvtav1 "
                        "(default: 18)")
    p.add_argument("--preset", metavar="P",
                   help="encoder speed: x264/x265's ultrafast .. placebo, libvpx-vp9's 0 .. 8, SVT-AV1's 0 .. 13 "
                        "(default: veryfast for x264/x265, 4 for libvpx-vp9)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first corrupt packet of the input (default: skip corrupt packets and count them)")
    p.add_argument("--max-frames", type=_positive, metavar="N", help="stop after N frames")
    p.add_argument("--duration", type=seconds(math.inf), metavar="SECONDS",
                   help="stop after this much video (or live time)")


def _number(cast: Callable[[str], float], what: str, low: float, high: float = math.inf,
            low_inclusive: bool = True, high_inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type: ``cast(text)``, finite, from ``low`` to ``high`` (each bound inclusive unless told)."""
    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number: {text}")
        if value < low or (value == low and not low_inclusive):
            raise argparse.ArgumentTypeError(f"must be {'at least' if low_inclusive else 'more than'} {low:g}: {text}")
        if value > high or (value == high and not high_inclusive):
            raise argparse.ArgumentTypeError(f"must be {'at most' if high_inclusive else 'less than'} {high:g}: {text}")
        return value
    return parse


def seconds(high: float) -> Callable[[str], float]:
    return _number(float, "a number of seconds", 0, high, low_inclusive=False)


_port = _number(int, "a port number", 1, 65535)


def metrics_address(text: str) -> tuple[str, int]:
    """``PORT`` (on 127.0.0.1: nothing outside the machine sees it unless asked), ``HOST:PORT`` or
    ``[IPv6]:PORT`` -> (host, port)."""
    host, colon, port = text.rpartition(":")
    if not colon:
        return "127.0.0.1", int(_port(text))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or ":" in host and not text.startswith("["):
        raise argparse.ArgumentTypeError(f"not PORT or HOST:PORT (an IPv6 address in brackets: [::1]:9108): {text!r}")
    return host, int(_port(port))


_positive = _number(int, "a whole number", 1)
_attempts = _number(int, "a number of attempts or 'inf'", 0)


def _reconnects(text: str) -> float:
    return math.inf if text in ("inf", "infinite", "forever") else _attempts(text)


def parse_infer_size(text: str) -> int | str | None:
    if text == "full":
        return None
    if text == "auto":
        return "auto"
    return _infer_size(text)


_infer_size = _number(int, "a size in pixels, 'full' or 'auto'", 16, 16384)


def parse_noise_floor(text: str) -> float | str:
    return "auto" if text == "auto" else _noise_floor(text)


_noise_floor = _number(float, "a number of levels or 'auto'", 0, 255)


# Options that describe the whole process, not one stream: a serve configuration sets them at its top only.
FLEET_ONLY = ("metrics_port", "quiet")


def option_value(key: str, value: object) -> object:
    """``value`` for the option ``key`` (its long name, '-' as '_') as a configuration gives it (TOML or a dict:
    strings, numbers, booleans), checked and converted exactly as the command line does. Raises ``ValueError``
    with the reason for an unknown key or a bad value."""
    action = _ACTIONS.get(key)
    if action is None:
        raise KeyError(key)
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
        raise ValueError(f"must be a {'number' if action.type not in (None, Path) else 'string'}, not {value!r}")
    if isinstance(value, numbers.Real) and not isinstance(value, str):  # (numpy's too: a slider's, np.clip's)
        value = int(value) if isinstance(value, numbers.Integral) else float(value)
    text = "inf" if value == math.inf else repr(value) if isinstance(value, float) else str(value)
    try:
        converted = action.type(text) if action.type is not None else text
    except argparse.ArgumentTypeError as exc:
        if not (isinstance(value, float) and value.is_integer()):
            raise ValueError(str(exc)) from None
        try:  # a count given as a whole float (3.0, as OpenCV's cap.get gives it)
            converted = action.type(str(int(value)))
        except argparse.ArgumentTypeError:
            raise ValueError(str(exc)) from None
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"must be one of {', '.join(map(str, action.choices))}, not {value!r}")
    return converted


_ACTIONS = {a.dest: a for a in build_parser()._actions if a.option_strings and a.dest not in ("help", "version")}
OPTION_NAMES = tuple(_ACTIONS)
# Options of video alone: an image has no frames to batch, smooth, encode, cut or wait for.
VIDEO_ONLY = ("batch", "compile", "hwaccel", "temporal", "temporal_strength", "codec", "crf", "preset", "max_frames",
              "duration", "reconnect", "rtsp_transport", "max_latency", "segment_time")


def video_options_given(args: argparse.Namespace) -> list[str]:
    """The options of video alone that ``args`` sets to other than their defaults, as the command line spells them."""
    return [_ACTIONS[key].option_strings[0] for key in VIDEO_ONLY if getattr(args, key) != _ACTIONS[key].default]

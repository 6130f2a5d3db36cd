"""What a stream does, as small dataclasses, and ``serve``'s configuration turned into them.

A configuration is a TOML file, a dict of the same shape, or a list of stream tables::

    model = "auto"                    # defaults for every stream: any command-line option, '-' as '_'
    stats_json = "fleet.jsonl"        # the fleet's: one file, one port, for all the streams
    metrics_port = 9108
    [[stream]]
    name = "gate"                     # unique: labels log lines, stats and metrics
    input = "rtsp://user:pass@cam1/stream"
    output = "rec/gate.mp4"
    segment_time = 600                # any option again, for this stream only

Every value is checked as the command line checks it; a mistake is one line naming the stream and the key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from os import PathLike
from pathlib import Path
from typing import Any, Iterator

from .credentials import from_environment, mask
from .defaults import TEMPORAL_STRENGTH
from .errors import UsageError
from .live import LiveOptions
from .options import FLEET_ONLY, OPTION_NAMES, build_parser, option_value


@dataclass(frozen=True)
class ModelOptions:
    """The model a stream runs and where: streams with equal ``ModelOptions`` share one engine."""

    model: str = "auto"
    weights: str | None = None
    device: str = "auto"
    infer_size: int | str | None = "auto"
    compile: bool = False
    strength: float = 1.0  # how much of the model's correction is applied (``Engine``)
    noise_floor: float | str = "auto"  # 8-bit levels, flat regions' noise is not amplified (``Engine``; 0: off)


@dataclass(frozen=True)
class EncodeOptions:
    """How a stream's output is encoded (``None``: the encoder's defaults, see ``encoders.py``)."""

    codec: str | None = None  # None: libx264, or what the output format holds instead (WebM: VP9)
    crf: int | None = None
    preset: str | None = None
    segment_time: float | None = None  # split the output file into segments of about this length


@dataclass(frozen=True)
class StreamConfig:
    """One input dehazed into one output: a single run, or one stream of a fleet (``name`` labels it)."""

    input: str
    output: str | None
    name: str = ""
    model: ModelOptions = field(default_factory=ModelOptions)
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    live: LiveOptions = field(default_factory=LiveOptions)
    temporal: str = "ema"
    temporal_strength: float = TEMPORAL_STRENGTH
    batch: int | None = None  # frames of this stream per model call (None: 4 for files, 1 for live streams)
    hwaccel: str = "auto"
    strict: bool = False
    max_frames: int | None = None
    duration: float | None = None
    max_latency: float | None = None
    stats_json: str | None = None  # this stream's own statistics (a fleet's are in FleetConfig)

    def __repr__(self) -> str:
        # (a camera's URL holds its password or token: a log line or a traceback that shows a config shows it masked)
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("input", "output"):
            shown[key] = None if shown[key] is None else mask(str(shown[key]), str(shown[key]))
        return f"StreamConfig({', '.join(f'{key}={value!r}' for key, value in shown.items())})"

    def __post_init__(self) -> None:
        for key, kind in (("model", ModelOptions), ("encode", EncodeOptions), ("live", LiveOptions)):
            if not isinstance(getattr(self, key), kind):  # (model="dcp" failed later, "'str' object has no ...")
                raise TypeError(f"StreamConfig's {key} is a {kind.__name__}, not {getattr(self, key)!r}: "
                                f"StreamConfig(input, output, {key}={kind.__name__}(...)), or "
                                "StreamConfig.from_options(input, output, model='dcp', crf=20, ...)")

    @classmethod
    def from_options(cls, input: str, output: str | None, name: str = "", live: LiveOptions | None = None,
                     **options: Any) -> StreamConfig:
        """From options named as on the command line (``crf=20``, ``segment_time=600``, ``timeout=2`` ...), each
        checked and converted as the command line does it (``infer_size="full"``: None); a bad value is a
        ``UsageError`` naming the option."""
        groups: dict[str, dict[str, Any]] = {"model": {}, "encode": {}, "live": {}}
        own = {}
        for key, value in options.items():
            if value is not None and key in OPTION_NAMES:
                checked = checked_option(key, str(value) if isinstance(value, PathLike) else value)
                value = str(checked) if isinstance(checked, Path) else checked  # (paths stay strings here)
            group = _GROUP.get(key)
            if group is not None:
                groups[group][key] = value
            elif key in _OWN:
                own[key] = value
            else:
                raise TypeError(f"unknown stream option {key!r}")
        live = replace(live or LiveOptions(), **groups["live"])
        return cls(input=str(input), output=None if output is None else str(output), name=name,
                   model=ModelOptions(**groups["model"]), encode=EncodeOptions(**groups["encode"]), live=live, **own)

    def checked(self) -> StreamConfig:
        """This stream with every option checked and converted as ``from_options`` does it, for a config made
        directly (``StreamConfig(..., model=ModelOptions(infer_size="full"))``); a bad value is a ``UsageError``
        naming the option."""
        options = {f.name: getattr(self.model, f.name) for f in fields(ModelOptions)}
        options |= {f.name: getattr(self.encode, f.name) for f in fields(EncodeOptions)}
        options |= {name: getattr(self.live, name) for name in _LIVE}
        options |= {name: getattr(self, name) for name in _OWN}
        options["device"] = str(options["device"])  # (a torch.device names itself)
        return StreamConfig.from_options(self.input, self.output, name=self.name, live=self.live, **options)


_LIVE = ("timeout", "reconnect", "rtsp_transport")  # the live options the command line sets
_GROUP = {**{f.name: "model" for f in fields(ModelOptions)}, **{f.name: "encode" for f in fields(EncodeOptions)},
          **{name: "live" for name in _LIVE}}
_OWN = {f.name for f in fields(StreamConfig)} - {"input", "output", "name", "model", "encode", "live"}


@dataclass
class FleetConfig:
    """A fleet: its streams, and what reports on all of them."""

    streams: list[StreamConfig]
    stats_json: Path | None = None  # one JSON line a second for each stream and one for the fleet
    metrics_port: tuple[str, int] | None = None  # Prometheus gauges labelled by stream: (host, port)
    quiet: bool = False
    source: Path | None = None  # the file it was read from: named in messages, and never written over


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_STREAM_KEYS = ("name", "input", "output")


def load_config(config: str | Path | dict | list) -> FleetConfig:
    """A fleet from a TOML file, a dict of its shape, or a list of stream tables (no defaults). Raises a
    ``UsageError`` whose one line names the stream and the key of the first mistake (and the file, if any)."""
    where, source = "", None
    if isinstance(config, (str, Path)):
        where, source = f"{config}: ", Path(config)
        try:
            with open(config, "rb") as f:
                config = tomllib.load(f)
        except OSError as exc:
            raise UsageError(f"cannot read configuration {config}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{where}not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise UsageError(f"{where}not UTF-8 text (byte {exc.start} cannot be read): save it as UTF-8") from None
    if _holds_nul(config):  # (no file name or URL can hold one: every check would fail on it)
        raise UsageError(f"{where}a setting holds a NUL character")
    if isinstance(config, list):
        config = {"stream": config}
    if not isinstance(config, dict):
        raise UsageError(f"a configuration is a file, a dict or a list of streams, not {type(config).__name__}")
    try:
        return replace(_fleet(config), source=source)
    except UsageError as exc:
        raise UsageError(f"{where}{exc}") from None


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_holds_nul(v) for v in value)
    return False


def _fleet(raw: dict) -> FleetConfig:
    defaults: dict[str, Any] = dict(CLI_DEFAULTS)
    fleet = FleetConfig(streams=[])
    for key, value in raw.items():
        if key == "stream":
            continue
        if key in _STREAM_KEYS:
            raise UsageError(f"{key}: belongs in a [[stream]] table")
        checked = checked_option(key, value, ("stream",))
        if key in ("stats_json", "metrics_port", "quiet"):
            setattr(fleet, key, checked)
        else:
            defaults[key] = checked
    tables = raw.get("stream")
    if not tables:
        raise UsageError("no streams: add a [[stream]] table with name, input and output")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise UsageError("stream: must be a list of tables ([[stream]])")
    names: dict[str, int] = {}
    for number, table in enumerate(tables, 1):
        name = table.get("name")
        label = f"stream {number}" if not isinstance(name, str) else f"stream {name!r}"
        try:
            fleet.streams.append(_stream(table, defaults, names))
        except UsageError as exc:
            raise UsageError(f"{label}: {exc}") from None
        names[fleet.streams[-1].name] = number
    return fleet


def _stream(table: dict, defaults: dict[str, Any], names: dict[str, int]) -> StreamConfig:
    for key, value in table.items():  # (a misspelt key first: an 'ouput' is why 'output' is missing)
        if key not in _STREAM_KEYS and key not in OPTION_NAMES:
            checked_option(key, value)
    for key in _STREAM_KEYS:
        if key not in table:
            raise UsageError(f"missing key {key!r}")
        if not isinstance(table[key], str) or not table[key]:
            raise UsageError(f"{key}: must be a non-empty string")
    name = table["name"]
    if not NAME.fullmatch(name):
        raise UsageError("name: letters, digits, '.', '_' and '-' only (64 at most), starting with a letter or digit")
    if name in names:
        raise UsageError(f"name: stream {names[name]} has this name too (names must be unique)")
    options = dict(defaults)
    for key, value in table.items():
        if key in _STREAM_KEYS:
            continue
        if key in FLEET_ONLY:
            raise UsageError(f"{key}: set it at the top of the configuration (one for the whole fleet)")
        options[key] = checked_option(key, value)
    if options.get("stats_json") is not None:
        options["stats_json"] = str(options["stats_json"])
    if options.get("weights") is not None:
        options["weights"] = str(options["weights"])
    return StreamConfig.from_options(from_environment(table["input"]), from_environment(table["output"]), name=name,
                                     **options)


def checked_option(key: str, value: object, others: tuple[str, ...] = _STREAM_KEYS) -> object:
    """``value`` for the option ``key`` checked and converted as the command line does it, or a ``UsageError``
    naming the key (an unknown one with the nearest option, or of ``others``, the keys beside them there)."""
    try:
        return option_value(key, value)
    except KeyError:
        close = difflib.get_close_matches(key, OPTION_NAMES + others, n=1)
        raise UsageError(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")) from None
    except ValueError as exc:
        raise UsageError(f"{key}: {exc}") from None


def check_callbacks(**callbacks: object) -> None:
    """A ``TypeError`` naming the first callback argument (None: not given) that cannot be called, before a run
    opens its input (it failed in the writer, after the model had loaded, as "'int' object is not callable")."""
    for name, value in callbacks.items():
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable, not {type(value).__name__}")


def check_flags(**flags: object) -> None:
    """A ``TypeError`` naming the first flag argument that is not a bool (``bgr="no"`` was taken as true)."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {value!r}")


@contextmanager
def keyed(key: str) -> Iterator[None]:
    """A ``UsageError`` raised inside is about ``key`` (its ``key`` attribute; the message stays as it is)."""
    try:
        yield
    except UsageError as exc:
        if exc.key is None:
            exc.key = key
        raise


# What a configuration leaves out means what the command line means when it leaves it out (e.g. max_latency 1 s).
CLI_DEFAULTS = {a.dest: a.default for a in build_parser()._actions
                if a.option_strings and a.dest in OPTION_NAMES and a.dest not in (*FLEET_ONLY, "stats_json")
                and a.default not in (None, False)}

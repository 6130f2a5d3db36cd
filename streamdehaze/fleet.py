"""Many streams in one process: ``streamdehaze serve CONFIG.toml`` and ``serve()`` / ``Fleet`` in Python.

There is one engine per device (per model, when streams ask for different ones; taken from the process's
``shared_engines``, as GStreamer's elements take theirs), served by one scheduler thread (``pipeline.Scheduler``):
frames of all its streams share its model calls. Each stream has its own thread, which dials its camera (or opens
its file) for as long as it takes, then its own reader, writer, temporal state, latency bound and counters; a camera
that stalls, dies or sends slowly holds back no other. Each stream's output is what a single run of the same input
writes (``job.py``): the same timestamps, and the same frames up to the numerics of batching frames together.

``reload`` applies a new configuration: added streams start, removed ones finish their files and stop, changed
ones restart; the others do not notice. A configuration with a mistake changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import FleetConfig, ModelOptions, StreamConfig, check_callbacks, keyed, load_config
from .credentials import mask
from .engine import Engine
from .errors import StreamDehazeError, UsageError
from .job import Job, same_file, stream_files
from .live import Stopped
from .outputs import check_statistics_file, check_writable, move_aside
from .pipeline import RunResult, Scheduler
from .shared_calls import CALLS_AT_ONCE
from .shared_engines import ENGINES, engine_key
from .stats import Member, Reporter, RunStats

log = logging.getLogger("streamdehaze")
_STREAM_THREADS = ("stream", "decode", "encode", "publish")  # (a stream's own threads are named "KIND NAME")


@dataclass
class StreamOutcome:
    """How one stream ended: its ``result``, or the ``error`` that ended it (one line) and the ``frames`` written
    before it (those its recording or segments hold); ``reload``, where a reload ended it: ``removed`` or
    ``restarted``."""

    name: str
    output: str | None
    result: RunResult | None = None
    error: str | None = None
    frames: int = 0
    live: bool = False
    reload: str | None = None


@dataclass
class FleetResult:
    streams: list[StreamOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return sum(s.result.frames if s.result is not None else s.frames for s in self.streams)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> list[StreamOutcome]:
        return [s for s in self.streams if s.error is not None]


class Lane:
    """An engine and the scheduler threads that serve its streams: one on a GPU, ``CALLS_AT_ONCE`` on a CPU
    (``Scheduler``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        count = CALLS_AT_ONCE if engine.depth == 0 else 1
        self.scheduler = Scheduler(engine, threads=count)
        self.threads = [threading.Thread(target=self.scheduler.run, name="engine", daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        self.scheduler.close()
        for thread in self.threads:
            thread.join()


_DONE = {"added": "added", "removed": "removed", "changed": "changed", "retried": "started again after failing"}


class _Runner:
    """One stream's life in its own thread: open, run through its engine's scheduler, finish its output."""

    def __init__(self, config: StreamConfig, job: Job, lane: Lane, model: str) -> None:
        self.config, self.job, self.lane = config, job, lane
        self.member = Member(job.stats, {"input": config.input, "output": config.output or "", "model": model})
        self.outcome = StreamOutcome(config.name, config.output, live=job.live)
        self._stop = threading.Event()
        self._stream = None
        self.connecting = True  # dialling its camera: nothing written yet
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"stream {config.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Finish: a camera still being dialled gives up, a running stream writes what is in the engine and closes
        its output (a file's with its sound up to its last frame: ``Stream.stop``'s cut)."""
        with self._lock:
            self._stop.set()
        if self._stream is not None:
            self._stream.stop(cut=True)

    @property
    def failed(self) -> bool:
        """Ended with an error (its output failed, its camera ran out of reconnects)."""
        return not self.thread.is_alive() and self.outcome.error is not None

    @property
    def done(self) -> bool:
        """Ended, or stopped while still dialling a camera (an attempt in progress, up to its connect timeout, ends on
        its own, with nothing to write); a file opens at once, and is waited for."""
        with self._lock:
            return not self.thread.is_alive() or (self._stop.is_set() and self.connecting and self.job.live)

    def _run(self) -> None:
        name = self.config.name
        reporter = None  # (log lines from this thread and the stream's own are labelled with its name: StreamLabels)
        try:
            with self.job.open(stop=self._stop):
                with self._lock:  # stopped while dialling: it stays stopped, with nothing written
                    if self._stop.is_set():
                        raise Stopped
                    self.connecting = False
                if self.config.stats_json is not None:  # (first: a failure here leaves no output started)
                    reporter = Reporter(self.job.stats, Path(self.config.stats_json))
                self._stream = self.job.start(name)
                self.lane.scheduler.add(self._stream)
                if self._stop.is_set():
                    self._stream.stop()
                self._stream.drained.wait()
                # (a camera stopped by Ctrl-C or a reload ends as it should: not cut short)
                self.outcome.result = self.job.complete(interrupted=self._stream.stopped and not self.job.live)
        except Stopped:
            log.info("stopped before it connected")
        except StreamDehazeError as exc:
            self.outcome.error = mask(str(exc), self.config.input, self.config.output or "")
            self.outcome.frames = self.job.stats.frames
            log.error("%s", self.outcome.error)
        except Exception as exc:  # a bug: this stream ends, the others go on
            self.outcome.error = f"internal error: {type(exc).__name__}: {mask(str(exc), self.config.input)}"
            log.error("%s", self.outcome.error)
        finally:
            if reporter is not None:
                reporter.close()
            self._stream = None
            self.job.release()  # (a reload keeps this runner's outcome and statistics for the summary)


class StreamLabels(logging.Filter):
    """Log lines from a stream's threads (``stream NAME``, ``decode NAME``, ``encode NAME``, ``publish NAME``)
    start with its name; the credentials of every configured URL are masked, whatever characters they hold."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._for = threading.local()  # (``speaking_for``)

    @contextlib.contextmanager
    def speaking_for(self, name: str) -> Iterator[None]:
        """Lines logged by this thread meanwhile are a stream's (the fleet's own work on it: a reload's)."""
        self._for.name = name
        try:
            yield
        finally:
            del self._for.name

    def filter(self, record: logging.LogRecord) -> bool:
        kind, _, name = threading.current_thread().name.partition(" ")
        name = getattr(self._for, "name", None) or (name if kind in _STREAM_THREADS else "")
        message = mask(record.getMessage(), *self.urls)
        record.msg, record.args = (f"{name}: {message}" if name else message), None
        return True


class Fleet:
    """Runs the streams of a configuration (a ``FleetConfig``, a TOML file, a dict or a list of stream tables).

    ``start()`` checks everything and loads the models first: a mistake is one ``UsageError`` naming the stream
    and the key, and nothing starts. Then ``wait()``, ``reload(config)``, ``stop()``, and ``close()`` for the
    outcome of every stream. As a context manager it starts, and on leaving stops and closes.
    """

    def __init__(self, config: FleetConfig | str | Path | dict | list) -> None:
        self.config = _load(config)
        self._lanes: dict[ModelOptions, Lane] = {}
        self._runners: dict[str, _Runner] = {}
        self._ended: list[_Runner] = []
        self._lock = threading.Lock()
        self._reporter: Reporter | None = None
        self._start = time.perf_counter()
        self._labels = StreamLabels()
        self._state = "new"  # then "running", then "closed": a fleet runs once

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"this Fleet is {self._state}: a Fleet starts once (make a new one)")
        with within_file(self.config):
            jobs = check_streams(self.config)
            # (before the models load: a metrics port in use is said at once, not after them)
            self._reporter = open_reporter(self.config, self.members, ended=self.ended)
            try:
                self._lanes = self._engines(self.config, jobs, {})
            except BaseException:
                if self._reporter is not None:
                    self._reporter.close()
                raise
        self._start = time.perf_counter()
        self._state = "running"
        log.addFilter(self._labels)
        for config in self.config.streams:
            self._launch(config, jobs[config.name])

    def reload(self, config: FleetConfig | str | Path | dict | list) -> dict[str, list[str]]:
        """Apply a new configuration: added streams start, removed ones finish their files and stop, changed ones
        restart, and so do unchanged ones that failed; the others go on untouched. A mistake in it raises a
        ``UsageError`` and changes nothing. Returns the names ``added``, ``removed``, ``changed``, ``retried``."""
        if self._state != "running":
            raise RuntimeError(f"this Fleet is {self._state}: only a running one reloads")
        new = _load(config)
        old = {name: runner.config for name, runner in self._runners.items()}
        wanted = {c.name: c for c in new.streams}
        changes = {"added": [n for n in wanted if n not in old], "removed": [n for n in old if n not in wanted],
                   "changed": [n for n in wanted if n in old and wanted[n] != old[n]],
                   # (a stream that failed, unchanged: its disk freed, its server back; it stayed dead until edited)
                   "retried": [n for n in wanted if n in old and wanted[n] == old[n] and self._runners[n].failed]}
        starting = [wanted[n] for n in changes["added"] + changes["changed"] + changes["retried"]]
        kept = [c for n, c in wanted.items() if n in old and c == old[n] and n not in changes["retried"]]
        going = [self._runners[n] for n in changes["removed"] + changes["changed"] + changes["retried"]]
        # (the recordings of the streams stopped are theirs until they are finished and moved aside, below)
        their_files = {r.job.dst.resolve() for r in going if r.job.dst is not None}
        with within_file(new):  # (checked against the statistics file that stays)
            starts = replace(new, streams=starting, stats_json=self.config.stats_json)
            jobs = check_streams(starts, others=kept, going=their_files)
            lanes = self._engines(starts, jobs, self._lanes)
        if (new.stats_json, new.metrics_port) != (self.config.stats_json, self.config.metrics_port):
            log.warning("reload: stats_json and metrics_port stay as they were until the next start")
        for runner in going:
            if runner.config.name not in changes["retried"]:  # (a failed one's summary line says its failure)
                runner.outcome.reload = "removed" if runner.config.name in changes["removed"] else "restarted"
            runner.stop()
        # A starting stream (restarted, or renamed) may write where a stopping one did: that one finishes first, and
        # its recording is moved aside now (the new one would), so that its summary line names where it went.
        rewritten = {job.dst.resolve() for job in jobs.values() if job.dst is not None}
        for runner in going:
            while not runner.done:
                runner.thread.join(0.1)
            job = runner.job
            if job.live and job.dst is not None and runner.config.encode.segment_time is None \
                    and job.dst.resolve() in rewritten:
                with self._labels.speaking_for(runner.config.name):
                    aside = move_aside(job.dst)
                if aside is not None:
                    runner.outcome.output = str(aside)
        with self._lock:
            for runner in going:
                del self._runners[runner.config.name]
                self._ended.append(runner)
        self._lanes = lanes
        for config in starting:
            self._launch(config, jobs[config.name])
        self._close_idle_lanes()
        self.config = replace(new, stats_json=self.config.stats_json, metrics_port=self.config.metrics_port)
        for what, names in changes.items():
            if names:
                log.info("reload: %s %s", _DONE[what], ", ".join(names))
        if not any(changes.values()):  # (a service manager's reload is told it was read)
            log.info("reload: no changes")
        return changes

    def stop(self) -> None:
        """Every stream finishes its output and stops (thread-safe)."""
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            runner.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every stream has ended (files done, cameras given up on or stopped); True if they have."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            while not runner.done:
                if end is not None and time.monotonic() >= end:
                    return False
                runner.thread.join(0.1)
        return True

    def close(self) -> FleetResult:
        """Wait for every stream, release the engines and the reports; the outcome of every stream that ran."""
        self.wait()
        seconds = time.perf_counter() - self._start
        for key, lane in self._lanes.items():
            _close(key, lane)
        self._lanes = {}
        if self._reporter is not None:
            self._reporter.close()
            self._reporter = None
        log.removeFilter(self._labels)
        self._state = "closed"
        with self._lock:
            runners = self._ended + list(self._runners.values())
        for n, runner in enumerate(runners):  # an earlier run's partial that a later one moved aside: named where it is
            if runner.job.moved is not None:
                kept, aside = runner.job.moved
                for earlier in runners[:n]:
                    if earlier.outcome.result is not None and earlier.outcome.result.output == kept:
                        earlier.outcome.result.output = aside
        return FleetResult([r.outcome for r in runners], seconds)

    @property
    def devices(self) -> list:
        """The devices its engines run on (for ``tuning.tuned``: the command line tunes its process for them)."""
        return sorted({lane.engine.device for lane in self._lanes.values()}, key=str)

    def members(self) -> dict[str, Member]:
        with self._lock:
            return {name: runner.member for name, runner in self._runners.items()}

    def ended(self) -> list[RunStats]:
        """The statistics of the streams a reload stopped (removed, or restarted as new ones)."""
        with self._lock:
            return [runner.job.stats for runner in self._ended]

    def _launch(self, config: StreamConfig, job: Job) -> None:
        self._labels.urls += [url for url in (config.input, config.output or "") if url not in self._labels.urls]
        key = _engine_key(config, job)
        runner = _Runner(config, job, self._lanes[key], _model_name(key))
        with self._lock:
            self._runners[config.name] = runner
        runner.start()

    def _engines(self, config: FleetConfig, jobs: dict[str, Job],
                 lanes: dict[ModelOptions, Lane]) -> dict[ModelOptions, Lane]:
        """The engines the streams of ``config`` (checked: ``jobs``) need, loading their models, reusing ``lanes``;
        a model that does not load is one line naming the stream and the key."""
        lanes = dict(lanes)
        made: list[ModelOptions] = []
        try:
            for c in config.streams:
                key = _engine_key(c, jobs[c.name])
                if key not in lanes:
                    with about_stream(c.name), keyed("weights" if c.model.weights is not None else "model"):
                        engine = ENGINES.acquire(key)
                    made.append(key)
                    lanes[key] = Lane(engine)
        except BaseException:
            for key in made:
                _close(key, lanes.get(key))
            raise
        return lanes

    def _close_idle_lanes(self) -> None:
        with self._lock:
            used = {id(runner.lane) for runner in self._runners.values()}
        for key, lane in list(self._lanes.items()):
            if id(lane) not in used:
                _close(key, lane)
                del self._lanes[key]


def _close(key: ModelOptions, lane: Lane | None) -> None:
    """Stop a lane's engine threads and release its engine (``ENGINES``)."""
    try:
        if lane is not None:
            lane.close()
    finally:
        ENGINES.release(key)


def _engine_key(config: StreamConfig, job: Job) -> ModelOptions:
    """Streams with equal keys share an engine: the model (``auto`` resolved for the device) on one device."""
    return engine_key(config.model, job.device)


def _model_name(key: ModelOptions) -> str:
    return key.model if key.weights is None else f"{key.model} ({Path(key.weights).name})"


def check_streams(config: FleetConfig, others: Sequence[StreamConfig] = (),
                  going: Collection[Path] = ()) -> dict[str, Job]:
    """Every stream of ``config`` checked as the command line checks its options, and no file written twice or
    written over what another stream reads, the fleet's statistics or the configuration file itself (``others``:
    streams that go on running beside them; ``going``: the recordings of those a reload stops, which it moves
    aside itself). The first mistake is one ``UsageError`` naming the stream and the key. Returns each stream's
    job, by name."""
    taken: list[tuple[str, str, bool]] = []  # (whose, path, written) of every file read or written so far
    source = None if config.source is None else str(config.source.resolve())
    if source is not None:
        taken.append(("the configuration file", source, False))
    if config.stats_json is not None:
        stats = str(Path(config.stats_json).resolve())
        if source is not None and same_file(stats, source):
            raise UsageError(f"stats_json: {stats} is the configuration file")
        with _within("stats_json: "):  # (before any model loads)
            check_statistics_file(config.stats_json, str(config.stats_json))
            check_writable(config.stats_json.parent)
        taken.append(("the stats_json of the fleet too", stats, True))
    for c in others:
        taken += _taken_by(c, stream_files(c))
    jobs: dict[str, Job] = {}
    for c in config.streams:
        job = Job(c)
        with about_stream(c.name):
            job.check(going)
            mine = stream_files(c)
            for what, path in mine:
                for whose, other, written in taken:
                    if (what != "input" or written) and same_file(path, other):
                        with keyed(what):  # (an output URL's credentials: this message is not masked elsewhere)
                            raise UsageError(f"{mask(path, path)} is {whose}")
            if c.stats_json is not None:
                with keyed("stats_json"):
                    check_statistics_file(Path(c.stats_json), str(c.stats_json))
            taken += _taken_by(c, mine)
        jobs[c.name] = job
    return jobs


def _taken_by(config: StreamConfig, files: list[tuple[str, str]]) -> list[tuple[str, str, bool]]:
    """``stream_files`` as ``check_streams`` keeps them: whose each is, its path, whether the stream writes it."""
    return [(f"the {what} of stream {config.name!r} too", path, what != "input") for what, path in files]


def open_reporter(config: FleetConfig, members: Callable[[], dict[str, Member]],
                  ended: Callable[[], list[RunStats]] = list) -> Reporter | None:
    """The fleet's statistics file (checked with the streams: ``check_streams``) and metrics port, if it has
    either; a ``UsageError`` names the key."""
    if config.stats_json is None and config.metrics_port is None:
        return None
    with _within("metrics_port: " if config.metrics_port is not None else ""):
        return Reporter(members, config.stats_json, config.metrics_port, ended=ended)


def _load(config: FleetConfig | str | Path | dict | list) -> FleetConfig:
    if not isinstance(config, FleetConfig):
        return load_config(config)
    streams = []
    for stream in config.streams:  # (made in Python: checked here, as a file's are when it is read)
        with about_stream(stream.name):
            streams.append(stream.checked())
    return replace(config, streams=streams)


def within_file(config: FleetConfig) -> contextlib.AbstractContextManager:
    """A ``UsageError`` raised inside starts with the name of the file ``config`` was read from, if any."""
    return _within("" if config.source is None else f"{config.source}: ")


@contextlib.contextmanager
def _within(where: str):
    try:
        yield
    except UsageError as exc:
        raise UsageError(f"{where}{exc}") from None


@contextlib.contextmanager
def about_stream(name: str):
    """A ``UsageError`` raised inside names the stream and the key: ``stream 'gate': crf: ...``."""
    try:
        yield
    except UsageError as exc:
        key = f"{exc.key}: " if exc.key else ""
        raise UsageError(f"stream {name!r}: {key}{exc}") from None


def serve(config: FleetConfig | str | Path | dict | list, *, duration: float | None = None,
          on_start: Callable[[Fleet], None] | None = None) -> FleetResult:
    """Run the streams of ``config`` (a TOML file, a dict of its shape, or a list of stream tables) until they all
    end, for ``duration`` seconds at most, or until Ctrl-C; every stream then finishes its output. Returns the
    outcome of each stream. ``Fleet`` runs one in the background, with ``reload``."""
    check_callbacks(on_start=on_start)
    fleet = Fleet(config)
    fleet.start()
    try:
        if on_start is not None:
            on_start(fleet)
        deadline = None if duration is None else time.monotonic() + duration
        while not fleet.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                fleet.stop()
                deadline = None
    except KeyboardInterrupt:
        pass
    finally:  # (on_start failing too: nothing is left running)
        fleet.stop()
        result = fleet.close()
    return result

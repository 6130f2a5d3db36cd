"""Run statistics: counters and latency, reported as JSON lines each second and, optionally, to Prometheus.

Latency is measured per frame from its arrival (``LiveSource.arrival``) to the moment the sink has encoded it:
what a viewer of the output waits for. A fleet (``serve``) reports each stream (JSON lines with ``"stream"``,
gauges labelled ``stream``) and the whole fleet (a line with ``"fleet": true``, ``streamdehaze_fleet_*`` gauges).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .credentials import mask
from .errors import UsageError

log = logging.getLogger("streamdehaze")

# Latency is of the frames written in the last this many seconds: a camera that is down shows none (null; NaN in
# Prometheus), not the last it had.
LATENCY_WINDOW_S = 10.0


class RunStats:
    """Thread-safe counters of one run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.start = time.monotonic()
        self.frames = 0
        self.dropped = 0
        self.queue_depth: Callable[[], int] = lambda: 0
        self.reconnects: Callable[[], int] = lambda: 0
        self.received: Callable[[], int | None] = lambda: 0  # None: as many as written
        self.corrupt: Callable[[], int] = lambda: 0
        self.unpublished: Callable[[], int] = lambda: 0  # frames that came while the server published to was down
        self.output_reconnects: Callable[[], int] = lambda: 0
        self._latencies: deque[tuple[float, float]] = deque(maxlen=512)  # (when written, latency)
        self._window: deque[float] = deque()  # completion times within the last second, for fps

    def frame_done(self, arrival: float | None) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames += 1
            self._window.append(now)
            if arrival is not None:
                self._latencies.append((now, now - arrival))

    def freeze(self) -> None:
        """Keep the final counts, not the source and sinks they are read from: a fleet keeps the statistics of the
        streams a reload stopped, and would keep their decoders and encoders with them."""
        for name in ("queue_depth", "reconnects", "received", "corrupt", "unpublished", "output_reconnects"):
            value = getattr(self, name)()
            setattr(self, name, lambda value=value: value)

    def drop(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n

    def latencies(self) -> list[float]:
        """The latencies (seconds) of the frames written in the last ``LATENCY_WINDOW_S``."""
        since = time.monotonic() - LATENCY_WINDOW_S
        with self._lock:
            return [latency for done, latency in self._latencies if done >= since]

    def snapshot(self) -> dict[str, float | int]:
        now = time.monotonic()
        with self._lock:
            while self._window and now - self._window[0] > 1.0:
                self._window.popleft()
            fps = float(len(self._window))
            frames, dropped = self.frames, self.dropped
        lat = sorted(self.latencies())
        return {
            "time": round(now - self.start, 3), "frames": frames, "fps": fps,
            "latency_p50_ms": round(1000 * _percentile(lat, 0.50), 1) if lat else None,
            "latency_p95_ms": round(1000 * _percentile(lat, 0.95), 1) if lat else None,
            "queue_depth": self.queue_depth(), "received": _or(self.received(), frames), "dropped": dropped,
            "reconnects": self.reconnects(),
            "corrupt_packets": self.corrupt(), "unpublished": self.unpublished(),
            "output_reconnects": self.output_reconnects(),
        }


def _or(value: int | None, otherwise: int) -> int:
    return otherwise if value is None else value


_GAUGES = (("frames", "frames written"), ("fps", "frames written in the last second"),
           ("latency_p50_ms", "median arrival-to-encoded latency"), ("latency_p95_ms", "95th percentile latency"),
           ("queue_depth", "frames waiting for the model"), ("received", "frames decoded from the source"),
           ("dropped", "frames dropped to bound latency"), ("reconnects", "source reconnections"),
           ("corrupt_packets", "input packets skipped as corrupt"),
           ("unpublished", "frames not published: the server published to was down"),
           ("output_reconnects", "reconnections to the server published to"))


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


COUNTERS = ("frames", "received", "dropped", "reconnects", "corrupt_packets", "unpublished",
             "output_reconnects")  # never go back
_SUMMED = ("fps", "queue_depth", *COUNTERS)


def fleet_snapshot(snapshots: list[dict], latencies: list[float], start: float, ended: list[dict] = ()) -> dict:
    """The whole fleet from its streams' snapshots: counters summed, with those of the streams that ended (a reload
    removed or restarted them), latency percentiles over the running streams' frames."""
    lat = sorted(latencies)
    return {"fleet": True, "time": round(time.monotonic() - start, 3), "streams": len(snapshots),
            **{key: sum(s[key] for s in snapshots) + (sum(s[key] for s in ended) if key in COUNTERS else 0)
               for key in _SUMMED},
            "latency_p50_ms": round(1000 * _percentile(lat, 0.50), 1) if lat else None,
            "latency_p95_ms": round(1000 * _percentile(lat, 0.95), 1) if lat else None}


@dataclass
class Member:
    """A stream of a fleet, as reports see it: its counters and what it is (``input``, ``output``, ``model``)."""

    stats: RunStats
    labels: dict[str, str]


class Reporter:
    """Every ``interval`` seconds: one JSON line appended to ``path`` and Prometheus gauges (if a port is given)."""

    def __init__(self, stats: RunStats | Callable[[], Mapping[str, Member]], path: Path | None,
                 metrics: tuple[str, int] | None = None, interval: float = 1.0, labels: dict[str, str] | None = None,
                 ended: Callable[[], list[RunStats]] = list) -> None:
        """``stats``: one run's, or, for a fleet, a function giving its current streams by name, and ``ended``
        the statistics of those that ended, which the fleet's counters keep. ``labels``: what a single run is
        (input, output, model), exported as the labels of ``streamdehaze_info`` with any credentials masked (a
        fleet's streams carry their own)."""
        self.stats, self.path, self.interval, self.ended = stats, path, interval, ended
        self._fleet = not isinstance(stats, RunStats)
        self._start = time.monotonic()
        self._shown: set[str] = set()  # streams with metrics series, to remove those that left
        self._info_shown: dict[str, dict[str, str]] = {}  # each stream's streamdehaze_info labels, as exported
        self._stop = threading.Event()
        self._failing = False  # the last write failed
        self._server = None
        self._gauges = None
        if metrics is not None:  # (first: a port in use leaves no statistics file behind)
            self._start_metrics(metrics, labels or {})
        try:
            # Appended to: a run restarted by its supervisor keeps the lines of the one before.
            self._file = open(path, "a", buffering=1) if path is not None else None  # noqa: SIM115 (closed in close())
        except OSError as exc:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None
        self._thread = threading.Thread(target=self._run, name="stats", daemon=True)
        self._thread.start()

    def _start_metrics(self, address: tuple[str, int], labels: dict[str, str]) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise UsageError("--metrics-port needs prometheus-client (pip install 'streamdehaze[metrics]')") from None
        registry = prom.CollectorRegistry()
        by_stream = ["stream"] if self._fleet else []
        self._gauges = {key: prom.Gauge(f"streamdehaze_{key}", help, by_stream, registry=registry)
                        for key, help in _GAUGES}
        if self._fleet:
            self._fleet_gauges = {
                key: prom.Gauge(f"streamdehaze_fleet_{key}", f"{help}, all streams", registry=registry)
                for key, help in (*_GAUGES, ("streams", "streams running"))}
            self._info = prom.Gauge("streamdehaze_info", "what each stream reads and writes",
                                    ["stream", "input", "output", "model"], registry=registry)
        else:
            info = prom.Gauge("streamdehaze_info", "what this run reads and writes", list(labels), registry=registry)
            (info.labels(**{key: mask(value, value) for key, value in labels.items()}) if labels else info).set(1)
        host, port = address
        try:
            self._server, _ = prom.start_http_server(port, addr=host, registry=registry)
        except OSError as exc:  # (a name that does not resolve is a socket.gaierror: an OSError too)
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise UsageError(f"--metrics-port {shown}: {exc.strerror or exc}") from None

    def _emit(self) -> dict:
        if self._fleet:
            return self._emit_fleet()
        snap = self.stats.snapshot()
        self._write([snap])
        if self._gauges is not None:
            for key, gauge in self._gauges.items():
                gauge.set(math.nan if snap[key] is None else snap[key])
        return snap

    def _emit_fleet(self) -> dict:
        members = dict(self.stats())
        snaps = {name: member.stats.snapshot() for name, member in members.items()}
        fleet = fleet_snapshot(list(snaps.values()), [t for m in members.values() for t in m.stats.latencies()],
                               self._start, [stats.snapshot() for stats in self.ended()])
        self._write([*({"stream": name, **snap} for name, snap in snaps.items()), fleet])
        if self._gauges is not None:
            for name in self._shown - set(snaps):  # streams removed by a reload
                for gauge in self._gauges.values():
                    gauge.remove(name)
            for name, snap in snaps.items():
                for key, gauge in self._gauges.items():
                    gauge.labels(name).set(math.nan if snap[key] is None else snap[key])
            info = {name: {key: mask(value, value) for key, value in members[name].labels.items()} for name in snaps}
            if info != self._info_shown:  # a stream removed, or restarted with another output: one series each
                self._info.clear()
                for name, labels in info.items():
                    self._info.labels(stream=name, **labels).set(1)
                self._info_shown = info
            for key, gauge in self._fleet_gauges.items():
                gauge.set(math.nan if fleet[key] is None else fleet[key])
            self._shown = set(snaps)
        return fleet

    def _write(self, lines: list[dict]) -> None:
        """Append ``lines`` to the statistics file, each with the wall-clock time (``unix_time``: a run's own
        ``time`` counts from its start). A file renamed or deleted under it (log rotation) is followed by a new one
        at its name: the lines went on into the renamed file, for good."""
        if self._file is None:
            return
        try:
            moved = os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            moved = True
        if moved:  # (opened first: where that fails, the old file is still there to close)
            old, self._file = self._file, open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())
            with contextlib.suppress(OSError):
                old.close()
        now = round(time.time(), 3)
        self._file.write("".join(json.dumps({**line, "unix_time": now}) + "\n" for line in lines))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._emit_or_say()

    def _emit_or_say(self) -> dict | None:
        """``_emit()``; a write that fails (a full disk) must not stop the video, and is said once, not each second."""
        try:
            snap = self._emit()
        except OSError as exc:
            if not self._failing:
                log.warning("%s: statistics not written: %s; the video goes on", self.path, exc.strerror or exc)
            self._failing = True
            return None
        if self._failing:
            log.warning("%s: statistics written again", self.path)
        self._failing = False
        return snap

    def close(self) -> dict | None:
        """Stop reporting; writes a last line (a fleet: one per stream and one for the fleet) and returns it (the
        fleet's), or None where it could not be written."""
        self._stop.set()
        self._thread.join()
        snap = self._emit_or_say()
        if self._file is not None:
            with contextlib.suppress(OSError):  # (what is left in its buffer: said above)
                self._file.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        return snap

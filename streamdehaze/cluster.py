"""Ray clusters: ``streamdehaze batch IN_DIR OUT_DIR --ray ADDRESS`` and ``streamdehaze serve CONFIG --ray
ADDRESS`` (Ray is the ``ray`` extra).

Serve: the streams are spread over one actor per device (``FleetWorker``, a ``Fleet`` each), balanced by each
input's load (pixels a second, read from the input at start; not moved while running, since a move costs the
camera a reconnect). A dead actor is restarted by Ray and its cameras record again; the head gathers every
stream's stats.

Batch: each worker is a Ray actor holding one ``LocalBatch``: one engine, its model loaded once, on the GPU or the
CPUs Ray gives it. The driver hands each worker one file at a time, so a slow file holds back nothing else.

Every node must see the input and output folders at the same paths (NFS, a shared volume) and run the same Python
environment with streamdehaze installed. Outputs are written as anonymous files named only when complete
(``outputs.py``, on filesystems with ``O_TMPFILE``: ext4, xfs, tmpfs, NFS 4.2+ servers on them; elsewhere a hidden
``.NAME.partial-PID.EXT`` that the next run removes). So a worker killed mid-file leaves nothing behind: Ray restarts
the actor (on any node with room) and the driver hands the file out again. A file that takes its worker down
three times is reported failed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import av

from .batch import ATTEMPTS, FileResult, Item, LocalBatch, use_threads
from .config import FleetConfig, StreamConfig, keyed
from .engine import resolve_device
from .errors import MediaError, UsageError
from .fleet import Fleet, FleetResult, StreamOutcome, about_stream, check_streams, within_file
from .models import create_model
from .stats import COUNTERS, Member
from .pipeline import deferred_signals, stopping
from .sources import main_video

log = logging.getLogger("streamdehaze")

_ROOM_WAIT_S = 10.0  # a batch that has no worker started by then says why it waits
_START_WAIT_S = 60.0  # serve: workers not started by then found no room on the cluster
_HEAD_CHECK_S, _HEAD_LOST_S = 2.0, 10.0  # how often the head is checked; how long without it ends the run
_STOP_WAIT_S = 10.0  # batch, Ctrl-C: how long the workers' ending is waited for

class DehazeWorker:
    """A Ray actor's state: one engine for the files it is given (``ray.remote`` is applied by ``run_batch``)."""

    def __init__(self, options: dict[str, Any]) -> None:
        import ray

        logging.basicConfig(format="streamdehaze: %(message)s", level=logging.WARNING)
        use_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        self.batch = LocalBatch(options)

    def run(self, item: Item) -> FileResult:
        return self.batch.run_one(item)

    def pid(self) -> int:
        return os.getpid()


def connect(address: str) -> Any:
    """``ray``, connected to the cluster at ``address`` (``host:port``), or to a new local instance (``local``)."""
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'streamdehaze[ray]'") from None
    why = _unreachable(address, 5.0)  # (Ray would retry for minutes, filling the terminal)
    if why is not None:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {why}")
    # ray.init installs a SIGTERM handler that exits at once (status 15): ours, which end a run as Ctrl-C does
    # (summary, statistics, exit 130), are put back. Nor does Ray's C++ core install its crash handler here: it takes
    # SIGTERM too, in C behind Python's back, and its removal in ray.shutdown() leaves SIGTERM's default action for the
    # rest of the process (a second SIGTERM during a stop killed it, -15). Faults in Ray's C++ still end the process.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    constants = sys.modules.get("ray._private.ray_constants")  # (imported with ray)
    crash_handler_off = getattr(constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER", None)
    try:
        if crash_handler_off is not None:  # (read once, when ray.init starts the core worker)
            constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
        if address == "local":  # (named: with no address, Ray would join the cluster $RAY_ADDRESS names)
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, configure_logging=False)
        else:
            ray.init(address=address, logging_level=logging.WARNING, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    finally:
        if crash_handler_off is not None:
            constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = crash_handler_off
        if threading.current_thread() is threading.main_thread():
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
    return ray


def _unreachable(address: str, timeout: float) -> str | None:
    """Why the head at ``address`` (``host:port``) does not answer a connection, or None when it does; None too for
    another form (``local``, ``auto``: Ray reads those itself)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout).close()
    except OSError as exc:
        return exc.strerror or ("no answer" if isinstance(exc, TimeoutError) else type(exc).__name__)
    return None


class _HeadWatch:
    """Whether the head at ``address`` still answers, asked every ``_HEAD_CHECK_S``: without its head (the machine
    gone), Ray's calls wait, and after a minute Ray ends the process with hundreds of lines of its own."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.seen = self.checked = time.monotonic()

    def lost(self) -> bool:
        """True once the head has not answered for ``_HEAD_LOST_S``."""
        if time.monotonic() - self.checked >= _HEAD_CHECK_S:
            self.checked = time.monotonic()
            if _unreachable(self.address, 1.0) is None:
                self.seen = self.checked
        return self.checked - self.seen >= _HEAD_LOST_S


def run_batch(address: str, items: list[Item], options: dict[str, Any], on_result: Callable[[FileResult], None],
              *, workers: int | None = None, on_frames: Callable[[int], None] | None = None) -> bool:
    """Dehaze ``items`` on the Ray cluster at ``address``; ``on_result`` gets each file's result as it ends.
    Returns True if Ctrl-C or SIGTERM stopped it (the files in progress leave nothing; a rerun does them).

    Ray's calls run on a thread of their own while this one watches the head: Ray ends the process a minute after
    losing the head, with no word, and a call made meanwhile can block until then (CI saw it)."""
    if not items:
        return False
    ray = connect(address)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=_dispatch, args=(ray, items, options, workers, events, stop), name="Ray batch",
                              daemon=True)
    left = {item.name: item for item in items}  # not reported yet

    def report(kind: str, value: Any) -> bool:
        """One event from the Ray thread; False once it has ended."""
        if kind == "result":
            left.pop(value.name, None)
            on_result(value)
        elif kind == "frames" and on_frames is not None:
            on_frames(value)
        elif kind == "error":
            raise value
        return kind != "end"

    lost = interrupted = False
    try:
        try:
            with deferred_signals() as run_handlers:
                thread.start()
                head = _HeadWatch(address)
                going = True
                while going:
                    try:
                        run_handlers()
                    except KeyboardInterrupt:
                        interrupted = True
                        stop.set()  # (the Ray thread ends the workers: files in progress leave nothing)
                        thread.join(_STOP_WAIT_S)
                        while not events.empty():
                            report(*events.get())
                        break
                    if head.lost():
                        lost = True
                        break
                    try:
                        going = report(*events.get(timeout=0.2))
                    except queue.Empty:
                        continue
        except KeyboardInterrupt:  # (another signal, come while the first was acted on: the stop goes on)
            if not interrupted:
                raise
        for item in left.values():
            status, error = ("interrupted", "") if interrupted else ("failed", f"lost the Ray cluster at {address}")
            on_result(FileResult(item.name, item.input, item.output, status, error=error))
    finally:
        with stopping() if interrupted else contextlib.nullcontext():
            if not lost:  # (without its head, Ray's shutdown too can block until Ray ends the process)
                ray.shutdown()
    return interrupted


def worker_resources(ray: Any, device: str, workers: int | None) -> tuple[int, dict[str, float]]:
    """How many workers, and what each reserves: a GPU each where the cluster has GPUs (and the device allows),
    else two CPUs each (decoding, the model and encoding overlap), one each when more are asked for. Never more
    workers than the cluster has room for: one it cannot place would hold its work for ever."""
    total = ray.cluster_resources()
    gpus, cpus = int(total.get("GPU", 0)), max(1, int(total.get("CPU", 1)))
    if gpus and device != "cpu":
        return _room(workers, gpus, f"{gpus} GPUs"), {"num_gpus": 1, "num_cpus": 1}
    if device == "cuda":
        raise UsageError("--device cuda: the Ray cluster has no GPU")
    count = _room(workers, cpus, f"{cpus} CPUs") if workers else max(1, cpus // 2)
    return count, {"num_cpus": max(1, min(2, cpus // count))}


def _room(asked: int | None, room: int, what: str) -> int:
    if asked is None or asked <= room:
        return asked or room
    log.warning("--workers %d: the Ray cluster has room for %d (%s); starting %d", asked, room, what, room)
    return room


def _dispatch(ray: Any, items: list[Item], options: dict[str, Any], workers: int | None, events: queue.Queue,
              stop: threading.Event) -> None:
    """The Ray thread of ``run_batch``: hands out ``items``, putting ("result", FileResult), ("frames", n), at
    most one ("error", exception), then ("end", None) on ``events``; ends the workers once ``stop`` is set."""
    from ray.exceptions import RayActorError, RayTaskError

    try:
        count, resources = worker_resources(ray, options.get("device", "auto"), workers)
        # A killed worker is restarted by Ray; the file it had is handed out again by us (max_task_retries=0), so
        # that a file that kills every worker it meets ends as failed instead of restarting workers forever.
        actor = ray.remote(max_restarts=-1, max_task_retries=0, **resources)(DehazeWorker)
        pool = [actor.remote(options) for _ in range(min(count, len(items)))]
        pending, attempts = deque(items), {item.name: 0 for item in items}
        running: dict[Any, tuple[Any, Item | None]] = {}  # a file's call, or (None) a wait for a restarted worker
        idle: list[Any] = []

        def hand_out(worker: Any) -> None:
            if pending:
                item = pending.popleft()
                running[worker.run.remote(item)] = (worker, item)
            else:
                idle.append(worker)

        def result(item: Item, status: str, error: str = "") -> None:
            events.put(("result", FileResult(item.name, item.input, item.output, status, error=error)))

        for worker in pool:  # a file goes to a worker once it has started (other work may hold the cluster)
            running[worker.pid.remote()] = (worker, None)
        waiting_since = time.monotonic()  # (None once a worker has started)
        while running:
            if stop.is_set():
                for worker in pool:
                    ray.kill(worker)
                return
            if waiting_since is not None and time.monotonic() - waiting_since > _ROOM_WAIT_S:
                free = ray.available_resources()  # (a busy host may take that long just to start a worker)
                if any(free.get(k.removeprefix("num_").upper(), 0) < v for k, v in resources.items()):
                    log.warning("waiting for the Ray cluster to have room for a worker (%s)",
                                ", ".join(f"{k.removeprefix('num_')}: {v:g}" for k, v in resources.items()))
                else:
                    log.info("waiting for the Ray workers to start")
                waiting_since = None
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            for ref in done:
                worker, item = running.pop(ref)
                try:
                    file = ray.get(ref)
                except RayActorError:
                    if item is None:
                        continue  # the worker is gone for good (Ray gave up restarting it)
                    attempts[item.name] += 1
                    if attempts[item.name] < ATTEMPTS:
                        log.warning("%s: its worker died; doing it again", item.name)  # (Ray's words: its RPC's)
                        pending.appendleft(item)
                        if idle:
                            hand_out(idle.pop())
                    else:
                        result(item, "failed", f"its worker died {ATTEMPTS} times while dehazing it")
                    # Back in the pool once Ray has restarted it (this call waits for that).
                    running[worker.pid.options(max_task_retries=-1).remote()] = (worker, None)
                    continue
                except RayTaskError as exc:  # it raised what no file should (its worker was being ended)
                    if item is not None:
                        result(item, "failed", _first_line(exc.cause or exc))
                    hand_out(worker)
                    continue
                waiting_since = None
                if item is not None:
                    if file.status == "done":
                        events.put(("frames", file.frames))
                    events.put(("result", file))
                hand_out(worker)
        for item in pending:  # every worker is gone for good (Ray gave up restarting them)
            result(item, "failed", "no Ray worker was left to do it")
    except BaseException as exc:  # (a usage error: no GPU on the cluster for --device cuda)
        events.put(("error", exc))
    finally:
        events.put(("end", None))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---- serve: the cameras of a configuration over the cluster ----------------------------------------------------


class FleetWorker:
    """A Ray actor running some of a configuration's streams as a ``Fleet`` (one engine per model on its device).
    Ray restarts it with the same streams after a crash: its cameras then reconnect and record again, each earlier
    recording kept (moved aside to ``NAME.N.EXT``, ``outputs.py``)."""

    def __init__(self, streams: list[StreamConfig]) -> None:
        logging.basicConfig(format="streamdehaze: %(message)s", level=logging.INFO)
        self.fleet = Fleet(FleetConfig(streams=streams))
        self.fleet.start()

    def stats(self) -> tuple[int, dict[str, dict[str, Any]]]:
        """This worker's process id (a new one: Ray restarted it), and each running stream's snapshot
        (``RunStats.snapshot``) and its recent latencies."""
        return os.getpid(), {name: {"snapshot": member.stats.snapshot(), "latencies": member.stats.latencies()}
                             for name, member in self.fleet.members().items()}

    def done(self) -> bool:
        return self.fleet.wait(0)

    def stop(self) -> list[StreamOutcome]:
        self.fleet.stop()
        return self.fleet.close().streams

    def pid(self) -> int:
        return os.getpid()


class _RemoteStats:
    """A stream's counters as its worker last reported them (what ``stats.Reporter`` reads from a ``RunStats``),
    with those of the worker's earlier processes: counters never go back when Ray restarts a worker."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}
        self.recent: list[float] = []
        self.earlier: dict[str, int] = {}  # the counters of the worker's processes before this one

    def restarted(self) -> None:
        """The worker's process was replaced: what it had counted is kept."""
        for key in COUNTERS:
            self.earlier[key] = self.earlier.get(key, 0) + self.last.get(key, 0)

    def snapshot(self) -> dict[str, Any]:
        return {**self.last, **{key: self.last.get(key, 0) + count for key, count in self.earlier.items()}}

    def latencies(self) -> list[float]:
        return list(self.recent)


def stream_load(config: StreamConfig, timeout: float = 5.0) -> float | None:
    """Pixels a second the stream brings (width x height x frame rate), read from the input; None if it does not
    answer within ``timeout``."""
    options = {"rtsp_transport": config.live.rtsp_transport} if config.input.startswith("rtsp") else {}
    try:
        with av.open(config.input, options=options, timeout=timeout) as container:
            stream = main_video(container)
            if stream is None:
                return None
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            return stream.codec_context.width * stream.codec_context.height * rate
    except (av.FFmpegError, OSError):
        return None


def _absolute(config: StreamConfig) -> StreamConfig:
    """The stream with its file paths absolute (inputs, outputs, weights, statistics); URLs and devices as they are."""
    def absolute(path: str | None) -> str | None:
        if path is None or "://" in path or path == "-" or path.startswith("/dev/"):
            return path
        return os.path.abspath(path)
    model = replace(config.model, weights=absolute(config.model.weights))
    return replace(config, input=absolute(config.input), output=absolute(config.output),
                   stats_json=absolute(config.stats_json), model=model)


def balance(loads: dict[str, float], workers: int) -> list[list[str]]:
    """Streams spread over ``workers`` so that their loads are even: heaviest first, each to the lightest worker."""
    groups: list[list[str]] = [[] for _ in range(workers)]
    totals = [0.0] * workers
    for name in sorted(loads, key=lambda n: (-loads[n], n)):
        i = totals.index(min(totals))
        groups[i].append(name)
        totals[i] += loads[name]
    return [g for g in groups if g]


class ClusterFleet:
    """A configuration's streams spread over Ray actors (``FleetWorker``), balanced by each input's measured load;
    the head collects every stream's stats (``stats_json`` lines and Prometheus gauges as a one-process fleet)."""

    def __init__(self, config: FleetConfig, address: str, workers: int | None = None) -> None:
        """Checks every stream as a one-process fleet does, and that their weights load (a mistake is one
        ``UsageError`` naming the file, the stream and the key), then connects to the cluster; ``start()`` starts
        the workers, ``close()`` ends them and lets go of the cluster."""
        # Ray's workers run in the folder the cluster was started in: paths as this process sees them.
        config = replace(config, streams=[_absolute(stream) for stream in config.streams])
        with within_file(config):
            check_streams(config)
            loaded = set()
            for stream in config.streams:
                if (stream.model.model, stream.model.weights) not in loaded:
                    with about_stream(stream.name), keyed("weights" if stream.model.weights else "model"):
                        create_model(stream.model.model, stream.model.weights, resolve_device("cpu"))
                    loaded.add((stream.model.model, stream.model.weights))
        self.config, self.workers = config, workers
        self.members: dict[str, Member] = {}
        self.actors: list = []
        self._start_time = time.perf_counter()
        self.ray = connect(address)
        self.head = _HeadWatch(address)

    def start(self) -> None:
        """The workers, each with its share of the streams; on a failure, none is left."""
        try:
            self._start(self.workers)
        except BaseException:
            for actor in self.actors:
                self.ray.kill(actor, no_restart=True)
            self.actors = []
            raise

    def _start(self, workers: int | None) -> None:
        device = self.config.streams[0].model.device
        count, resources = worker_resources(self.ray, device, workers)
        measured = {c.name: stream_load(c) for c in self.config.streams}
        known = sorted(v for v in measured.values() if v is not None)
        typical = known[len(known) // 2] if known else 1.0  # a camera that did not answer counts as a typical one
        loads = {name: typical if value is None else value for name, value in measured.items()}
        by_name = {c.name: c for c in self.config.streams}
        self.groups = balance(loads, count)
        for i, group in enumerate(self.groups):
            log.info("worker %d: %s (%.1f Mpixel/s)", i, ", ".join(group), sum(loads[n] for n in group) / 1e6)
        # Restarted by Ray whenever it dies; its calls wait for the restart (max_task_retries).
        actor = self.ray.remote(max_restarts=-1, max_task_retries=-1, **resources)(FleetWorker)
        self.actors = [actor.remote([by_name[n] for n in group]) for group in self.groups]
        calls = [a.pid.remote() for a in self.actors]
        started, waiting = self.ray.wait(calls, num_returns=len(calls), timeout=_START_WAIT_S)
        if waiting:
            raise MediaError(f"{len(waiting)} of the {len(calls)} Ray workers did not start within "
                             f"{_START_WAIT_S:g} s: the cluster has no room for them (--workers)")
        self.pids: list[int | None] = list(self.ray.get(calls))  # (a bad output folder shows here)
        self.stats = {c.name: _RemoteStats() for c in self.config.streams}
        self.members = {c.name: Member(self.stats[c.name], {"input": c.input, "output": c.output or "",
                                                            "model": c.model.model}) for c in self.config.streams}
        self._start_time = time.perf_counter()

    def poll(self, timeout: float = 2.0) -> bool:
        """Collect every worker's stats; True once every stream has ended (files done; cameras never end). A
        ``MediaError`` once the cluster's head has stopped answering: the workers end with it, each recording
        playable up to there (``close()`` then waits for nothing)."""
        if self.head.lost():
            raise MediaError(f"lost the Ray cluster at {self.head.address}: its streams' recordings end where they "
                             "were")
        calls = {a.stats.remote(): i for i, a in enumerate(self.actors)}
        done_calls = [a.done.remote() for a in self.actors]
        ready, _ = self.ray.wait(list(calls), num_returns=len(calls), timeout=timeout)
        for ref in ready:
            try:
                pid, by_stream = self.ray.get(ref)
            except self.ray.exceptions.RayActorError:
                continue  # restarting: its last stats stand until it answers again
            i = calls[ref]
            if self.pids[i] not in (None, pid):
                log.warning("worker %d (%s) was restarted by Ray, its process having ended: its streams start again",
                            i, ", ".join(self.groups[i]))
                for name in self.groups[i]:
                    self.stats[name].restarted()
            self.pids[i] = pid
            for name, stats in by_stream.items():
                self.stats[name].last, self.stats[name].recent = stats["snapshot"], stats["latencies"]
        ready, _ = self.ray.wait(done_calls, num_returns=len(done_calls), timeout=timeout)
        try:
            return len(ready) == len(done_calls) and all(self.ray.get(ready))
        except self.ray.exceptions.RayActorError:
            return False

    def close(self) -> FleetResult:
        """Every stream finishes its output; the outcome of each."""
        if self.head.lost():  # (Ray's calls, and its shutdown, would wait for the head until Ray ends the process)
            return FleetResult([], time.perf_counter() - self._start_time)
        try:
            outcomes = [o for group in self.ray.get([a.stop.remote() for a in self.actors]) for o in group]
        finally:
            self.ray.shutdown()
        return FleetResult(outcomes, time.perf_counter() - self._start_time)

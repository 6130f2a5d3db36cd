"""``streamdehaze batch IN_DIR OUT_DIR``: every video and image under a folder, dehazed into the same tree under
another, each file with a single run's guarantees (timestamps, audio, an output that appears only when complete).

- Resumable: a file whose output exists is skipped. Outputs appear only when complete (``outputs.py``), so a rerun
  after a crash, a kill or Ctrl-C does only what is missing. Delete an output to have it redone.
- Batches side by side into the same output folder (two machines on a shared disk, or a second run started by
  mistake) share the work: the one dehazing a file holds a lock (``flock``) on a hidden ``.NAME.claim`` beside its
  output, and the others pass it by. (Batches into other folders, two models compared, each do every file.)
- A file that fails is reported and the others go on; the run exits 1 at the end, with counts.
- Several files at once (``jobs``) run in as many worker processes, each with its own engine: the threads of one
  process (decoding, the model, encoding) share one interpreter lock, which holds a process well below a
  machine's cores (BENCHMARKS.md, batch). A worker that dies has its file done again by a new one.
- ``--ray ADDRESS`` spreads the files over a Ray cluster instead (``cluster.py``); each worker runs a ``LocalBatch``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import multiprocessing
import multiprocessing.connection
import signal
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av

from .config import StreamConfig
from .encoders import encoder, quality_options
from .engine import Engine, resolve_device
from .errors import StreamDehazeError, UsageError
from .fleet import Lane, StreamLabels
from .images import dehaze_image_file, image_engine, is_image
from .job import Job
from .models import create_model, default_model
from .outputs import check_writable, is_partial
from .pipeline import Stream
from .formats import VIDEO_SUFFIXES, default_encoder, output_muxer
from .sources import main_video

log = logging.getLogger("streamdehaze")

STATUSES = ("done", "skipped", "elsewhere", "failed", "interrupted")


@dataclass(frozen=True)
class Item:
    """One file of a batch: ``name`` is its path under the input folder (it labels log lines and results)."""

    name: str
    input: str
    output: str
    image: bool
    frames: int = 0  # from the container's header; 0 when it does not say


@dataclass
class FileResult:
    """What became of one file: ``done``, ``skipped`` (its output was there), ``elsewhere`` (another batch was
    dehazing it), ``failed`` (``error`` says why) or ``interrupted`` (the run was stopped; nothing of it is at the
    output)."""

    name: str
    input: str
    output: str
    status: str
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class BatchResult:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    ignored: int = 0  # files under the input folder that are neither videos nor images

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def frames(self) -> int:
        """The frames dehazed and written: a truncated file's too (a file skipped or failed otherwise has none)."""
        return sum(f.frames for f in self.files)

    def as_json(self) -> dict[str, Any]:
        return {"files": len(self.files), **{s: self.count(s) for s in STATUSES},
                "ignored": self.ignored, "frames": self.frames, "seconds": round(self.seconds, 3),
                "fps": round(self.frames / self.seconds, 3) if self.seconds > 0 else 0.0,
                "results": [asdict(f) for f in sorted(self.files, key=lambda f: f.name)]}


# Why a file under the input folder is left out: (one file, several files)
LEFT_OUT = {"name": ("not a video or image by its name", "not videos or images by their names"),
            "special": ("not a regular file (a named pipe, a device, a broken link)", "not regular files (named pipes, "
                        "devices, broken links)"),
            "output": ("in the output folder, inside the input folder", "in the output folder, inside the input "
                       "folder")}


def plan(src: Path, dst: Path) -> tuple[list[Item], dict[str, int]]:
    """The videos and images under ``src`` (linked folders followed; hidden files and folders left out), each with
    its output at the same place under ``dst``; and how many other files were left out, by reason (``LEFT_OUT``):
    the videos and images in ``dst`` where it is inside ``src`` among them."""
    if not src.is_dir():
        raise UsageError(f"input folder not found: {src}" if not src.exists() else f"input is not a folder: {src}")
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"output is not a folder: {dst}")
    src, dst = src.resolve(), dst.resolve()
    if dst == src:
        raise UsageError(f"output folder {dst} is the input folder: refusing to overwrite the inputs")
    if src.is_relative_to(dst):
        raise UsageError(f"input folder {src} is inside the output folder {dst}")
    items, ignored = [], dict.fromkeys(LEFT_OUT, 0)
    seen = {src}  # folders reached, by their real path: links are followed, each folder once (no loops)
    for root, dirs, files in os.walk(src, followlinks=True):
        here = Path(root)
        kept = []
        for name in sorted(dirs):
            real = (here / name).resolve()
            if (here / name).is_symlink() and real.is_relative_to(src):
                continue  # a link to a folder of the tree: its files go under its own name, not the link's
            if real == dst:  # the user's own files in it are said to be left out; the outputs of earlier runs not
                ignored["output"] += sum(1 for path in dst.rglob("*")
                                         if _media(path) and not (src / path.relative_to(dst)).is_file())
            elif not name.startswith(".") and real not in seen:
                seen.add(real)
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            path = here / name
            # ours: hidden writers, and what an interrupted video run keeps (NAME.partial[.N].EXT; a photo keeps none)
            if name.startswith(".") or is_partial(path) and not is_image(path):
                continue
            if not _media_name(path):
                ignored["name"] += 1
                continue
            if not path.is_file():  # (a named pipe or a device would block the run forever; a broken link: no data)
                ignored["special"] += 1
                continue
            relative = path.relative_to(src)
            image = is_image(path)
            items.append(Item(str(relative), str(path), str(dst / relative), image, 1 if image else _frames(path)))
    return items, ignored


def _media_name(path: Path) -> bool:
    """Whether ``path`` is named as a video or image."""
    return is_image(path) or path.suffix.lower() in VIDEO_SUFFIXES


def _media(path: Path) -> bool:
    """A video or image by its name, not hidden nor a partial, as ``plan`` takes them."""
    return (path.is_file() and not path.name.startswith(".") and _media_name(path)
            and (is_image(path) or not is_partial(path)))


def _frames(path: Path) -> int:
    """The frame count a container's header gives (or its duration times its rate); 0 if it gives neither."""
    try:
        with av.open(str(path)) as container:
            stream = main_video(container)
            if stream is None:
                return 0
            if stream.frames:
                return stream.frames
            if container.duration and stream.average_rate:
                return round(container.duration / av.time_base * float(stream.average_rate))
    except (av.FFmpegError, OSError):
        pass  # the run says what is wrong with it
    return 0


class LocalBatch:
    """Files dehazed one at a time on one engine in this process (the model loaded once).

    ``options``: stream options as the command line names them (``StreamConfig.from_options``)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = dict(options)
        model = StreamConfig.from_options("", None, **options).model
        self.device = resolve_device(model.device)
        self.model_name = default_model(self.device) if model.model == "auto" and model.weights is None else model.model
        net = create_model(self.model_name, model.weights, self.device)
        self.lane = Lane(Engine(net, self.device, model.infer_size, compile=model.compile, strength=model.strength,
                                noise_floor=model.noise_floor))
        self.images = image_engine(net, self.device, model.infer_size, model.strength, model.noise_floor)
        self._stream: Stream | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._labels = StreamLabels()  # log lines about a file start with its name
        log.addFilter(self._labels)

    def run_one(self, item: Item, on_frames: Callable[[int], None] | None = None) -> FileResult:
        """One file: skipped if its output exists, ``interrupted`` if ``stop()`` came first."""
        result = FileResult(item.name, item.input, item.output, "done")
        if self._stop.is_set():
            result.status = "interrupted"
            return result
        claim = _claim(Path(item.output))
        if claim is None:
            log.warning("%s: another batch is dehazing it: left to that one", item.name)
            result.status = "elsewhere"
            return result
        if Path(item.output).exists():  # (after the claim: another batch may have just finished it)
            _release(claim, Path(item.output))
            result.status = "skipped"
            return result
        thread = threading.current_thread()
        name, thread.name = thread.name, f"stream {item.name}"  # log lines about it start with its name
        start = time.perf_counter()
        try:
            Path(item.output).parent.mkdir(parents=True, exist_ok=True)
            if item.image:
                dehaze_image_file(self.images, Path(item.input), Path(item.output))
                result.frames = 1
                if on_frames is not None:
                    on_frames(1)
            else:
                run = self._video(item, on_frames)
                result.frames = run.frames
                if run.interrupted:
                    result.status = "interrupted"
        except StreamDehazeError as exc:
            result.status, result.error = "failed", str(exc)
            result.frames = getattr(exc, "frames", 0)  # (a truncated input's output holds those before the cut)
        except OSError as exc:
            result.status, result.error = "failed", f"{exc.strerror}: {exc.filename}"
        except Exception as exc:  # a fault of ours, or of a library, on this file: the others still get done
            log.debug("%s failed", item.name, exc_info=True)
            result.status, result.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            thread.name = name
            _release(claim, Path(item.output))
        result.seconds = time.perf_counter() - start
        return result

    def _video(self, item: Item, on_frames: Callable[[int], None] | None):
        job = Job(StreamConfig.from_options(item.input, item.output, name=item.name, **self.options),
                  on_frames=on_frames)
        job.check()
        with job.open():
            stream = job.start(item.name)
            with self._lock:
                self._stream = stream
            try:
                if self._stop.is_set():
                    stream.stop()
                self.lane.scheduler.add(stream)
                stream.drained.wait()
                return job.complete(interrupted=stream.stopped)
            except BaseException:
                # (Ray's SIGTERM handler raises SystemExit in the wait) The stream's reader lets go of the source
                # before it is closed: closing it under the reader raised a ValueError in place of the exit, and the
                # file was failed instead of done again by another worker. Its unfinished output goes.
                stream.stop()
                stream.reader.close()
                job.abort()
                raise
            finally:
                with self._lock:
                    self._stream = None

    def stop(self) -> None:
        """The file being dehazed stops (keeping what it finished as ``NAME.partial.EXT``); no more start."""
        self._stop.set()
        with self._lock:
            if self._stream is not None:
                self._stream.stop()

    def close(self) -> None:
        self.lane.close()
        log.removeFilter(self._labels)


def _claim_file(output: Path) -> Path:
    return output.with_name(f".{output.name}.claim")


def _claim(output: Path) -> int | None:
    """``output`` claimed for this batch alone (a lock on ``.NAME.claim`` beside it): the claim's descriptor, -1
    where none could be taken (a folder that cannot be written: the run says why; a filesystem without locks; no
    regular file there), None where another batch holds it."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        # Another batch's claim is opened as it is, but no link is followed (one planted in a shared folder would
        # have a root batch create or lock any file) and no pipe waited on.
        fd = os.open(_claim_file(output), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError:
        return -1
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (the kernel lets go when the process ends, killed too)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        pass
    return fd


def _release(claim: int, output: Path) -> None:
    """Let go of a claim, its file gone first (the output is in place by then: a batch that claims it afresh skips
    it)."""
    if claim >= 0:
        with contextlib.suppress(OSError):
            _claim_file(output).unlink()
        os.close(claim)


ATTEMPTS = 3  # a file whose worker dies this many times is failed, not retried forever
STOP_S = 10.0  # on Ctrl-C, how long the files in progress have to stop and keep what they finished


class WorkerProcesses:
    """``jobs`` worker processes, each dehazing one file at a time on its own ``LocalBatch`` with ``threads``
    threads for torch and OpenCV. ``run`` hands out the files and reports each result; on Ctrl-C or SIGTERM the
    files in progress stop as in one process (what each finished kept as ``NAME.partial.EXT``), for ``STOP_S`` at
    most; ``close`` ends the workers (a file still in progress then leaves nothing).

    Each worker reports on a pipe of its own: a worker killed in the middle of a message (SIGKILL, the OOM killer)
    then cuts only its own pipe, where on a shared queue it would keep the queue's lock, and the others' results,
    for ever."""

    def __init__(self, options: dict[str, Any], jobs: int, threads: int) -> None:
        self._context = multiprocessing.get_context("spawn")  # fork would copy torch's threads and locks
        self._options, self._threads = options, threads
        self._workers = [self._start(i) for i in range(jobs)]

    def _start(self, index: int) -> _Worker:
        tasks = self._context.Queue()
        results, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(target=_worker_main, name=f"streamdehaze-batch-{index}", daemon=True,
                                        args=(index, self._options, self._threads, tasks, sender))
        process.start()
        sender.close()  # (the worker's end: with ours closed, its death reads as the end of its pipe)
        return _Worker(process, tasks, results)

    def run(self, items: list[Item], on_result: Callable[[FileResult], None],
            on_frames: Callable[[int], None] | None = None, check: Callable[[], None] = lambda: None) -> None:
        """Dehaze ``items``; ``check()`` is called a few times a second (a ``KeyboardInterrupt`` from it stops
        the run: ``close()`` then ends the workers)."""
        pending, attempts = deque(items), {item.name: 0 for item in items}
        busy: dict[int, Item] = {}
        try:
            while pending or busy:
                check()
                for index, worker in enumerate(self._workers):
                    if index not in busy and pending:
                        busy[index] = pending.popleft()
                        worker.tasks.put(busy[index])
                self._receive(busy, on_result, on_frames,
                              lambda index: self._died(index, pending, busy, attempts, on_result))
        except KeyboardInterrupt:
            self._stop(busy, on_result, on_frames, check)
            for item in [*busy.values(), *pending]:
                on_result(FileResult(item.name, item.input, item.output, "interrupted"))
            raise

    def _receive(self, busy: dict[int, Item], on_result: Callable[[FileResult], None],
                 on_frames: Callable[[int], None] | None, died: Callable[[int], None], stopping: bool = False) -> None:
        """The workers' messages of the next 0.2 s: frame counts, results (their files no longer busy); while
        ``stopping``, only from the workers still busy."""
        heard = {index: worker for index, worker in enumerate(self._workers) if not stopping or index in busy}
        ready = multiprocessing.connection.wait([worker.results for worker in heard.values()], timeout=0.2)
        for index, worker in heard.items():
            if worker.results not in ready:
                continue
            try:
                kind, _, value = worker.results.recv()
            except (EOFError, OSError):  # it died (its last message cut short, if it was sending one)
                died(index)
                continue
            if kind == "frames" and on_frames is not None:
                on_frames(value)
            elif kind == "done":
                del busy[index]
                on_result(value)
            elif kind == "error":  # the worker could not start (a bad --weights, no such device)
                raise value

    def _stop(self, busy: dict[int, Item], on_result: Callable[[FileResult], None],
              on_frames: Callable[[int], None] | None, check: Callable[[], None]) -> None:
        """The files in progress stopped (SIGTERM to their workers: each keeps what it finished) and their results
        taken, for ``STOP_S`` at most or until another interrupt; those still busy then are left to ``close``."""
        for index in busy:
            with contextlib.suppress(OSError):
                os.kill(self._workers[index].process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_S
        try:
            while busy and time.monotonic() < deadline:
                check()
                self._receive(busy, on_result, on_frames, lambda index: busy.pop(index), stopping=True)
        except KeyboardInterrupt:
            pass

    def _died(self, index: int, pending: deque[Item], busy: dict[int, Item], attempts: dict[str, int],
              on_result: Callable[[FileResult], None]) -> None:
        """Worker ``index`` is gone: its file, if it had one, is done again (or failed after ``ATTEMPTS``), by a
        new worker in its place."""
        worker = self._workers[index]
        worker.process.join()
        worker.close()
        item = busy.pop(index, None)
        if item is not None:
            attempts[item.name] += 1
            if attempts[item.name] < ATTEMPTS:
                log.warning("%s: its worker process died (exit %s); doing it again", item.name,
                            worker.process.exitcode)
                pending.appendleft(item)
            else:
                on_result(FileResult(item.name, item.input, item.output, "failed",
                                     error=f"its worker process died {ATTEMPTS} times while dehazing it"))
        self._workers[index] = self._start(index)

    def close(self) -> None:
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.kill()
        for worker in self._workers:
            worker.process.join()
            worker.close()


@dataclass
class _Worker:
    process: Any  # multiprocessing's Process
    tasks: Any  # its Queue of Items (None: no more)
    results: Any  # the reading end of its pipe

    def close(self) -> None:
        # The queue's feeder thread joined: while it lives it holds the queue's semaphores, which a process that
        # ends without its interpreter's shutdown (cli.entry) then left behind, and Python's resource tracker
        # said so ("There appear to be 2 leaked semaphore objects").
        self.tasks.close()
        self.tasks.join_thread()
        self.results.close()


def _worker_main(index: int, options: dict[str, Any], threads: int, tasks: Any, results: Any) -> None:
    """A worker process: files from ``tasks`` until ``None``; ("frames", i, n), ("done", i, FileResult) or, if it
    cannot start, ("error", i, exception) sent on the pipe ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    threading.Thread(target=_end_with_parent, name="parent watch", daemon=True).start()
    use_threads(threads)
    lock = threading.Lock()  # frame counts come from the encoding thread, results from this one

    def send(message: tuple) -> None:
        with lock:
            results.send(message)

    try:
        batch = LocalBatch(options)
    except StreamDehazeError as exc:
        send(("error", index, exc))
        return
    # SIGTERM from the parent (the run was interrupted): the file under way stops, keeping what it finished. From
    # a thread: the handler runs in this one, which may hold the batch's lock.
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=batch.stop, name="stop").start())
    try:
        while (item := tasks.get()) is not None:
            send(("done", index, batch.run_one(item, lambda n: send(("frames", index, n)))))
    finally:
        batch.close()


def _end_with_parent() -> None:
    """End this worker process once its parent is gone (killed: SIGKILL, the OOM killer), whatever it is doing: it
    would otherwise wait for work for ever. A file in progress leaves nothing (its output is written whole or not
    at all) and is done again by the next run."""
    multiprocessing.parent_process().join()  # (its end, seen through the pipe the spawn left open)
    os._exit(1)


def use_threads(threads: int) -> None:
    """A worker process's share of its machine, for torch and OpenCV (the process is ours, not an application's)."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def check_output_folder(dst: Path) -> None:
    """The output folder takes files, or can be made where it is missing (it is made with the first output, so
    that a run that ends with a usage error leaves no folder behind)."""
    existing = dst.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot make output folder {dst}: {existing} is not a folder")
    check_writable(existing)


def check_encoding(items: list[Item], options: dict[str, Any]) -> None:
    """``codec``, ``crf`` and ``preset`` suit the encoder of every kind of video output (a WebM's is VP9): a usage
    error before anything starts, not a failure of every file."""
    for suffix in sorted({Path(item.output).suffix.lower() for item in items if not is_image(Path(item.input))}):
        codec = options.get("codec") or default_encoder(output_muxer(f"out{suffix}"))
        try:
            encoder(codec)
            quality_options(codec, options.get("crf"), options.get("preset"))
        except UsageError as exc:
            raise UsageError(f"the {suffix} videos ({codec}): {exc}") from None

"""The command line's work, behind ``cli.main``: options (each checked: one line and exit 2 for a mistake), the
run, and its summary. Heavy imports live here so that the entry point stays light."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import tqdm

from .api import process
from .batch import (LEFT_OUT, STATUSES, BatchResult, FileResult, LocalBatch, WorkerProcesses, check_encoding,
                    check_output_folder, plan)
from .credentials import from_environment, mask
from .engine import Engine, resolve_device
from .errors import UsageError
from .images import (ImagesSkipped, dehaze_image_url, dehaze_images, image_engine, image_names, is_image,
                     is_image_url)
from .job import check_stats_file
from .live import LiveOptions, LiveSource, is_live
from .models import create_model, model_name
from .config import StreamConfig, load_config
from .fleet import Fleet, FleetResult, open_reporter, within_file
from .options import video_options_given
from .outputs import (atomic_output, check_statistics_among, check_statistics_file, check_writable,
                      remove_empty_folders)
from .pipeline import RunResult, deferred_signals, stopping
from .sources import VideoFileSource, is_file, local_file
from .stats import Reporter, RunStats
from .tuning import tuned, usable_cores

log = logging.getLogger("streamdehaze")


def run(which: str, args: argparse.Namespace, reloads: list[int] | None = None) -> int:
    """Run what ``options.parse_command`` parsed; errors are raised for ``cli.main`` to report. ``reloads``: SIGHUPs
    that reached ``serve`` before it ran (``cli.main`` records them from the start)."""
    # FFmpeg's own messages would bury ours; errors reach us as exceptions. (Not a level that keeps PyAV's log
    # callback on to explain them: FFmpeg's decoding threads then take Python's lock to log, and a thread that holds
    # it while it waits for them hangs the process.)
    av.logging.set_level(None)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # likewise OpenCV's, for damaged images
    # (--compile on a CPU: "No CUDA runtime is found, using CUDA_HOME=...", torch's warning when it loads its compiler)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if which == "serve":
        return serve(args, [] if reloads is None else reloads)
    if which == "batch":
        return batch(args)
    log.setLevel(logging.ERROR if args.quiet else logging.INFO)
    args.input, args.output = from_environment(args.input), from_environment(args.output)
    return _run(args)


def serve(args: argparse.Namespace, reloads: list[int]) -> int:
    """``streamdehaze serve CONFIG.toml [--duration S]``: the streams of a configuration, in one process, until
    they end, for ``S`` seconds, or until Ctrl-C / SIGTERM; SIGHUP re-reads the configuration (``fleet.py``).
    Exit 0, or 1 when a stream failed, 130 when a file stream was cut short. ``reloads`` holds the SIGHUPs
    received so far."""
    if args.workers is not None and args.ray is None:
        raise UsageError("--workers needs --ray (one process runs every stream)")
    if args.ray is not None:
        return _serve_on_ray(args, reloads)
    # SIGHUPs are recorded until the streams run: one sent while they start (a service manager's reload) is
    # applied then, not taken for an interrupt. A handler only records: the thread it interrupts may hold any lock.
    previous = signal.getsignal(signal.SIGHUP)
    if previous is not signal.SIG_IGN:  # ignored at start (nohup): stays so
        signal.signal(signal.SIGHUP, lambda signum, frame: reloads.append(signum))
    try:
        fleet = Fleet(args.config)
        quiet = args.quiet or fleet.config.quiet
        log.setLevel(logging.ERROR if quiet else logging.INFO)
        fleet.start()
    except BaseException:
        signal.signal(signal.SIGHUP, previous)
        raise
    tuning = contextlib.ExitStack()  # the command line tunes its own process (tuning.py), for every engine's device
    for device in fleet.devices:
        tuning.enter_context(tuned(device))
    try:
        with deferred_signals() as run_handlers:  # Ctrl-C and SIGTERM: a KeyboardInterrupt here, between checks
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while True:
                run_handlers()
                if reloads:
                    reloads.clear()
                    try:
                        fleet.reload(args.config)
                    except UsageError as exc:
                        log.error("reload: %s; the running configuration stays", exc)
                if fleet.wait(0.2):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    fleet.stop()
                    deadline = None
    except KeyboardInterrupt:
        log.info("stopping: every stream finishes its output")
    finally:
        signal.signal(signal.SIGHUP, previous)
        with stopping():
            fleet.stop()
            result = fleet.close()
    tuning.close()
    if not quiet:
        for line in summary(result):
            print(f"streamdehaze: {line}", file=sys.stderr)
    return _serve_exit(result)


def _serve_exit(result: FleetResult) -> int:
    """1 when a stream failed, 130 when a file stream was cut short (not by a reload: the operator's choice), else
    0."""
    if result.failed:
        return 1
    cut = [s for s in result.streams if s.result is not None and s.result.interrupted and not s.live
           and s.reload is None]
    return 130 if cut else 0


def _ray_settings(address: str) -> None:
    """This command's settings of Ray, which reads them from the environment: a throw-away instance (``local``) on
    the loopback interface only; the workers' lines without colour codes where standard error is not a terminal
    (a log file, a service's journal)."""
    if address == "local":
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def _serve_on_ray(args: argparse.Namespace, hangups: list[int]) -> int:
    """``serve --ray``: the streams spread over a Ray cluster's devices (``cluster.py``), until they end, for
    ``--duration``, or until Ctrl-C / SIGTERM (SIGHUP too: a reload needs the one-process fleet)."""
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.default_int_handler)  # (cli.main puts its own back)
    if hangups:  # (one came while it loaded)
        raise KeyboardInterrupt
    config = load_config(args.config)
    quiet = args.quiet or config.quiet
    log.setLevel(logging.ERROR if quiet else logging.INFO)
    _ray_settings(args.ray)
    from .cluster import ClusterFleet  # Ray is an optional extra
    fleet = ClusterFleet(config, args.ray, args.workers)  # every stream checked, then the cluster connected
    reporter = None
    try:  # the metrics port taken before any worker starts: a mistake there starts nothing
        with within_file(config):
            reporter = open_reporter(config, lambda: fleet.members)
        fleet.start()
    except BaseException:
        fleet.close()
        if reporter is not None:
            reporter.close()
        raise
    try:
        with deferred_signals() as run_handlers:
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while not fleet.poll():
                run_handlers()
                if deadline is not None and time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        log.info("stopping: every stream finishes its output")
    finally:
        with stopping():
            result = fleet.close()
            if reporter is not None:
                reporter.close()
    if not quiet:
        for line in summary(result):
            print(f"streamdehaze: {line}", file=sys.stderr)
    return _serve_exit(result)


def batch(args: argparse.Namespace) -> int:
    """``streamdehaze batch IN_DIR OUT_DIR``: every video and image under IN_DIR into the same tree under OUT_DIR
    (``batch.py``), here or on a Ray cluster (``--ray``). Exit 0, 1 when a file failed, 130 when interrupted."""
    log.setLevel(logging.ERROR if args.quiet else logging.INFO)
    if args.workers is not None and args.ray is None:
        raise UsageError("--workers needs --ray (without it, --jobs sets the processes on this machine)")
    if args.jobs is not None and args.ray is not None:
        raise UsageError("--jobs is for this machine; with --ray, --workers sets how many workers")
    items, ignored = plan(args.input, args.output)
    if not items:
        raise UsageError(f"no videos or images under {args.input}")
    check_output_folder(args.output)
    made = not args.output.exists()  # (a run that writes nothing leaves no folder it made: see below)
    if args.stats_json is not None:  # (in the output folder, it is made with it)
        shown = f"--stats-json {args.stats_json}"
        check_statistics_among(args.stats_json, ((i.name, i.input, i.output) for i in items), shown, "the batch")
        check_statistics_file(args.stats_json, shown)
        if args.stats_json.absolute().is_relative_to(args.output.absolute()):
            check_output_folder(args.stats_json.parent)
        else:
            check_writable(args.stats_json.parent)
    options = {key: getattr(args, key) for key in FILE_OPTIONS}
    # (absolute: Ray's workers run in the folder the cluster was started in)
    options["weights"] = None if args.weights is None else str(args.weights.absolute())
    check_encoding(items, options)
    result = BatchResult(ignored=sum(ignored.values()))
    todo = []
    for item in items:  # done before: counted now, so that the bar and its ETA cover only what is left
        if Path(item.output).exists():
            result.files.append(FileResult(item.name, item.input, item.output, "skipped"))
        else:
            todo.append(item)
    start = time.perf_counter()
    total = sum(min(i.frames, args.max_frames or i.frames) for i in todo)  # (each file stops at --max-frames)
    with tqdm.tqdm(total=total or None, unit="frame", disable=_no_bar(args), dynamic_ncols=True) as bar:
        def on_result(file: FileResult) -> None:
            result.files.append(file)
            if file.status == "failed":
                log.error("%s: failed: %s", file.name, file.error)
            bar.set_postfix_str(f"{len(result.files)}/{len(items)} files", refresh=True)

        if args.ray is not None:
            _ray_settings(args.ray)
            from .cluster import run_batch  # Ray is an optional extra
            create_model(args.model, options["weights"], resolve_device("cpu"))  # weights that load, before Ray
            interrupted = run_batch(args.ray, todo, options, on_result, workers=args.workers,
                                    on_frames=bar.update)
        else:
            interrupted = _run_here(todo, options, args.jobs, on_result, bar.update)
    with stopping() if interrupted else contextlib.nullcontext():  # (its summary and statistics, whatever comes)
        result.seconds = time.perf_counter() - start
        if made:  # the folders made for files that failed or were interrupted, and OUT_DIR if nothing was written
            remove_empty_folders(args.output)
        if args.stats_json is not None:
            args.stats_json.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(args.stats_json) as tmp:
                tmp.write_text(json.dumps({"input": str(args.input), "output": str(args.output), **result.as_json()},
                                          indent=2) + "\n")
        counts = ", ".join(f"{result.count(s)} {s}" for s in STATUSES if result.count(s) or s == "done")
        line = (f"batch: {len(items)} {'file' if len(items) == 1 else 'files'} ({counts}); {result.frames} frames in "
                f"{result.seconds:.2f} s ({result.frames / max(result.seconds, 1e-9):.1f} fps) -> {args.output}")
        if result.ignored:  # (notes, a GIF, a named pipe: left out, and said so)
            counted = {why: count for why, count in ignored.items() if count}  # (a count each where reasons differ)
            reasons = [LEFT_OUT[why][count > 1] if len(counted) == 1 else f"{count} {LEFT_OUT[why][count > 1]}"
                       for why, count in counted.items()]
            line += f"; {result.ignored} {'file' if result.ignored == 1 else 'files'} left out: {', '.join(reasons)}"
        if result.count("failed"):
            log.error("%s", line)
        elif not args.quiet:
            print(f"streamdehaze: {line}", file=sys.stderr)
    if interrupted:
        log.warning("interrupted: run the same command again to do what is left")
        return 130
    return 1 if result.count("failed") else 0


def _run_here(items: list, options: dict, jobs: int | None, on_result: Callable[[FileResult], None],
              on_frames: Callable[[int], None]) -> bool:
    """The files on this machine: one at a time in this process, or ``jobs`` at a time in worker processes.
    True if Ctrl-C or SIGTERM stopped the run."""
    if not items:
        return False
    device = resolve_device(options["device"])
    jobs = min(jobs or _default_jobs(device), len(items))
    try:
        if jobs == 1:
            _run_in_this_process(items, options, device, on_result, on_frames)
        else:
            workers = WorkerProcesses(options, jobs, threads=max(1, usable_cores() // jobs))
            try:
                with deferred_signals() as run_handlers:
                    workers.run(items, on_result, on_frames, check=run_handlers)
            finally:
                workers.close()
    except KeyboardInterrupt:
        return True
    return False


def _run_in_this_process(items: list, options: dict, device, on_result: Callable[[FileResult], None],
                         on_frames: Callable[[int], None]) -> None:
    runner = LocalBatch(options)
    stopped = False
    failure: list[BaseException] = []

    def run() -> None:
        try:
            for item in items:  # once stopped, the rest come back as interrupted at once
                on_result(runner.run_one(item, on_frames))
        except BaseException as exc:  # raised again below: the batch does not end as if it were done
            failure.append(exc)

    try:
        with tuned(device), deferred_signals() as run_handlers:
            worker = threading.Thread(target=run, name="batch")
            worker.start()
            while worker.is_alive():
                try:
                    run_handlers()
                except KeyboardInterrupt:
                    stopped = True
                    runner.stop()
                worker.join(0.2)
    finally:
        runner.close()
    if failure:
        raise failure[0]
    if stopped:
        raise KeyboardInterrupt


def _default_jobs(device) -> int:
    """Files at once: a worker process per core on CPU (BENCHMARKS.md, batch), two per GPU."""
    return 2 if device.type == "cuda" else usable_cores()


FILE_OPTIONS = ("model", "weights", "device", "batch", "infer_size", "strength", "noise_floor", "compile", "hwaccel",
                "temporal", "temporal_strength", "codec", "crf", "preset", "strict", "max_frames", "duration")


def _unpublished(result: RunResult) -> str:
    """What a server published to missed, when it did."""
    if not result.unpublished and not result.output_reconnects:
        return ""
    return f", {result.unpublished} not published, {result.output_reconnects} output reconnects"


def summary(result: FleetResult) -> list[str]:
    """One line per stream and one for the fleet."""
    lines = []
    dropped = reconnects = 0
    for s in result.streams:
        if s.error is not None:
            lines.append(f"{s.name}: failed: {s.error}")
        elif s.result is None:
            lines.append(f"{s.name}: " + (f"{s.reload} by a reload before it began" if s.reload else "never connected"))
        if s.result is None:
            continue
        r = s.result
        dropped, reconnects = dropped + r.dropped, reconnects + r.reconnects
        notes = [f"{s.reload} by a reload"] if s.reload else []
        # (where a restarted file stream finished, its new run removed what the one before had kept)
        if r.interrupted and r.output and (s.reload is None or Path(r.output).exists()):
            notes.append(f"cut short: {r.output}")
        written = r.output if r.output and not r.interrupted else s.output  # (segments: which were written)
        corrupt = f", {r.corrupt} corrupt packets skipped" if r.corrupt else ""  # (as a single run says)
        lines.append(f"{s.name}: {r.frames} frames in {r.seconds:.2f} s ({r.fps:.1f} fps, {r.dropped} dropped, "
                     f"{r.reconnects} reconnects{_unpublished(r)}{corrupt}) -> {mask(written, s.output)}"
                     + (f" ({'; '.join(notes)})" if notes else ""))
    failed = f", {len(result.failed)} failed" if result.failed else ""
    streams = len({s.name for s in result.streams})  # (a stream restarted by a reload is one)
    lines.append(f"fleet: {streams} stream{'' if streams == 1 else 's'}, {result.frames} frames in "
                 f"{result.seconds:.2f} s ({result.fps:.1f} fps, {dropped} dropped, {reconnects} reconnects){failed}")
    return lines


def _run(args: argparse.Namespace) -> int:
    src, dst = Path(args.input), Path(args.output)
    on_disk = is_file(args.input)
    if (local := local_file(args.input)) is not None and not local.exists():  # (a file: URL's too)
        raise UsageError(f"input not found: {args.input}")
    if args.stats_json is not None:
        check_stats_file(args.stats_json, StreamConfig(args.input, args.output), f"--stats-json {args.stats_json}")
        check_statistics_file(args.stats_json, f"--stats-json {args.stats_json}")
        if on_disk and src.is_dir():
            check_statistics_among(args.stats_json, ((name, src / name, dst / name) for name in image_names(src)),
                                   f"--stats-json {args.stats_json}", "the run")
    device = resolve_device(args.device)
    args.model = model_name(args.model, args.weights, device)  # name what runs, in the stats and the summary line
    if on_disk and (src.is_dir() or is_image(src)) or is_image_url(args.input):
        if ignored := video_options_given(args):  # (they were ignored without a word)
            log.warning("%s: for video only; images are dehazed without %s", ", ".join(ignored),
                        "it" if len(ignored) == 1 else "them")
        engine = image_engine(create_model(args.model, args.weights, device), device, args.infer_size,
                              args.strength, args.noise_floor)
        start = time.perf_counter()
        try:
            with tqdm.tqdm(unit="img", disable=_no_bar(args), dynamic_ncols=True) as bar:
                if on_disk:
                    result = _timed(lambda: dehaze_images(engine, src, dst, on_image=bar.update))
                else:
                    result = _timed(lambda: dehaze_image_url(engine, args.input, dst))
        except ImagesSkipped as exc:  # the statistics of what was written, then the error
            _write_stats(args, RunResult(frames=exc.written, seconds=time.perf_counter() - start,
                                         settings=_image_settings(engine)), "images")
            raise
        result.settings = _image_settings(engine)
        return _finish(args, result, "images")
    if is_image(dst):
        raise UsageError(f"input is a video, so the output must be a video file, not an image: {dst}")
    live = is_live(args.input)
    stats = RunStats()
    reporter = None
    if args.metrics_port is not None or (live and args.stats_json is not None):
        reporter = Reporter(stats, args.stats_json if live else None, args.metrics_port,
                            labels={"input": args.input, "output": args.output, "model": args.model})
    try:
        with tuned(device), tqdm.tqdm(unit="frame", disable=_no_bar(args), dynamic_ncols=True) as bar:
            def on_start(source: VideoFileSource | LiveSource) -> None:
                bar.total = min(source.info.frames or 0, args.max_frames or sys.maxsize) or None
                bar.refresh()
            result = process(
                args.input, args.output, model=args.model, weights=args.weights, device=args.device,
                infer_size=args.infer_size, strength=args.strength, noise_floor=args.noise_floor,
                temporal=args.temporal,
                temporal_strength=args.temporal_strength,
                batch=args.batch, hwaccel=args.hwaccel, compile=args.compile, codec=args.codec, crf=args.crf,
                preset=args.preset, strict=args.strict,
                max_frames=args.max_frames, duration=args.duration, segment_time=args.segment_time,
                live=LiveOptions(timeout=args.timeout, reconnect=args.reconnect, rtsp_transport=args.rtsp_transport),
                max_latency=args.max_latency, stats=stats, on_frames=bar.update, on_start=on_start,
                _option="--{} {}")
    finally:
        if reporter is not None:
            reporter.close()
    if live and result.interrupted:  # stopping a live run is the normal way to end it
        result.interrupted = False
    return _finish(args, result, "frames", write_stats=not live)


def _image_settings(engine: Engine) -> dict[str, object]:
    """What a photo run ran with, as a video run's statistics give it: the model's short side ("full": the photo's
    own), raised for a large photo so that the transform is stretched ``max_upscale`` times at most."""
    if engine.infer_size is None:
        return {"infer_size": "full", "device": str(engine.device)}
    return {"infer_size": engine.infer_size, "max_upscale": engine.max_upscale, "device": str(engine.device)}


def _timed(fn: Callable[[], int]) -> RunResult:
    start = time.perf_counter()
    count = fn()
    return RunResult(frames=count, seconds=time.perf_counter() - start)


def _no_bar(args: argparse.Namespace) -> bool:
    return args.quiet or not sys.stderr.isatty()


def _write_stats(args: argparse.Namespace, result: RunResult, unit: str) -> None:
    if args.stats_json is None:
        return
    stats = {"input": mask(args.input, args.input), "output": mask(result.output or args.output, args.output),
             "model": args.model, "strength": args.strength, "noise_floor": args.noise_floor, **result.settings,
             unit: result.frames, "frames": result.frames, "seconds": round(result.seconds, 4),
             "fps": round(result.fps, 3), "corrupt_packets": result.corrupt, "interrupted": result.interrupted}
    with atomic_output(args.stats_json) as tmp:
        tmp.write_text(json.dumps(stats, indent=2) + "\n")


def _finish(args: argparse.Namespace, result: RunResult, unit: str, write_stats: bool = True) -> int:
    output = result.output or args.output
    if write_stats:
        _write_stats(args, result, unit)
    if result.interrupted and result.frames == 0 and unit == "frames" and not is_live(args.input):
        log.warning("interrupted before the first frame was dehazed: nothing written%s",
                    f"; {args.output} is left as it was" if Path(args.output).exists() else "")
        return 130
    if result.interrupted:
        log.warning("interrupted: %s %s the %d frames dehazed so far%s", output,
                    "hold" if " .. " in str(output) else "holds", result.frames,  # (segments: "cam_00000.mp4 .. ")
                    f"; {args.output} is left as it was" if result.output and Path(args.output).exists() else "")
        return 130
    if not args.quiet:
        rate = f"{result.fps:.1f} fps" if unit == "frames" else f"{result.fps:.2f} images/s"
        extra = f", {result.dropped} dropped, {result.reconnects} reconnects{_unpublished(result)}" \
            if is_live(args.input) else ""
        if result.corrupt:
            extra += f", {result.corrupt} corrupt packets skipped"
        count = f"{result.frames} {unit if result.frames != 1 else unit[:-1]}"  # "1 image", "2 images"
        print(f"streamdehaze: {count} in {result.seconds:.2f} s ({rate}{extra}) with {args.model} -> "
              f"{mask(output, args.output)}", file=sys.stderr)
    return 0

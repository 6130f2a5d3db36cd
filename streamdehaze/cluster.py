"""Batches on a Ray cluster: ``streamdehaze batch IN_DIR OUT_DIR --ray ADDRESS`` (Ray is the ``ray`` extra).

Each worker is a Ray actor holding one ``LocalBatch``: one engine, its model loaded once, on the GPU or the CPUs Ray
gives it. The driver hands each worker one file at a time, so a slow file holds back nothing else.

Every node must see the input and output folders at the same paths (NFS, a shared volume) and run the same Python
environment with streamdehaze installed. Outputs are written as anonymous files named only when complete
(``outputs.py``, on filesystems with ``O_TMPFILE``: ext4, xfs, tmpfs, NFS 4.2+ servers on them; elsewhere a hidden
``.NAME.partial-PID`` that the next run removes). So a worker killed mid-file leaves nothing behind: Ray restarts
the actor (on any node with room) and the driver hands the file out again. A file that takes its worker down
three times is reported failed.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from .batch import FileResult, Item, LocalBatch
from .errors import UsageError
from .pipeline import deferred_signals

log = logging.getLogger("streamdehaze")

ATTEMPTS = 3  # a file whose worker dies this many times is failed, not retried forever


class DehazeWorker:
    """A Ray actor's state: one engine for the files it is given (``ray.remote`` is applied by ``run_batch``)."""

    def __init__(self, options: dict[str, Any]) -> None:
        logging.basicConfig(format="streamdehaze: %(message)s", level=logging.WARNING)
        self.batch = LocalBatch(options, jobs=1)

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
    try:
        if address == "local":
            ray.init(include_dashboard=False, logging_level=logging.WARNING, configure_logging=False)
        else:
            ray.init(address=address, logging_level=logging.WARNING, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    return ray


def run_batch(address: str, items: list[Item], options: dict[str, Any], on_result: Callable[[FileResult], None],
              *, workers: int | None = None, on_frames: Callable[[int], None] | None = None) -> bool:
    """Dehaze ``items`` on the Ray cluster at ``address``; ``on_result`` gets each file's result as it ends.
    Returns True if Ctrl-C or SIGTERM stopped it (the files in progress leave nothing; a rerun does them)."""
    if not items:
        return False
    ray = connect(address)
    try:
        return _dispatch(ray, items, options, on_result, workers, on_frames)
    finally:
        ray.shutdown()


def worker_resources(ray: Any, device: str, workers: int | None) -> tuple[int, dict[str, float]]:
    """How many workers, and what each reserves: a GPU each where the cluster has GPUs (and the device allows),
    else two CPUs each (decoding, the model and encoding overlap)."""
    total = ray.cluster_resources()
    gpus, cpus = int(total.get("GPU", 0)), int(total.get("CPU", 1))
    if gpus and device != "cpu":
        return workers or gpus, {"num_gpus": 1, "num_cpus": 1}
    if device == "cuda":
        raise UsageError("--device cuda: the Ray cluster has no GPU")
    count = workers or max(1, cpus // 2)
    return count, {"num_cpus": max(1, min(2, cpus // count))}


def _dispatch(ray: Any, items: list[Item], options: dict[str, Any], on_result: Callable[[FileResult], None],
              workers: int | None, on_frames: Callable[[int], None] | None) -> bool:
    from ray.exceptions import RayActorError

    count, resources = worker_resources(ray, options.get("device", "auto"), workers)
    # A killed worker is restarted by Ray; the file it had is handed out again by us (max_task_retries=0), so that
    # a file that kills every worker it meets ends as failed instead of restarting workers forever.
    actor = ray.remote(max_restarts=-1, max_task_retries=0, **resources)(DehazeWorker)
    pool = [actor.remote(options) for _ in range(min(count, len(items)))]
    pending, attempts = deque(items), {item.name: 0 for item in items}
    running: dict[Any, tuple[Any, Item]] = {}

    def hand_out(worker: Any) -> None:
        if pending:
            item = pending.popleft()
            running[worker.run.remote(item)] = (worker, item)

    try:
        with deferred_signals() as run_handlers:
            for worker in pool:
                hand_out(worker)
            while running:
                run_handlers()
                done, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
                for ref in done:
                    worker, item = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayActorError as exc:
                        attempts[item.name] += 1
                        if attempts[item.name] < ATTEMPTS:
                            log.warning("%s: its worker died (%s); doing it again", item.name, _first_line(exc))
                            pending.appendleft(item)
                            hand_out(worker)  # restarted by Ray
                            continue
                        result = FileResult(item.name, item.input, item.output, "failed",
                                            error=f"its worker died {ATTEMPTS} times while dehazing it")
                    if on_frames is not None and result.status == "done":
                        on_frames(result.frames)
                    on_result(result)
                    hand_out(worker)
    except KeyboardInterrupt:
        for worker in pool:  # files in progress leave nothing (anonymous outputs); a rerun does them
            ray.kill(worker)
        for worker, item in running.values():
            on_result(FileResult(item.name, item.input, item.output, "interrupted"))
        for item in pending:
            on_result(FileResult(item.name, item.input, item.output, "interrupted"))
        return True
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

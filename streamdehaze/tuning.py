"""Process-wide CPU tuning for video runs, which the library never applies behind its user's back: the command
line applies it to its own process, and an application may opt in with ``with streamdehaze.tuned(device):``.

- Threads: on CPU the model gets half the cores the process may use (its affinity: a container's cpuset) while a
  video runs. Decoding and encoding need the rest, and the engine's many small operations lose more to thread
  wake-ups than they gain from a second thread. An explicit OMP_NUM_THREADS wins. torch's and OpenCV's thread
  counts are restored afterwards: blocks that overlap (a camera loop per thread) share one saving, taken by the
  first to enter and restored by the last to leave, since a later one would save the tuned counts as its own.
- Memory: glibc keeps freed frame-sized blocks for reuse (``malloc.py``); that stays for the process's life.
- OpenMP workers that spin while idle (the default) starve the decoder's and encoder's threads:
  ``OMP_WAIT_POLICY=PASSIVE`` helps, but only before torch loads, so the command line sets it at start-up
  (``cli.py``) and an application sets it in its own environment.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import torch

from .engine import resolve_device
from .malloc import retain_freed_memory


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's cpuset, taskset), not the host's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_lock = threading.Lock()
_users = 0  # tuned() blocks open now, in any thread
_saved = (0, 0)  # the application's torch and OpenCV thread counts, as the first of them found them


@contextmanager
def tuned(device: str | torch.device = "cpu") -> Iterator[None]:
    """Tune this process for a video run on ``device`` until the block ends (see the module's notes)."""
    global _users, _saved
    device = device if isinstance(device, torch.device) else resolve_device(device)
    retain_freed_memory()
    with _lock:
        if _users == 0:
            _saved = torch.get_num_threads(), cv2.getNumThreads()
        _users += 1
        if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, usable_cores() // 2))
        cv2.setNumThreads(torch.get_num_threads())  # OpenCV's pool (the guided apply) follows the same budget
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                torch.set_num_threads(_saved[0])
                cv2.setNumThreads(_saved[1])

"""The library changes no process-wide setting behind its user's back: importing streamdehaze, a Dehazer call and
process() leave the environment, torch's and OpenCV's thread counts, torch's random stream and malloc's tuning as
they were. The command line tunes its own process (tuning.py), and an application can opt in with
``streamdehaze.tuned()``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EMBEDDED = r"""
import json, os, sys
import cv2, numpy as np, torch
env = dict(os.environ)  # after the application's own imports (OpenCV's import sets LD_LIBRARY_PATH)
torch.set_num_threads(2); cv2.setNumThreads(3)  # the application's own choices
import streamdehaze
from streamdehaze import malloc
after_import = dict(os.environ)
dehaze = streamdehaze.Dehazer("dcp")
dehaze(np.full((64, 96, 3), 128, np.uint8))
streamdehaze.process(sys.argv[1], sys.argv[2], model="dcp", max_frames=3)
result = {"env_kept": env == after_import == dict(os.environ), "threads": [torch.get_num_threads(), cv2.getNumThreads()],
          "malloc_tuned": malloc.retain_freed_memory.cache_info().currsize > 0}
with streamdehaze.tuned("cpu"):  # the opt-in: CPU threads for a video run, restored after
    result["tuned_threads"] = torch.get_num_threads()
result["threads_after_tuned"] = [torch.get_num_threads(), cv2.getNumThreads()]
result["malloc_tuned_after_opt_in"] = malloc.retain_freed_memory.cache_info().currsize > 0
torch.manual_seed(7); expected = torch.rand(3).tolist(); torch.manual_seed(7)
streamdehaze.Dehazer()(np.full((64, 96, 3), 128, np.uint8))  # the shipped KA_Net, loaded
result["random_stream_kept"] = torch.rand(3).tolist() == expected
print(json.dumps(result))
"""


def test_embedding_changes_no_process_wide_setting(make_video, tmp_path):
    src = make_video(frames=4)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    run = subprocess.run([sys.executable, "-c", EMBEDDED, str(src), str(tmp_path / "out.mp4")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["env_kept"] and result["threads"] == [2, 3] and not result["malloc_tuned"]
    assert result["tuned_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    assert result["threads_after_tuned"] == [2, 3] and result["malloc_tuned_after_opt_in"]
    assert result["random_stream_kept"]  # loading weights draws no numbers from the application's generator


def test_the_command_line_tunes_its_own_process(make_video, tmp_path):
    src = make_video(frames=4)
    code = ("import os, sys; from streamdehaze.cli import main; from streamdehaze import malloc; "
            "rc = main(sys.argv[1:]); "
            "print(rc, os.environ.get('OMP_WAIT_POLICY'), malloc.retain_freed_memory.cache_info().currsize)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "out.mp4"), "--model", "dcp", "--quiet"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.stdout.split() == ["0", "PASSIVE", "1"], run.stderr


def test_main_called_by_a_program_leaves_its_logging_as_it_found_it(tmp_path):
    """Each call added a filter holding its arguments to every handler of the application's, for good, the first
    left a handler and the INFO level on the root logger (an application's own INFO lines then came out too), and
    --quiet left the library's warnings off (a test in the same process then saw none)."""
    code = ("import logging, sys; from streamdehaze.cli import main; root = logging.getLogger(); "
            "main(sys.argv[1:]); print(root.handlers, root.level); "
            "mine = logging.StreamHandler(sys.stdout); root.addHandler(mine); main(sys.argv[1:]); "
            "main([*sys.argv[1:], '--quiet']); "
            "print(root.handlers == [mine], mine.filters, logging.getLogger('streamdehaze').level)")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing.mp4"), str(tmp_path / "out.mp4")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.stdout.splitlines() == ["[] 30", "True [] 0"], run.stdout + run.stderr
    assert run.stderr.count("streamdehaze: error: ") == 3, run.stderr


def test_tuning_counts_the_cores_the_process_may_use(monkeypatch):
    # In a container pinned to 4 cores of a 16-core host, the model took 8 threads (half the host's)
    import torch

    import streamdehaze

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    before = torch.get_num_threads()
    with streamdehaze.tuned("cpu"):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_overlapping_tuned_blocks_give_back_the_applications_thread_counts(monkeypatch):
    # Two camera loops in two threads, A entering first and leaving first: B saved A's tuned counts as its own and
    # restored them, so the application's were lost.
    import threading

    import cv2
    import torch

    import streamdehaze

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})  # tuned: 2 threads
    before = torch.get_num_threads(), cv2.getNumThreads()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    inside: list[tuple[int, int]] = []

    def camera_a() -> None:
        with streamdehaze.tuned("cpu"):
            a_in.set()
            b_in.wait(10)
        inside.append((torch.get_num_threads(), cv2.getNumThreads()))  # B still runs: still tuned
        a_out.set()

    def camera_b() -> None:
        a_in.wait(10)
        with streamdehaze.tuned("cpu"):
            b_in.set()
            a_out.wait(10)

    try:
        torch.set_num_threads(3)
        cv2.setNumThreads(5)  # the application's own settings
        threads = [threading.Thread(target=camera_a), threading.Thread(target=camera_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert inside == [(2, 2)]
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (3, 5)
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


REALTIME_THREADS = r"""
import json, os, sys
import streamdehaze
from tests.conftest import realtime_threads

during = []
def look(record):
    during.append(len(realtime_threads()))  # while the encoder's own threads run
streamdehaze.process(sys.argv[1], sys.argv[2], model="dcp", codec="libsvtav1", on_frame=look)
print(json.dumps({"during": during, "after": realtime_threads(), "main": os.sched_getscheduler(0)}))
"""


def test_an_av1_run_leaves_no_thread_real_time(make_video, tmp_path):
    """SVT-AV1, run as root (as in most containers), switches the thread that opens it to SCHED_FIFO 99, and the
    threads it starts inherit it: the model's threads, started after the trial write, ran real-time too, and on two
    cores the tests that followed an AV1 one in the same process stalled for good."""
    src = make_video(frames=3)
    run = subprocess.run([sys.executable, "-c", REALTIME_THREADS, str(src), str(tmp_path / "out.mkv")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result == {"during": [0, 0, 0], "after": [], "main": os.SCHED_OTHER}, run.stderr[-2000:]

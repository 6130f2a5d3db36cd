"""``streamdehaze batch --ray`` against a real Ray cluster on 127.0.0.1 (two worker processes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import streamdehaze

pytestmark = pytest.mark.xdist_group("ray")  # (the tests run in two processes: one runs all of these)

DCP = ("--model", "dcp", "--codec", "ffv1", "--quiet")  # fast, and lossless so that frames compare exactly


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _same_videos(a_dir, b_dir, names, probe) -> None:
    for name in names:
        if name.endswith((".mp4", ".mkv")):
            a, b = probe(a_dir / name), probe(b_dir / name)
            assert a["times"] == b["times"] and a["audio"] == b["audio"], name
            # Equal up to float rounding: a Ray worker runs on 2 threads, a local worker process on 1 (about one
            # sample in 10^5 moves by a level in one or two YUV planes: up to 3 in RGB); a frame from the wrong
            # place would differ everywhere.
            for x, y in zip(a["rgb"], b["rgb"]):
                diff = np.abs(x.astype(int) - y)
                assert diff.max() <= 3 and (diff > 0).mean() < 1e-3, name
        else:
            assert (a_dir / name).read_bytes() == (b_dir / name).read_bytes(), name


def test_a_bad_file_among_good_ones_then_a_rerun_that_does_nothing(media_tree, probe, run_batch, run_cli, tmp_path):
    src, names = media_tree(clips=3)
    out, stats = tmp_path / "out", tmp_path / "stats.json"
    code, err = run_batch(src, out, *DCP, "--workers", 2, "--stats-json", stats)
    assert code == 1, err
    assert "broken.mp4: failed: cannot read" in err
    assert _files(out) == names
    here = tmp_path / "here"
    assert run_cli("batch", src, here, *DCP)[0] == 1  # the same batch on this machine, without Ray
    _same_videos(out, here, names, probe)
    data = json.loads(stats.read_text())
    assert (data["done"], data["failed"]) == (len(names), 1)

    inodes = {n: os.stat(out / n).st_ino for n in names}
    code, err = run_batch(src, out, *DCP, "--stats-json", stats)
    data = json.loads(stats.read_text())
    assert (data["done"], data["skipped"], data["failed"]) == (0, len(names), 1)
    assert {n: os.stat(out / n).st_ino for n in names} == inodes


def test_a_worker_killed_mid_file_has_its_file_done_again(media_tree, probe, ray_cluster, run_batch, run_cli,
                                                          tmp_path):
    src, names = media_tree(clips=4, frames=150, width=320, height=240)
    (src / "broken.mp4").unlink()
    out = tmp_path / "out"
    proc = run_batch(src, out, *DCP[:-1], "--workers", 2, "--batch", 1, wait=False)  # not quiet: warnings
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        busy = ray_cluster.workers("ray::DehazeWorker.run")
        if busy and _written(out) >= 1:  # the workers are up and going
            busy[0].kill()  # SIGKILL: no chance to clean up
            killed = busy[0].pid
        time.sleep(0.05)
    _, err = proc.communicate(timeout=600)
    assert killed is not None, f"no busy worker to kill: {err}"
    assert proc.returncode == 0, err
    assert ": its worker died; doing it again\n" in err and "RpcError" not in err, err  # (not Ray's own words)
    assert _files(out) == names  # every output, and nothing else: no partial or hidden file
    here = tmp_path / "here"
    assert run_cli("batch", src, here, *DCP)[0] == 0
    _same_videos(out, here, names, probe)


def _written(folder) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _batch_under_way(media_tree, run_batch, tmp_path):
    """A batch on Ray with statistics, once its first output is written: (its process, the names, the statistics)."""
    src, names = media_tree(clips=6, frames=150, width=320, height=240)
    (src / "broken.mp4").unlink()
    out, stats = tmp_path / "out", tmp_path / "stats.json"
    proc = run_batch(src, out, *DCP, "--workers", 2, "--stats-json", stats, wait=False)
    deadline = time.monotonic() + 120
    while _written(out) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return proc, names, stats


def test_sigterm_ends_a_batch_on_ray_as_ctrl_c_does(media_tree, run_batch, tmp_path):
    """Ray's own SIGTERM handler exits at once with status 15; a batch ends with its summary, its statistics and
    exit 130, as on Ctrl-C, and a rerun does only what is left."""
    proc, names, stats = _batch_under_way(media_tree, run_batch, tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    data = json.loads(stats.read_text())
    assert data["interrupted"] >= 1 and data["done"] + data["interrupted"] == len(names)


def test_sigterm_repeated_while_a_batch_on_ray_stops_lets_it_finish(media_tree, run_batch, tmp_path):
    """A service manager's repeated SIGTERM: the second one lost the summary and the statistics file."""
    proc, names, stats = _batch_under_way(media_tree, run_batch, tmp_path)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:  # SIGTERM after SIGTERM, until it has ended
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    data = json.loads(stats.read_text())  # (and the summary, which --quiet leaves out here)
    assert data["done"] + data["interrupted"] == len(names), data


def test_sigterm_keeps_its_handler_while_ray_shuts_down(ray_cluster):
    """Ray's C++ crash handler took SIGTERM, and its removal in ray.shutdown() put SIGTERM's default action back for
    the rest of the shutdown (about a second): a SIGTERM then killed a stopping run (-15). Watched in the kernel's
    own view of the process (SigCgt), every millisecond of the shutdown."""
    code = ("import signal, threading, time\n"
            "from streamdehaze import cluster\n"
            "def caught():\n"
            "    line = next(l for l in open('/proc/self/status') if l.startswith('SigCgt:'))\n"
            "    return int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1 == 1\n"
            "ray = cluster.connect(%r)\n"
            "signal.signal(signal.SIGTERM, lambda *_: None)\n"
            "seen, done = [], threading.Event()\n"
            "def watch():\n"
            "    while not done.is_set():\n"
            "        seen.append(caught())\n"
            "        time.sleep(0.001)\n"
            "watcher = threading.Thread(target=watch)\n"
            "watcher.start()\n"
            "ray.shutdown()\n"
            "done.set()\n"
            "watcher.join()\n"
            "print(len(seen), seen.count(False), caught())\n") % ray_cluster.address
    done = subprocess.run([sys.executable, "-c", code], env=ray_cluster.env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    looks, lost, after = done.stdout.split()
    assert int(looks) > 10 and lost == "0" and after == "True", done.stdout


def test_weights_that_do_not_load_are_a_usage_error_before_ray_starts_anything(media_tree, run_batch, tmp_path):
    src, _ = media_tree(clips=1)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, err = run_batch(src, tmp_path / "out", "--model", "kanet-t", "--weights", tmp_path / "junk.pt")
    assert code == 2 and "cannot load" in err, err


def test_more_workers_than_the_cluster_has_room_for(media_tree, run_batch, tmp_path):
    """A worker Ray cannot place would hold its file for ever: the batch starts as many as fit, and says so."""
    src, names = media_tree(clips=6)
    (src / "broken.mp4").unlink()
    out = tmp_path / "out"
    proc = run_batch(src, out, *DCP[:-1], "--workers", 8, wait=False)  # the cluster has 4 CPUs
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "--workers 8: the Ray cluster has room for 4 (4 CPUs); starting 4" in err
    assert _files(out) == names


def test_paths_are_the_driver_s_not_the_workers(media_tree, ray_cluster, tmp_path):
    """Ray's workers run in the folder the cluster was started in: relative paths mean the driver's folder."""
    src, names = media_tree(clips=2)
    (src / "broken.mp4").unlink()
    shutil.copy(Path(streamdehaze.__file__).parent / "weights" / "kanet-t.safetensors", tmp_path / "mine.safetensors")
    proc = subprocess.run([sys.executable, "-m", "streamdehaze", "batch", "in", "out", "--model", "kanet-t",
                           "--weights", "mine.safetensors", "--quiet", "--ray", ray_cluster.address],
                          cwd=tmp_path, env=ray_cluster.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert _files(tmp_path / "out") == names


def test_serve_on_ray_with_relative_paths_cut_short_exits_130(ray_cluster, make_video, tmp_path):
    """As ``serve`` without Ray: relative paths are the driver's, and a file stream cut short by --duration leaves
    its partial output and exits 130."""
    make_video("a.mp4", frames=600, width=320, height=240)
    (tmp_path / "cams.toml").write_text('model = "dcp"\n[[stream]]\nname = "a"\ninput = "a.mp4"\n'
                                        'output = "a_out.mkv"\n')
    proc = subprocess.run([sys.executable, "-m", "streamdehaze", "serve", "cams.toml", "--duration", "2", "--ray",
                           ray_cluster.address], cwd=tmp_path, env=ray_cluster.env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert "(cut short: " in proc.stderr and (tmp_path / "a_out.partial.mkv").exists()


def test_an_unreachable_head_is_one_line(media_tree, tmp_path):
    pytest.importorskip("ray")
    src, _ = media_tree(clips=1)
    proc = subprocess.run([sys.executable, "-m", "streamdehaze", "batch", src, tmp_path / "out", "--model", "dcp",
                           "--ray", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "streamdehaze: error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"


def test_ray_local_starts_its_own_whatever_ray_address_says(media_tree, tmp_path):
    pytest.importorskip("ray")
    src, names = media_tree(clips=1)
    (src / "broken.mp4").unlink()
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, "-m", "streamdehaze", "batch", src, tmp_path / "out", *DCP, "--ray",
                           "local"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _files(tmp_path / "out") == names


def test_a_head_lost_mid_batch_ends_it_with_its_summary(media_tree, tmp_path):
    """Ray ends a driver a minute after it loses the head, with no word: the batch notices first, and ends with
    its summary and statistics (exit 1) rather than being cut off without them."""
    pytest.importorskip("ray")
    from tests.conftest import RayCluster

    src, names = media_tree(clips=4, frames=600, width=320, height=240)
    (src / "broken.mp4").unlink()
    stats = tmp_path / "stats.json"
    cluster = RayCluster(cpus=2)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "streamdehaze", "batch", str(src), str(tmp_path / "out"), *DCP[:-1],
                                 "--workers", "2", "--stats-json", str(stats), "--ray", cluster.address],
                                env=cluster.env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not cluster.workers("ray::DehazeWorker.run") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        cluster.stop()  # the head and its workers
        _, err = proc.communicate(timeout=120)
    finally:
        cluster.stop()
    assert proc.returncode == 1, err
    # (which comes first, Ray's word that the workers died or the batch's own watch on the head, is a race)
    assert (f"failed: lost the Ray cluster at {cluster.address}" in err or "its worker died" in err) \
        and f"batch: {len(names)} files" in err, err
    data = json.loads(stats.read_text())
    assert data["failed"] >= 1 and data["done"] + data["failed"] == len(names)

"""``streamdehaze batch --ray`` against a real Ray cluster on 127.0.0.1 (two worker processes)."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np

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
    src, names = media_tree(clips=6, frames=150, width=320, height=240)
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
    assert "its worker died" in err and "doing it again" in err
    assert _files(out) == names  # every output, and nothing else: no partial or hidden file
    here = tmp_path / "here"
    assert run_cli("batch", src, here, *DCP)[0] == 0
    _same_videos(out, here, names, probe)


def _written(folder) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def test_sigterm_ends_a_batch_on_ray_as_ctrl_c_does(media_tree, run_batch, tmp_path):
    """Ray's own SIGTERM handler exits at once with status 15; a batch ends with its summary, its statistics and
    exit 130, as on Ctrl-C, and a rerun does only what is left."""
    src, names = media_tree(clips=6, frames=150, width=320, height=240)
    (src / "broken.mp4").unlink()
    out, stats = tmp_path / "out", tmp_path / "stats.json"
    proc = run_batch(src, out, *DCP, "--workers", 2, "--stats-json", stats, wait=False)
    deadline = time.monotonic() + 120
    while _written(out) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    data = json.loads(stats.read_text())
    assert data["interrupted"] >= 1 and data["done"] + data["interrupted"] == len(names)


def test_weights_that_do_not_load_are_a_usage_error_before_ray_starts_anything(media_tree, run_batch, tmp_path):
    src, _ = media_tree(clips=1)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, err = run_batch(src, tmp_path / "out", "--model", "kanet-t", "--weights", tmp_path / "junk.pt")
    assert code == 2 and "cannot load" in err, err

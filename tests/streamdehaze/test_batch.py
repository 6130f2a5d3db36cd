"""``streamdehaze batch IN_DIR OUT_DIR`` on this machine: every file as a single run writes it, a bad file reported
while the others finish, a rerun that does only what is missing."""

from __future__ import annotations

import json
import os

import av
import cv2
import numpy as np
import pytest

DCP = ("--model", "dcp", "--codec", "ffv1", "--quiet")  # fast, and lossless so that frames compare exactly


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_batch_equals_single_runs_and_reports_the_bad_file(media_tree, probe, run_cli, caplog, tmp_path):
    src, names = media_tree(clips=3)
    out, stats = tmp_path / "out", tmp_path / "stats.json"
    code, err = run_cli("batch", src, out, *DCP, "--stats-json", stats)
    assert code == 1
    assert "broken.mp4: failed: cannot read" in caplog.text and "corrupt" in caplog.text
    assert "batch: 5 files (4 done, 1 failed); 37 frames in" in caplog.text
    assert caplog.text.splitlines()[-1].endswith("; 1 file left out: not a video or image by its name")
    assert _files(out) == names  # nothing for the broken file, no partials, the text file left alone
    for name in names:
        single = tmp_path / "single" / name
        single.parent.mkdir(parents=True, exist_ok=True)
        assert run_cli(src / name, single, *DCP)[0] == 0
        if name.endswith(".png"):
            assert np.array_equal(cv2.imread(str(out / name)), cv2.imread(str(single)))
            continue
        a, b = probe(out / name), probe(single)
        assert a["times"] == b["times"] and a["audio"] == b["audio"] and len(a["rgb"]) == 12
        assert all(np.array_equal(x, y) for x, y in zip(a["rgb"], b["rgb"]))
    data = json.loads(stats.read_text())
    assert (data["files"], data["done"], data["failed"], data["skipped"], data["ignored"]) == (5, 4, 1, 0, 1)
    assert data["frames"] == 3 * 12 + 1
    status = {r["name"]: r["status"] for r in data["results"]}
    assert status == {**{n: "done" for n in names}, "broken.mp4": "failed"}
    assert "corrupt" in next(r["error"] for r in data["results"] if r["name"] == "broken.mp4")


def test_a_truncated_file_counts_the_frames_its_output_holds(make_video, run_cli, tmp_path):
    # Its output is written, with every frame before the cut: the statistics said "failed", 0 frames.
    src, out, stats = tmp_path / "in", tmp_path / "out", tmp_path / "stats.json"
    src.mkdir()
    whole = make_video(frames=60, width=160, height=120, options={"movflags": "faststart"})
    (src / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    assert run_cli("batch", src, out, *DCP, "--stats-json", stats)[0] == 1
    (result,) = json.loads(stats.read_text())["results"]
    kept = int(result["error"].split(" holds the ")[1].split()[0])
    with av.open(str(out / "cut.mp4")) as written:
        assert result["status"] == "failed" and result["frames"] == kept == len(list(written.decode(video=0)))
    assert json.loads(stats.read_text())["frames"] == kept > 0


def test_a_rerun_does_only_what_is_missing(media_tree, run_cli, tmp_path):
    src, names = media_tree(clips=2)
    out = tmp_path / "out"
    assert run_cli("batch", src, out, *DCP)[0] == 1
    before = {n: os.stat(out / n).st_ino for n in names}
    (out / names[0]).unlink()  # lost: done again; the others stay as they are
    stats = tmp_path / "again.json"
    code, err = run_cli("batch", src, out, *DCP, "--stats-json", stats)
    assert code == 1  # the broken file is still broken
    data = json.loads(stats.read_text())
    assert (data["done"], data["skipped"], data["failed"]) == (1, len(names) - 1, 1)
    assert all(os.stat(out / n).st_ino == before[n] for n in names[1:])
    assert _files(out) == names


def test_a_file_another_batch_is_dehazing_is_left_to_it(media_tree, run_cli, caplog, tmp_path):
    """Two batches into the same folder (two machines on a shared disk): each did every file. A file another
    holds (its claim, taken here as that batch would) is left to it; once let go, a rerun does it. A batch into
    another folder (another model, compared) does it all the same."""
    import fcntl

    src, names = media_tree(clips=2)
    (src / "broken.mp4").unlink()
    out, stats = tmp_path / "out", tmp_path / "stats.json"
    out.mkdir()
    with open(out / ".clip0.mp4.claim", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, err = run_cli("batch", src, out, "--model", "dcp", "--codec", "ffv1", "--jobs", 1, "--stats-json", stats)
        assert run_cli("batch", src, tmp_path / "other", *DCP)[0] == 0
        assert _files(tmp_path / "other") == names
    assert code == 0, err
    assert "batch: 3 files (2 done, 1 elsewhere)" in err
    assert "clip0.mp4: another batch is dehazing it: left to that one" in caplog.text
    assert _files(out) == sorted([".clip0.mp4.claim", *(n for n in names if n != "clip0.mp4")])  # (the other's claim)
    assert json.loads(stats.read_text())["elsewhere"] == 1
    assert run_cli("batch", src, out, *DCP)[0] == 0
    assert _files(out) == names and not list(out.rglob(".*"))  # (the claims gone with their files)


def test_a_link_at_a_claim_s_name_is_not_followed(media_tree, run_cli, tmp_path):
    """A link planted at .NAME.claim in a shared output folder had the batch (root, often) create the file it points
    to, or lock any file there is. The file is dehazed all the same; the link is left as it was."""
    src, names = media_tree(clips=2)
    (src / "broken.mp4").unlink()
    out, elsewhere = tmp_path / "out", tmp_path / "created_by_claim"
    out.mkdir()
    (out / ".clip0.mp4.claim").symlink_to(elsewhere)
    code, err = run_cli("batch", src, out, *DCP, "--jobs", 1)
    assert code == 0, err
    assert not elsewhere.exists() and (out / ".clip0.mp4.claim").is_symlink()
    assert _files(out) == names


def test_several_files_at_once_give_the_same_outputs(media_tree, probe, run_cli, tmp_path):
    src, names = media_tree(clips=3)
    (src / "broken.mp4").unlink()
    for jobs in (1, 3):
        code, err = run_cli("batch", src, tmp_path / f"j{jobs}", *DCP, "--jobs", jobs)
        assert code == 0, err
    for name in names:
        if name.endswith(".mkv") or name.endswith(".mp4"):
            a, b = probe(tmp_path / "j1" / name), probe(tmp_path / "j3" / name)
            assert a["times"] == b["times"] and all(np.array_equal(x, y) for x, y in zip(a["rgb"], b["rgb"]))


@pytest.mark.parametrize("case, message", [
    ("same", "is the input folder"),
    ("missing", "input folder not found"),
    ("empty", "no videos or images under"),
    ("file", "input is not a folder"),
    ("jobs", "--jobs: must be 1 to 64"),
    ("crf", "the .mkv videos (libx264): --crf 99 is out of range for libx264"),
    ("preset", "the .mkv videos (libx264): unknown --preset 'fastest' for libx264"),
    ("stats", "folder does not exist"),
    # (statistics are written whole at the end: over a video, they would destroy it)
    ("stats_on_input", "--stats-json {src}/clip0.mp4 is an input of the batch (clip0.mp4)"),
    ("stats_on_output", "--stats-json {out}/sub/clip1.mkv is an output of the batch (sub/clip1.mkv)"),
    ("stats_on_notes", "--stats-json {src}/notes.txt holds something other than statistics"),
    ("model", "unknown model 'fog9000'"),
    ("workers", "--workers needs --ray"),
    ("jobs_on_ray", "--jobs is for this machine; with --ray, --workers sets how many workers"),
])
def test_usage_errors(case, message, media_tree, run_cli, tmp_path):
    """Found before anything starts: one line, exit 2, nothing written."""
    src, _ = media_tree(clips=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "o" / "deeper"
    args = {"same": (src, src), "missing": (tmp_path / "nope", out), "empty": (empty, out),
            "file": (src / "notes.txt", out), "jobs": (src, out, "--jobs", 0), "crf": (src, out, "--crf", 99),
            "preset": (src, out, "--preset", "fastest"),
            "stats": (src, out, "--stats-json", tmp_path / "nowhere" / "s.json"), "workers": (src, out, "--workers", 2),
            "stats_on_input": (src, out, "--stats-json", src / "clip0.mp4"),
            "stats_on_output": (src, out, "--stats-json", out / "sub" / "clip1.mkv"),
            "stats_on_notes": (src, out, "--stats-json", src / "notes.txt"),
            "jobs_on_ray": (src, out, "--jobs", 2, "--ray", "local"), "model": (src, out, "--model", "fog9000")}[case]
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    code, err = run_cli("batch", *args, *(("--model", "dcp") if case != "model" else ()), "--quiet")
    assert code == 2 and message.format(src=src, out=out) in err and len(err.strip().splitlines()) == 1, err
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "o").exists()  # (the output folder is made with the first output)


@pytest.mark.parametrize("limit, frames", [(("--max-frames", 4), 4), (("--duration", 0.2), 5)])
def test_every_file_stops_where_a_single_run_would(limit, frames, media_tree, probe, run_cli, tmp_path):
    # --max-frames and --duration were refused ("unrecognized arguments"), though a single run and serve take them.
    src, names = media_tree(clips=2)
    (src / "broken.mp4").unlink()
    out, stats = tmp_path / "out", tmp_path / "stats.json"
    code, err = run_cli("batch", src, out, *DCP, *limit, "--jobs", 1, "--stats-json", stats)
    assert code == 0, err
    videos = [n for n in names if not n.endswith(".png")]
    assert all(len(probe(out / name)["times"]) == frames for name in videos)
    assert json.loads(stats.read_text())["frames"] == frames * len(videos) + 1  # (and the photo)


def test_statistics_in_an_output_folder_not_made_yet(media_tree, run_cli, tmp_path):
    src, _ = media_tree(clips=1, frames=3)
    out = tmp_path / "new" / "out"
    code, err = run_cli("batch", src, out, *DCP, "--stats-json", out / "batch.json")
    assert code == 1, err  # (the tree holds a broken clip)
    assert json.loads((out / "batch.json").read_text())["done"] >= 2


def test_a_worker_process_killed_mid_file_has_its_file_done_again(media_tree, probe, run_cli, tmp_path):
    import subprocess
    import sys
    import time

    import psutil

    src, names = media_tree(clips=4, frames=150, width=320, height=240)
    (src / "broken.mp4").unlink()
    out = tmp_path / "out"
    args = ["batch", src, out, *DCP[:-1], "--jobs", 2, "--batch", 1]  # not quiet: warnings
    proc = subprocess.Popen([sys.executable, "-m", "streamdehaze", *map(str, args)], stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        workers = [p for p in psutil.Process(proc.pid).children() if "spawn_main" in _cmdline(p)]
        if len(workers) == 2 and out.exists() and any(p.is_file() for p in out.rglob("*")):
            workers[0].kill()  # mid-file: the first outputs are in, the rest are being written
            killed = workers[0].pid
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    assert killed is not None and proc.returncode == 0, err
    assert "its worker process died (exit -9); doing it again" in err
    assert _files(out) == names  # every output and nothing else: no partial or hidden file
    for name in names[:-1]:
        single = tmp_path / "single" / name
        single.parent.mkdir(parents=True, exist_ok=True)
        assert run_cli(src / name, single, *DCP)[0] == 0
        a, b = probe(out / name), probe(single)
        assert a["times"] == b["times"] and all(np.array_equal(x, y) for x, y in zip(a["rgb"], b["rgb"]))


def test_workers_interrupted_keep_what_they_finished_as_one_process_does(make_video, probe, tmp_path):
    # SIGTERM (Ctrl-C, a service stopping) while two workers are mid-file: each file stops as a single run's does,
    # its frames so far kept as NAME.partial.EXT and counted, and no claim is left behind
    import signal
    import subprocess
    import sys
    import time

    import psutil

    src, out, stats = tmp_path / "in", tmp_path / "out", tmp_path / "stats.json"
    src.mkdir()
    for name in ("a.mp4", "b.mp4"):
        make_video(f"in/{name}", frames=400, width=320, height=240)
    args = ["batch", src, out, *DCP, "--jobs", 2, "--batch", 1, "--stats-json", stats]
    proc = subprocess.Popen([sys.executable, "-m", "streamdehaze", *map(str, args)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        workers = [p for p in psutil.Process(proc.pid).children() if "spawn_main" in _cmdline(p)]
        if len(workers) == 2 and all(_writing(w.pid, out) for w in workers):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    results = {r["name"]: r for r in json.loads(stats.read_text())["results"]}
    assert [r["status"] for r in results.values()] == ["interrupted"] * 2
    assert _files(out) == ["a.partial.mp4", "b.partial.mp4"]  # (no .claim)
    for name, result in results.items():
        partial = probe(out / name.replace(".mp4", ".partial.mp4"))
        assert 0 < result["frames"] == len(partial["times"]) < 400


def _writing(pid: int, folder) -> bool:
    """Whether process ``pid`` has frames in an output file it is writing in ``folder`` (an unnamed file)."""
    import psutil

    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith(f"{folder}/") and os.stat(f"/proc/{pid}/fd/{fd}").st_size > 100_000:
                return True
    except (OSError, psutil.Error):  # (it ended, or the file closed, meanwhile)
        pass
    return False


def _cmdline(process) -> str:
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # it ended meanwhile
        return ""


def test_ogg_videos_are_done_in_their_own_format(probe, run_cli, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    with av.open(str(src / "web.ogv"), "w") as oc:
        stream = oc.add_stream("libvpx", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 100 + i, np.uint8), format="rgb24")
            frame.pts = i
            oc.mux(stream.encode(frame))
        oc.mux(stream.encode(None))
    code, err = run_cli("batch", src, tmp_path / "out", "--model", "dcp", "--quiet")
    assert code == 0, err
    assert probe(tmp_path / "out" / "web.ogv")["times"] == probe(src / "web.ogv")["times"]  # (VP8: Ogg holds no H.264)


def test_linked_folders_are_followed_once_and_pipes_left_out(make_video, run_cli, tmp_path):
    # A camera's folder linked in from another disk is searched; a link back up (a loop) and a named pipe with a
    # video's name (which would block the run forever) are not.
    src, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    (src / "cam1").mkdir(parents=True)
    elsewhere.mkdir()
    make_video("in/cam1/a.mp4", frames=3)
    make_video("elsewhere/b.mp4", frames=3)
    (src / "cam2").symlink_to(elsewhere)
    (src / "cam1" / "loop").symlink_to(src)
    (src / "best").symlink_to(src / "cam1")  # (sorts first: its files still go under their own folder's name)
    os.mkfifo(src / "cam1" / "stuck.mp4")
    code, err = run_cli("batch", src, tmp_path / "out", *DCP)
    assert code == 0, err
    assert _files(tmp_path / "out") == ["cam1/a.mp4", "cam2/b.mp4"]


def test_what_is_left_out_is_counted_by_why(make_video, run_cli, tmp_path):
    # A named pipe with a video's name was counted as "not a video by its name"; the videos already in an output
    # folder inside the input folder were passed over without a word
    src = tmp_path / "in"
    (src / "out").mkdir(parents=True)
    make_video("in/a.mp4", frames=3)
    make_video("in/out/mine.mp4", frames=3)  # (the user's, in the folder named as the output)
    os.mkfifo(src / "stuck.mp4")
    (src / "notes.txt").write_text("not media\n")
    (src / ".hidden.mp4").write_text("a tool's\n")
    for run in range(2):  # (the second finds a.mp4's output in there, and does not count it)
        code, err = run_cli("batch", src, src / "out", *DCP[:-1])
        assert code == 0, err
        assert err.strip().splitlines()[-1].endswith(
            "; 3 files left out: 1 not a video or image by its name, 1 not a regular file (a named pipe, a device, a "
            "broken link), 1 in the output folder, inside the input folder")
    assert _files(src / "out") == ["a.mp4", "mine.mp4"]


def test_a_fault_on_one_file_fails_that_file_and_the_rest_get_done(hazy_image, run_cli, caplog, monkeypatch, tmp_path):
    # An exception no check foresaw (a library's, on one odd file) once ended the batch at that file, exit 0.
    from streamdehaze import batch
    src, out, stats = tmp_path / "in", tmp_path / "out", tmp_path / "stats.json"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(src / name), hazy_image(0, 48, 32))
    real = batch.dehaze_image_file

    def faulty(engine, image, target):
        if image.name == "b.png":
            raise RuntimeError("a fault")
        real(engine, image, target)
    monkeypatch.setattr(batch, "dehaze_image_file", faulty)
    code, _ = run_cli("batch", src, out, "--model", "dcp", "--jobs", 1, "--stats-json", stats)
    assert code == 1 and _files(out) == ["a.png", "c.png"]
    assert "b.png: failed: internal error: RuntimeError: a fault" in caplog.text
    assert json.loads(stats.read_text())["failed"] == 1


def test_workers_end_with_a_batch_that_is_killed(media_tree, tmp_path):
    # SIGKILL (the OOM killer) gives the parent no chance to stop its workers: they end on their own, not wait for
    # work for ever, holding their memory.
    import subprocess
    import sys
    import time

    import psutil

    src, _ = media_tree(clips=4, frames=150, width=320, height=240)
    args = ["batch", src, tmp_path / "out", *DCP, "--jobs", 2]
    proc = subprocess.Popen([sys.executable, "-m", "streamdehaze", *map(str, args)])
    workers, deadline = [], time.monotonic() + 120
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        workers = [p for p in psutil.Process(proc.pid).children() if "spawn_main" in _cmdline(p)]
        time.sleep(0.05)
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=15)
    for worker in alive:  # (a failure leaves nothing running)
        worker.kill()
    assert not alive


def test_photos_named_like_partials_are_done(hazy_image, run_cli, tmp_path):
    # Only an interrupted video run leaves NAME.partial.EXT (and batch leaves those out); a photo of such a name is
    # the user's.
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("eclipse.partial.jpg", "moon.partial.phase.jpg"):
        cv2.imwrite(str(src / name), hazy_image(0, 48, 32))
    assert run_cli("batch", src, out, "--model", "dcp", "--jobs", 1)[0] == 0
    assert _files(out) == ["eclipse.partial.jpg", "moon.partial.phase.jpg"]


def test_partials_of_interrupted_runs_are_left_out(make_video, run_cli, tmp_path):
    # NAME.partial.EXT and an earlier one moved aside, NAME.partial.N.EXT, are runs' leftovers, not inputs.
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("clip.mp4", "clip.partial.mp4", "clip.partial.1.mp4"):
        make_video(f"in/{name}", frames=3)
    assert run_cli("batch", src, out, *DCP, "--jobs", 1)[0] == 0
    assert _files(out) == ["clip.mp4"]


def test_a_worker_ended_by_sigterm_mid_file_exits_and_leaves_nothing(make_video, monkeypatch, tmp_path):
    """A Ray worker's SIGTERM (a node drained or preempted) raises SystemExit in the worker as it waits for its file.
    With the source's reader in the middle of a read (held there below), closing the source under it raised a
    ValueError in place of the exit: the file was reported "failed: internal error: ValueError: generator already
    executing" instead of the worker dying and the file being done again elsewhere."""
    import signal
    import sys
    import threading
    import time

    from streamdehaze.batch import Item, LocalBatch
    from streamdehaze.sources import VideoFileSource

    src, out = make_video(frames=100), tmp_path / "out" / "in.mkv"
    reading = threading.Event()
    demux = VideoFileSource._demux

    def slow_demux(self):
        for i, item in enumerate(demux(self)):
            if i == 30:
                reading.set()
                time.sleep(2)  # a read in progress
            yield item
    monkeypatch.setattr(VideoFileSource, "_demux", slow_demux)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # as Ray's worker does
    batch = LocalBatch({"model": "dcp", "codec": "ffv1"})
    threading.Thread(target=lambda: reading.wait(30) and os.kill(os.getpid(), signal.SIGTERM), daemon=True).start()
    try:
        with pytest.raises(SystemExit):
            batch.run_one(Item("in.mp4", str(src), str(out), False))
    finally:
        signal.signal(signal.SIGTERM, previous)
        batch.close()
    assert not any(out.parent.iterdir())  # (no output, no partial: another worker does the file)


def test_a_batch_that_writes_nothing_leaves_no_folder(media_tree, run_cli, caplog, tmp_path):
    """Every file failing: no empty OUT_DIR (or subfolder) is left, as the README says it is made with the first
    output. One that was there stays."""
    src, _ = media_tree(clips=1)
    for path in [*src.rglob("*.mp4"), *src.rglob("*.mkv"), *src.rglob("*.png")]:
        if path.name != "broken.mp4":
            path.unlink()
    (src / "sub" / "broken.mp4").write_bytes((src / "broken.mp4").read_bytes())
    code, err = run_cli("batch", src, tmp_path / "out", *DCP)
    assert code == 1 and "(0 done, 2 failed)" in caplog.text and not (tmp_path / "out").exists(), err
    (tmp_path / "there").mkdir()
    assert run_cli("batch", src, tmp_path / "there", *DCP)[0] == 1 and (tmp_path / "there").is_dir()


def test_worker_processes_closed_leave_no_thread_holding_their_queues(make_video, tmp_path):
    """A batch's work queues each have a feeder thread, which holds the queue's semaphores while it lives: left
    running at the end, the process (ended without the interpreter's shutdown, cli.entry) left them behind, and
    Python's resource tracker said "There appear to be 2 leaked semaphore objects" after the summary."""
    import threading

    from streamdehaze.batch import Item, WorkerProcesses

    src = make_video(frames=3)
    items = [Item(f"{i}.mkv", str(src), str(tmp_path / f"{i}.mkv"), False) for i in range(2)]
    results = []
    for _ in range(3):  # (the feeder thread ends a moment after its queue closes: whether close() waited for it)
        workers = WorkerProcesses({"model": "dcp", "codec": "ffv1"}, jobs=2, threads=1)
        try:
            workers.run(items, results.append)
        finally:
            workers.close()
        feeders = [t for t in threading.enumerate() if t.name == "QueueFeederThread" and t.is_alive()]
        assert not feeders, feeders
        for item in items:
            os.unlink(item.output)
    assert [r.status for r in results] == ["done"] * 6

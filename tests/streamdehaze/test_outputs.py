"""File runs are all or nothing: a killed run leaves nothing (or, where the filesystem has no anonymous files, a
hidden partial that the next run removes and names); an interrupted one leaves NAME.partial.EXT."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from streamdehaze.api import process
from tests.conftest import decodable_times, default_interrupts, unread_in_pipe


def output_bytes(proc: subprocess.Popen, folder: Path) -> int:
    """Bytes a run has written so far to its output in ``folder``: an anonymous file ('FOLDER/#inode (deleted)'
    among its open files) or a hidden partial."""
    sizes = [p.stat().st_size for p in folder.glob(".*.partial-*")]
    for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith(f"{folder}/#"):
                sizes.append(fd.stat().st_size)
        except OSError:
            continue
    return max(sizes, default=0)


def start(args: list, *, setup: str = "") -> subprocess.Popen:
    """The CLI in a subprocess, after ``setup`` (Python run first in that process)."""
    code = f"import sys{chr(10)}{setup}{chr(10)}from streamdehaze.cli import main{chr(10)}sys.exit(main())"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_interrupts)


def wait_for_output(proc: subprocess.Popen, folder: Path, size: int = 20_000) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and output_bytes(proc, folder) < size:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be stopped: {proc.stderr.read()}"


def test_killed_file_run_leaves_nothing(long_video, tmp_path):
    proc = start([long_video, tmp_path / "out.mp4", "--model", "dcp", "--quiet"])
    try:
        wait_for_output(proc, tmp_path)
    finally:
        proc.kill()
        proc.communicate()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupt_leaves_a_playable_partial(long_video, probe, tmp_path, sig):
    src, out = long_video, tmp_path / "out.mp4"
    out.write_bytes(b"an earlier, complete output")
    proc = start([src, out, "--model", "dcp"])
    try:
        wait_for_output(proc, tmp_path)  # the encoder has written frames
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    partial = tmp_path / "out.partial.mp4"
    info = probe(partial)  # opens and decodes: the trailer was written
    assert 0 < info["count"] < 1500
    assert info["times"] == probe(src)["times"][: info["count"]]
    assert err == f"streamdehaze: interrupted: {partial} holds the {info['count']} frames dehazed so far; " \
                  f"{out} is left as it was\n"
    assert out.read_bytes() == b"an earlier, complete output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4", "out.partial.mp4"]


def test_an_interrupted_partial_has_its_sound_to_its_last_frame(make_video, tmp_path):
    # An MP4 stores its sound up to a second after its picture: a stop left the partial's last second silent,
    # the sound of that picture unread (a --max-frames cut read on for it; Ctrl-C now does too)
    src, out = make_video(frames=1500, width=320, height=240, audio=True), tmp_path / "out.mp4"
    proc = start([src, out, "--model", "dcp"])
    try:
        wait_for_output(proc, tmp_path)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    with av.open(str(tmp_path / "out.partial.mp4")) as c:
        frames = list(c.decode(video=0))
    with av.open(str(tmp_path / "out.partial.mp4")) as c:
        sound = [p for p in c.demux(audio=0) if p.size]
    assert 0 < len(frames) < 1500
    picture_end = (frames[-1].pts + frames[-1].duration) * frames[-1].time_base
    sound_end = (sound[-1].pts + sound[-1].duration) * sound[-1].time_base
    assert abs(sound_end - picture_end) < 0.05, (float(sound_end), float(picture_end))  # (an AAC frame: 21 ms)


@pytest.mark.parametrize("fed", ["standard input", "a named pipe"])
def test_ctrl_c_finishes_a_run_whose_pipe_stays_open_and_silent(make_video, tmp_path, fed):
    # The program feeding the pipe stalls without closing it (a feeder stuck on a frozen camera, out of Ctrl-C's
    # reach): FFmpeg's read of the pipe waited for it for ever, and a kill then lost the whole output
    src = make_video("in.ts", frames=60)
    fifo = tmp_path / "feed"
    if fed == "a named pipe":
        os.mkfifo(fifo)
    with open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "streamdehaze", "-" if fed == "standard input" else str(fifo),
                                 str(tmp_path / "out.mp4"), "--model", "dcp"],
                                stdin=subprocess.PIPE if fed == "standard input" else subprocess.DEVNULL, stderr=err,
                                preexec_fn=default_interrupts)
    feeder = proc.stdin or _writing_to(fifo, proc)
    try:
        feeder.write(src.read_bytes())
        feeder.flush()  # and kept open
        wait_for_output(proc, tmp_path, size=1)
        written = -1
        while unread_in_pipe(feeder.fileno()) or output_bytes(proc, tmp_path) != written:
            written = output_bytes(proc, tmp_path)
            time.sleep(1)  # (until all is read and nothing more written for a second: the run waits on the pipe)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(BrokenPipeError):
            feeder.close()
    said = (tmp_path / "err").read_text()
    assert proc.returncode == 130, said
    frames = int(re.search(r"holds the (\d+) frames dehazed so far", said).group(1))
    assert 0 < frames == len(decodable_times(tmp_path / "out.partial.mp4")), said


def _writing_to(fifo: Path, proc: subprocess.Popen):
    """A named pipe opened for writing, once ``proc`` has opened it to read."""
    deadline = time.monotonic() + 120
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # (ENXIO while no one reads it)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the run never opened the pipe"
            time.sleep(0.05)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "wb")


def test_a_file_run_whose_output_folder_is_deleted_fails_at_once(long_video, tmp_path):
    # It was found only at the end, when the finished output could not be named there: hours of work on a long file
    folder = tmp_path / "out"
    folder.mkdir()
    proc = start([long_video, folder / "clip.mp4", "--model", "dcp"])
    try:
        wait_for_output(proc, folder)
        shutil.rmtree(folder)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert err.splitlines()[-1] == f"streamdehaze: error: {folder} was deleted while the run wrote clip.mp4 for it: " \
                                   "the output cannot be put there", err


def test_a_run_stopped_before_its_first_frame_leaves_no_partial(make_video, tmp_path, caplog):
    # It left an empty NAME.partial.mp4 (0 bytes), named as the output, and moved an earlier run's partial aside
    import argparse
    import threading

    from streamdehaze import process
    from streamdehaze.command import _finish

    src, out = make_video(frames=20), tmp_path / "out.mp4"
    (tmp_path / "out.partial.mp4").write_bytes(b"an earlier run's frames")
    stop = threading.Event()
    stop.set()
    result = process(src, out, model="dcp", stop=stop)
    assert (result.interrupted, result.frames, result.output) == (True, 0, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.partial.mp4"]
    assert (tmp_path / "out.partial.mp4").read_bytes() == b"an earlier run's frames"
    args = argparse.Namespace(input=str(src), output=str(out), stats_json=None, quiet=False)
    assert _finish(args, result, "frames") == 130
    assert caplog.messages[-1] == "interrupted before the first frame was dehazed: nothing written"


def test_an_interrupted_run_s_segments_hold_its_frames(tmp_path, caplog):
    import argparse

    from streamdehaze.command import _finish
    from streamdehaze.pipeline import RunResult

    args = argparse.Namespace(input="in.mp4", output=str(tmp_path / "cam.mp4"), stats_json=None, quiet=False)
    result = RunResult(frames=12, seconds=1.0, interrupted=True, output=f"{tmp_path}/cam_00000.mp4 .. cam_00002.mp4")
    assert _finish(args, result, "frames") == 130
    assert caplog.messages[-1] == f"interrupted: {result.output} hold the 12 frames dehazed so far"  # (not "holds")


def test_next_run_removes_partials_of_killed_runs(long_video, probe, tmp_path):
    # A filesystem without anonymous files (no O_TMPFILE): the output is a hidden, locked partial.
    proc = start([long_video, tmp_path / "out.mp4", "--model", "dcp", "--quiet"], setup="import os; del os.O_TMPFILE")
    try:
        wait_for_output(proc, tmp_path)
    finally:
        proc.kill()
        proc.communicate()
    stale = tmp_path / f".out.partial-{proc.pid}.mp4"
    assert stale.stat().st_size > 0
    # One whose writer still lives stays.
    busy = tmp_path / ".out.partial-1.mp4"
    busy.write_bytes(b"being written")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1]); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
                               str(busy)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        done = subprocess.run([sys.executable, "-m", "streamdehaze", long_video, tmp_path / "out.mp4", "--model",
                               "dcp", "--max-frames", "10"], capture_output=True, text=True, timeout=300)
    finally:
        holder.communicate("")
    assert done.returncode == 0, done.stderr
    assert f"removed {stale.name}, left unfinished by a run that was killed" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial-1.mp4", "in.mp4", "out.mp4"]
    assert probe(tmp_path / "out.mp4")["count"] == 10


def test_a_named_pipe_at_a_hidden_partial_s_name_is_left_alone(make_video, probe, tmp_path):
    """The sweep for partials of killed runs opened it to see whether a writer held it: the open waited for a
    writer to the pipe for ever, and so did every run into the folder."""
    src, pipe = make_video(frames=5), tmp_path / ".out.partial-1.mp4"
    os.mkfifo(pipe)
    done = subprocess.run([sys.executable, "-m", "streamdehaze", src, tmp_path / "out.mp4", "--model", "dcp"],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "removed" not in done.stderr and probe(tmp_path / "out.mp4")["count"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial-1.mp4", "in.mp4", "out.mp4"]


def test_runs_without_anonymous_files_stay_all_or_nothing(make_video, probe, tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_TMPFILE")
    src = make_video(frames=8)
    seen = []
    process(src, tmp_path / "out.mp4", model="dcp", on_frames=lambda n: seen.append(
        sorted(p.name for p in tmp_path.iterdir())))
    assert seen and all(names == [f".out.partial-{os.getpid()}.mp4", "in.mp4"] for names in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]
    assert probe(tmp_path / "out.mp4")["times"] == probe(src)["times"]


def test_a_finished_file_run_never_takes_the_name_of_a_recording_begun_meanwhile(make_video, probe, run_cli,
                                                                                tmp_path, monkeypatch):
    # A file run to cam.mp4, begun before a live recording to cam.mp4 (which found no file there): its finished
    # output replaced the recording, which then took the file run's output for its own and removed it. The
    # recording is held, as recordings are, when the file run puts its output in place.
    from streamdehaze import outputs

    src, out = make_video(frames=20), tmp_path / "cam.mp4"
    link = outputs.OutputFile._link

    def recording_begins(self, dest):
        if dest == out and not out.exists():
            recording = open(out, "xb")
            outputs.hold(recording.fileno())
            recording.write(b"a live recording")
            recording.flush()
            monkeypatch.setattr(self, "recording", recording, raising=False)
        link(self, dest)
    monkeypatch.setattr(outputs.OutputFile, "_link", recording_begins)
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 1 and err == f"streamdehaze: error: {out} is being recorded by another run, begun since this " \
                                "one: this one's output is cam.1.mp4\n", err
    assert out.read_bytes() == b"a live recording" and probe(tmp_path / "cam.1.mp4")["count"] == 20


def test_no_link_at_a_hidden_partial_s_name_is_followed(make_video, hazy_image, probe, run_cli, tmp_path,
                                                        monkeypatch):
    """Without anonymous files, a video, its --stats-json and a photo are written under .NAME.partial-PID.EXT: a
    link planted there (a folder others write to) had a run write over the file it points to, then take the link
    for its output."""
    import cv2
    monkeypatch.delattr(os, "O_TMPFILE")
    src, photo, shared = make_video(frames=5), tmp_path / "photo.png", tmp_path / "shared"
    assert cv2.imwrite(str(photo), hazy_image(0, 32, 24))
    shared.mkdir()
    victims = {}
    for name in ("out.mp4", "run.json", "photo.png"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text(f"important: {name}")
        hidden = shared / f".{Path(name).stem}.partial-{os.getpid()}{Path(name).suffix}"
        hidden.symlink_to(victim)
        victims[victim] = hidden
    code, err = run_cli(src, shared / "out.mp4", "--model", "dcp", "--stats-json", shared / "run.json")
    assert code == 0, err
    code, err = run_cli(photo, shared / "photo.png", "--model", "dcp")
    assert code == 0, err
    for victim, hidden in victims.items():
        assert victim.read_text() == f"important: {victim.name[7:]}" and hidden.is_symlink()
    outputs = [shared / name for name in ("out.mp4", "run.json", "photo.png")]
    assert not [p for p in outputs if p.is_symlink()]
    assert probe(outputs[0])["count"] == 5 and json.loads(outputs[1].read_text())["frames"] == 5
    assert cv2.imread(str(outputs[2])).shape == (24, 32, 3)
    assert sorted(p.name for p in shared.iterdir() if not p.is_symlink()) == ["out.mp4", "photo.png", "run.json"]


def test_a_complete_run_replaces_an_interrupted_ones_partial(make_video, run_cli, caplog, tmp_path):
    src = make_video(frames=5)
    (tmp_path / "out.partial.mp4").write_bytes(b"frames of an interrupted run")
    (tmp_path / "out.partial.1.mp4").write_bytes(b"frames of an earlier interrupted run")
    code, err = run_cli(src, tmp_path / "out.mp4", "--model", "dcp")
    assert code == 0, err
    assert "removed out.partial.mp4, left by an interrupted run: out.mp4 is complete now" in caplog.text
    assert "removed out.partial.1.mp4, left by an interrupted run: out.mp4 is complete now" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_write_failure_names_the_target_and_leaves_nothing(long_video, run_cli, small_filesystem):
    folder = small_filesystem(200)
    out = folder / "out.mp4"
    code, err = run_cli(long_video, out, "--model", "dcp", "--crf", 0)
    assert code == 1
    assert err == f"streamdehaze: error: writing {out} failed: No space left on device\n"
    assert list(folder.iterdir()) == []


# A run whose every frame is dehazed, its writer held at the first one (a real hook: ``on_frame``) while Ctrl-C comes
# SIGNALS times; each is taken (its handler run in the main thread) before the writer goes on. Prints the result.
# The signals come once the run waits for its writer (``Worker.finish``, watched): with every frame dehazed but the
# input's end not yet read, a Ctrl-C is one before the end, and keeps a partial.
_INTERRUPTED_WHILE_FINISHING = """
import os, signal, sys, threading
from streamdehaze import threads
from streamdehaze.api import process

src, out, signals = sys.argv[1], sys.argv[2], int(sys.argv[3])
taken, finishing = threading.Semaphore(0), threading.Event()

def on_interrupt(signum, frame):  # Python's own Ctrl-C, seen as it is taken
    taken.release()
    raise KeyboardInterrupt

signal.signal(signal.SIGINT, on_interrupt)
finish = threads.Worker.finish

def watched_finish(worker, *args, **kwargs):
    finishing.set()
    return finish(worker, *args, **kwargs)

threads.Worker.finish = watched_finish
count = [0]

def on_frames(n):
    count[0] += n

def on_frame(record):
    if record.index == 0:
        assert finishing.wait(60)  # the input read to its end: the run is finishing, waiting for this writer
        assert count[0] == 12  # (every frame dehazed)
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGINT)
            assert taken.acquire(timeout=60)

result = process(src, out, model="dcp", on_frame=on_frame, on_frames=on_frames)
print(result.interrupted, result.frames, result.output)
"""


def interrupted_while_finishing(src: Path, out: Path, signals: int) -> tuple[str, str]:
    """The run's standard output (its result) and error (its log)."""
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_WHILE_FINISHING, src, out, str(signals)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_interrupts)
    try:
        stdout, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # (hung: two threads on one encoder)
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    return stdout, err


def test_ctrl_c_while_the_last_frames_are_written_keeps_the_complete_file(make_video, probe, tmp_path):
    """Every frame was read and dehazed: the file is finished and named, and the run says it was interrupted."""
    src, out = make_video(frames=12), tmp_path / "out.mp4"
    assert interrupted_while_finishing(src, out, signals=1)[0] == "True 12 None\n"
    assert probe(out)["times"] == probe(src)["times"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_a_second_ctrl_c_while_finishing_keeps_the_frames_written(make_video, probe, tmp_path):
    """The second Ctrl-C drops the frames not yet begun by the writer; the one it was writing is kept, playable."""
    src, out = make_video(frames=12), tmp_path / "out.mp4"
    partial = tmp_path / "out.partial.mp4"
    assert interrupted_while_finishing(src, out, signals=2)[0] == f"True 1 {partial}\n"
    assert probe(partial)["times"] == probe(src)["times"][:1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.partial.mp4"]


def test_an_interrupted_run_moves_an_earlier_ones_partial_aside(make_video, probe, tmp_path):
    """Nothing recorded is replaced: the earlier partial becomes NAME.partial.1.EXT, as a recording moves aside."""
    src, out = make_video(frames=12), tmp_path / "out.mp4"
    (tmp_path / "out.partial.mp4").write_bytes(b"frames of an earlier interrupted run")
    result, log = interrupted_while_finishing(src, out, signals=2)
    assert result == f"True 1 {tmp_path / 'out.partial.mp4'}\n"
    assert "out.partial.mp4 already held the frames of an interrupted run: moved it to out.partial.1.mp4\n" in log
    assert (tmp_path / "out.partial.1.mp4").read_bytes() == b"frames of an earlier interrupted run"
    assert probe(tmp_path / "out.partial.mp4")["count"] == 1

def test_segments_of_a_second_run_never_replace_the_first_ones(make_video, probe, tmp_path):
    """Two runs to the same segment names: the second finds the first's files there and goes on after them, without
    a word (it said "cam_00000.mp4 is there already (another recording to the same names?)", as if one were)."""
    src, out = make_video(frames=12), tmp_path / "cam.mp4"
    run = [sys.executable, "-m", "streamdehaze", src, out, "--model", "dcp", "--segment-time", "0.2"]
    first = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    kept = {p.name: p.read_bytes() for p in tmp_path.glob("cam_*.mp4")}
    assert sorted(kept) == ["cam_00000.mp4", "cam_00001.mp4", "cam_00002.mp4"]
    second = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert len(second.stderr.splitlines()) == 1  # (the summary)
    assert second.stderr.endswith(f" with dcp -> {tmp_path}/cam_00003.mp4 .. cam_00005.mp4\n"), second.stderr
    assert {name: (tmp_path / name).read_bytes() for name in kept} == kept
    again = [probe(tmp_path / f"cam_{n:05d}.mp4")["count"] for n in (3, 4, 5)]
    assert again == [probe(tmp_path / name)["count"] for name in sorted(kept)] and sum(again) == 12


def test_a_file_run_whose_next_segment_cannot_be_created_keeps_the_others(make_video, probe, run_cli,
                                                                          small_filesystem):
    """A runtime failure (exit 1), not a usage error, naming the segments kept."""
    src, folder = make_video(frames=20), small_filesystem(2048, files=3)
    code, err = run_cli(src, folder / "cam.mp4", "--model", "dcp", "--segment-time", 0.2)
    kept = sum(probe(folder / f"cam_{n:05d}.mp4")["count"] for n in range(3))  # (five or six frames each)
    assert (code, err) == (1, f"streamdehaze: error: cannot write {folder}/cam_00003.mp4: No space left on device; "
                              f"the {kept} frames written before it are in {folder}/cam_00000.mp4 .. cam_00002.mp4\n")
    assert 15 <= kept < 20


def test_a_file_to_an_hls_playlist(make_video, run_cli, tmp_path, monkeypatch):
    """``out.m3u8``: a playlist of every segment (an event playlist, ended), its MPEG-TS segments beside it, every
    frame and the sound in them, a frame's times as they were; nothing written anywhere else (the working folder)."""
    src = make_video(frames=200, audio=True, gop=25)
    work, out = tmp_path / "work", tmp_path / "web" / "clip.m3u8"
    work.mkdir()
    out.parent.mkdir()
    monkeypatch.chdir(work)
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0, err
    playlist = out.read_text().splitlines()
    segments = [line for line in playlist if not line.startswith("#")]
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in playlist and playlist[-1] == "#EXT-X-ENDLIST", playlist
    assert len(segments) >= 2 and sorted(p.name for p in out.parent.iterdir()) == sorted(["clip.m3u8", *segments])
    assert all(name.startswith("clip_") and name.endswith(".ts") for name in segments) and not any(work.iterdir())
    with av.open(str(src)) as a, av.open(str(out)) as b:
        assert [s.codec_context.name for s in b.streams] == ["h264", "aac"]
        before = [f.time for f in a.decode(video=0)]
        after = [f.time for f in b.decode(video=0)]
    assert len(after) == len(before) == 200
    assert np.allclose(np.array(after) - after[0], np.array(before) - before[0], atol=1e-4)


def test_a_file_s_hls_playlist_is_written_as_it_goes(long_video, tmp_path):
    """A video-on-demand playlist was written only at the end: a kill left segments and no playlist."""
    out = tmp_path / "web" / "clip.m3u8"
    out.parent.mkdir()
    proc = start([long_video, out, "--model", "dcp", "--quiet"])
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and "#EXTINF" in (seen := out.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        assert "#EXT-X-ENDLIST" not in seen  # (first seen while the run went on, not once it ended)
    finally:
        proc.kill()
        proc.communicate()
    segments = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert segments and all(decodable_times(out.parent / name) for name in segments)


def test_a_next_run_to_an_hls_playlist_writes_over_none_of_the_first_one_s_segments(make_video, run_cli, tmp_path):
    # Numbered from the run's start in seconds, a run that wrote more than a segment a second had its later ones
    # written over by the next run (its playlist then played the other input's pictures)
    src, out = make_video(frames=400, gop=25), tmp_path / "web" / "clip.m3u8"  # 16 s: three segments
    out.parent.mkdir()
    assert run_cli(src, out, "--model", "dcp", "--quiet") == (0, "")
    first = {p.name: p.read_bytes() for p in out.parent.glob("clip_*.ts")}
    began = time.time()
    assert run_cli(src, out, "--model", "dcp", "--quiet") == (0, "")
    segments = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert began * 1e6 <= int(segments[0][len("clip_"):-len(".ts")]) <= time.time() * 1e6  # (microseconds)
    assert len(first) == len(segments) == 3 and not set(first) & set(segments)
    assert all((out.parent / name).read_bytes() == data for name, data in first.items())


def test_an_hls_playlist_onto_a_full_disk_fails_in_one_line(long_video, small_filesystem):
    """FFmpeg's HLS muxer writes its segments itself: it reported no error, and the run ended with exit 0 and an
    empty playlist."""
    folder = small_filesystem(400)
    proc = start([long_video, folder / "out.m3u8", "--model", "dcp", "--crf", 0, "--max-frames", 300, "--quiet"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and err.endswith(f" {folder}/out.m3u8 failed: No space left on device\n"), err
    assert len(err.splitlines()) == 1, err


def test_an_hls_playlist_follows_no_link_planted_at_its_name(make_video, tmp_path):
    """The playlist is written under a temporary name (``.m3u8.tmp``) that anyone who can write to the folder can
    foresee: a link planted there is refused, never written through."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    web = tmp_path / "web"
    web.mkdir()
    (web / "clip.m3u8.tmp").symlink_to(victim)
    proc = start([make_video(frames=30), web / "clip.m3u8", "--model", "dcp", "--quiet"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "clip.m3u8 failed: Too many levels of symbolic links" in err, err
    assert victim.read_text() == "keep me\n"


def _full_folder(small_filesystem) -> Path:
    """A folder on a filesystem with not a byte free."""
    folder = small_filesystem(16)
    with contextlib.suppress(OSError), open(folder / "fill", "wb") as fill:
        fill.write(bytes(64 * 1024))
    return folder


@pytest.mark.parametrize("name", ["out.mp4", "out.mov"])
def test_a_file_run_onto_a_full_disk_fails_in_one_line(make_video, small_filesystem, name):
    """MP4 and MOV fail to write their header there; FFmpeg asked to write after that crashed the process."""
    src, folder = make_video(frames=30), _full_folder(small_filesystem)
    proc = start([src, folder / name, "--model", "dcp", "--quiet"])
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (1, f"streamdehaze: error: writing {folder / name} failed: No space left on "
                                         "device\n")
    assert [p.name for p in folder.iterdir()] == ["fill"]


def test_a_serve_stream_onto_a_full_disk_fails_alone(make_video, probe, small_filesystem, tmp_path):
    src, folder = make_video(frames=30), _full_folder(small_filesystem)
    config = tmp_path / "cams.toml"
    config.write_text(f'model = "dcp"\n[[stream]]\nname = "full"\ninput = "{src}"\noutput = "{folder}/full.mov"\n'
                      f'[[stream]]\nname = "good"\ninput = "{src}"\noutput = "{tmp_path}/good.mp4"\n')
    proc = start(["serve", config])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert f"streamdehaze: full: failed: writing {folder}/full.mov failed: No space left on device" in err
    assert probe(tmp_path / "good.mp4")["count"] == 30


def test_a_killed_file_run_leaves_segments_that_play(long_video, tmp_path):
    """A file run's segments are written as a recording is (MP4 in fragments): a kill leaves the one being written
    playable up to about its last second, where it left a file without its index under its final name."""
    proc = start([long_video, tmp_path / "cam.mp4", "--model", "dcp", "--segment-time", 10, "--quiet"])
    second = tmp_path / "cam_00001.mp4"
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and \
                (not second.exists() or second.stat().st_size < 30_000):
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    finally:
        proc.kill()
        proc.communicate()
    counts = [len(decodable_times(tmp_path / f"cam_{n:05d}.mp4")) for n in range(2)]
    assert sorted(p.name for p in tmp_path.glob("cam_*")) == ["cam_00000.mp4", "cam_00001.mp4"]
    assert counts[0] == 250 and counts[1] > 0, counts


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".ts"])
def test_a_full_disk_under_segments_says_the_frames_they_hold(long_video, small_filesystem, suffix):
    folder = small_filesystem(600)
    proc = start([long_video, folder / f"cam{suffix}", "--model", "dcp", "--segment-time", 2, "--crf", 0, "--quiet"])
    _, err = proc.communicate(timeout=300)
    segments = sorted(folder.iterdir())
    said = re.fullmatch(rf"streamdehaze: error: writing {folder}/cam_\d+{suffix} failed: No space left on device; "
                        rf"the (\d+) frames written before it are in {folder}/cam_00000{suffix}( \.\. \S+)?\n", err)
    assert proc.returncode == 1 and said, err
    counts = [len(decodable_times(segment)) for segment in segments]
    assert int(said.group(1)) == sum(counts) and all(counts), (err, counts)
    assert err.endswith(f"{segments[-1].name}\n" if len(segments) > 1 else f"{segments[0]}\n")

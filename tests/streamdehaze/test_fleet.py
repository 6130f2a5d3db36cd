"""``serve`` over files: each stream's output is what a single run of its input writes, from the command line and
from Python; a stream that fails ends alone."""

from __future__ import annotations

import contextlib
import json
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import av
import pytest

from streamdehaze import Fleet, serve


def _config(path: Path, streams: dict[str, tuple[Path, Path]], **top: object) -> Path:
    lines = [f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}" for key, value in top.items()]
    for name, (src, out) in streams.items():
        lines += ["[[stream]]", f'name = "{name}"', f'input = "{src}"', f'output = "{out}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def _inputs(make_video) -> dict[str, Path]:
    """Three files: two of one size (their frames share model calls), one with a variable frame rate and audio,
    and one of another size and frame count."""
    return {"gate": make_video("gate.mp4", frames=9, audio=True),
            "yard": make_video("yard.mp4", frames=7, pts=[0, 512, 1536, 2048, 4096, 4608, 5120], audio=True),
            "dock": make_video("dock.mp4", frames=5, width=128, height=72)}


def _max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("model, tolerance", [("dcp", 0), ("auto", 2)])
def test_serve_writes_what_single_runs_write(make_video, probe, run_cli, tmp_path, model, tolerance):
    """Lossless outputs, so that any difference is the engine's: dcp gives the very same frames; KA_Net (bfloat16
    on CPU) may round a sample differently when frames of several streams share a model call."""
    inputs = _inputs(make_video)
    for name, src in inputs.items():
        code, err = run_cli(src, tmp_path / f"{name}.single.mkv", "--model", model, "--codec", "ffv1", "--quiet")
        assert code == 0, err
    config = _config(tmp_path / "files.toml", {name: (src, tmp_path / f"{name}.mkv") for name, src in inputs.items()},
                     model=model, codec="ffv1")
    code, err = run_cli("serve", config)
    assert code == 0, err
    for name, src in inputs.items():
        single, served = probe(tmp_path / f"{name}.single.mkv"), probe(tmp_path / f"{name}.mkv")
        assert served["count"] == single["count"] == probe(src)["count"]
        assert served["times"] == single["times"]  # (Matroska shifts them all by the AAC encoder delay)
        assert served["audio"] == single["audio"] == probe(src)["audio"]  # copied packet for packet
        assert _max_difference(served["rgb"], single["rgb"]) <= tolerance, name
        assert f"streamdehaze: {name}: {single['count']} frames in " in err
    assert f"streamdehaze: fleet: 3 streams, {9 + 7 + 5} frames in " in err


def test_python_serve_takes_a_list_of_streams_or_a_dict(make_video, probe, tmp_path):
    inputs = _inputs(make_video)
    streams = [{"name": name, "input": str(src), "output": str(tmp_path / f"{name}.out.mp4"), "model": "dcp"}
               for name, src in inputs.items()]
    result = serve(streams)
    assert [s.name for s in result.streams] == list(inputs) and not result.failed
    assert [s.result.frames for s in result.streams] == [9, 7, 5] and result.frames == 21
    for name, src in inputs.items():
        assert probe(tmp_path / f"{name}.out.mp4")["times"] == probe(src)["times"]
    with Fleet({"model": "dcp", "max_frames": 3, "stream": [dict(s, output=s["output"].replace(".out.mp4", ".3.mp4"))
                                                            for s in streams]}) as fleet:
        assert fleet.wait(60)
    for name in inputs:
        assert probe(tmp_path / f"{name}.3.mp4")["count"] == 3


def test_each_stream_keeps_its_own_strength(make_video, probe, tmp_path):
    """Streams of one input at strengths 0, 0.5 and 1 (the default): their own engines, their own output."""
    src = make_video(frames=4)
    streams = [{"name": name, "input": str(src), "output": str(tmp_path / f"{name}.mkv"), "model": "dcp",
                "codec": "ffv1", **extra}
               for name, extra in (("none", {"strength": 0.0}), ("half", {"strength": 0.5}), ("full", {}))]
    result = serve(streams)
    assert not result.failed
    original = probe(src)["rgb"]
    none, half, full = ([f.astype(int) for f in probe(tmp_path / f"{n}.mkv")["rgb"]] for n in ("none", "half", "full"))
    assert _max_difference(none, original) <= 3 and min(np.abs(f - o).mean() for f, o in zip(full, original)) > 10
    assert max(np.abs(h - (f + o) / 2).mean() for h, f, o in zip(half, full, original)) < 1.5


def test_a_stream_that_fails_ends_alone(make_video, probe, run_cli, tmp_path):
    good = make_video("good.mp4", frames=6)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video at all" * 100)
    config = _config(tmp_path / "files.toml", {"good": (good, tmp_path / "good.out.mp4"),
                                               "bad": (bad, tmp_path / "bad.out.mp4")}, model="dcp")
    code, err = run_cli("serve", config)
    assert code == 1
    assert f"streamdehaze: bad: failed: not a video or image file: {bad}" in err
    assert probe(tmp_path / "good.out.mp4")["count"] == 6 and not (tmp_path / "bad.out.mp4").exists()
    assert "Traceback" not in err


def test_timestamps_of_a_fleet_are_exact(make_video, probe, tmp_path):
    """Frames keep their pts and time base through shared engine calls (a stream's time base is its own)."""
    a = make_video("a.mp4", frames=4, time_base=Fraction(1, 90000))
    b = make_video("b.mp4", frames=4, time_base=Fraction(1, 1000))
    serve([{"name": "a", "input": str(a), "output": str(tmp_path / "a.out.mkv"), "model": "dcp"},
           {"name": "b", "input": str(b), "output": str(tmp_path / "b.out.mkv"), "model": "dcp"}])
    assert probe(tmp_path / "a.out.mkv")["times"] == probe(a)["times"]
    assert probe(tmp_path / "b.out.mkv")["times"] == probe(b)["times"]


def test_each_stream_applies_its_transform_in_its_own_writer(make_video, probe, tmp_path, monkeypatch):
    """On CPU the engine's one thread does only the shared work (the model call, temporal smoothing); applying the
    transform at full resolution and building the frames, per frame, runs in each stream's writer thread, beside
    it (two cameras on two cores would otherwise queue behind each other in the engine's thread)."""
    import threading

    import streamdehaze.engine

    threads: list[str] = []
    apply = streamdehaze.engine.apply_planes

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return apply(*args, **kwargs)

    monkeypatch.setattr(streamdehaze.engine, "apply_planes", recorded)
    inputs = {"gate": make_video("gate.mp4", frames=6), "yard": make_video("yard.mp4", frames=6)}
    result = serve([{"name": name, "input": str(src), "output": str(tmp_path / f"{name}.out.mkv"), "model": "dcp",
                     "infer_size": 32} for name, src in inputs.items()])
    assert not result.failed and result.frames == 12
    assert set(threads) == {"encode gate", "encode yard"}
    for name, src in inputs.items():
        assert probe(tmp_path / f"{name}.out.mkv")["times"] == probe(src)["times"]


def test_a_reload_sent_while_the_fleet_starts_is_applied_once_it_runs(make_video, probe, run_cli, tmp_path,
                                                                     monkeypatch, sighup_delivered):
    """A service manager may send SIGHUP right after starting ``serve``, while the models load: that reload is
    kept for when the streams run, not taken for an interrupt."""
    import os
    import signal

    import streamdehaze.command

    first, second = make_video("first.mp4", frames=6), make_video("second.mp4", frames=4)
    config = _config(tmp_path / "files.toml", {"first": (first, tmp_path / "first.out.mp4")}, model="dcp")
    start = streamdehaze.command.Fleet.start

    def start_with_a_reload_on_the_way(fleet: Fleet) -> None:
        _config(config, {"first": (first, tmp_path / "first.out.mp4"), "second": (second, tmp_path / "second.out.mp4")},
                model="dcp")
        os.kill(os.getpid(), signal.SIGHUP)
        start(fleet)

    monkeypatch.setattr(streamdehaze.command.Fleet, "start", start_with_a_reload_on_the_way)
    code, err = run_cli("serve", config)
    assert code == 0, err
    assert "streamdehaze: second: 4 frames in " in err and "fleet: 2 streams" in err
    assert probe(tmp_path / "first.out.mp4")["count"] == 6 and probe(tmp_path / "second.out.mp4")["count"] == 4


def test_file_streams_a_reload_stops_are_the_operators_choice_not_cut_short_runs(make_video, probe, tmp_path):
    """A reload that restarts a file stream (a new crf) or removes one: the fleet still ends with 0, not 130 (an
    interrupted run), and its summary says what became of each run, naming only files that are there."""
    import time

    from streamdehaze.command import _serve_exit, summary

    srcs = {name: make_video(f"{name}.mp4", frames=300, width=320, height=240) for name in ("a", "b")}
    streams = [{"name": name, "input": str(src), "output": str(tmp_path / f"{name}.out.mp4"), "model": "dcp",
                "batch": 1} for name, src in srcs.items()]
    with Fleet(streams) as fleet:
        deadline = time.monotonic() + 60
        while min(m.stats.snapshot()["frames"] for m in fleet.members().values()) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert fleet.reload([dict(streams[0], crf=30)]) == {"added": [], "removed": ["b"], "changed": ["a"],
                                                            "retried": []}
        assert fleet.wait(120)
        result = fleet.close()
    assert _serve_exit(result) == 0
    assert probe(tmp_path / "a.out.mp4")["count"] == 300 and not (tmp_path / "a.out.partial.mp4").exists()
    kept = tmp_path / "b.out.partial.mp4"  # what b wrote before it was removed
    assert 5 <= probe(kept)["count"] < 300 and not (tmp_path / "b.out.mp4").exists()
    lines = summary(result)
    assert lines[0].startswith("b: ") and lines[0].endswith(f" (removed by a reload; cut short: {kept})")
    assert lines[1].startswith("a: ") and lines[1].endswith(f"-> {tmp_path / 'a.out.mp4'} (restarted by a reload)")
    assert lines[2].startswith("a: 300 frames in ") and lines[2].endswith(f"-> {tmp_path / 'a.out.mp4'}")
    assert lines[3].startswith("fleet: 2 streams, ")


def test_a_stopped_file_stream_s_partial_has_its_sound_to_its_last_frame(make_video, tmp_path):
    # serve's stop (Ctrl-C, SIGTERM) did not cut as a single run's does: the partial's last second was silent, its
    # sound stored further on in the file, unread
    import time

    src = make_video(frames=1500, width=320, height=240, audio=True)  # its sound stored 1.1 s behind its picture
    out = tmp_path / "out.mp4"
    with Fleet([{"name": "a", "input": str(src), "output": str(out), "model": "dcp"}]) as fleet:
        deadline = time.monotonic() + 60
        while fleet.members()["a"].stats.snapshot()["frames"] < 100:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        fleet.stop()
        assert fleet.wait(120)
        fleet.close()
    ends = {}
    with av.open(str(tmp_path / "out.partial.mp4")) as c:
        for packet in c.demux():
            if packet.size:
                end = (packet.pts + packet.duration) * packet.time_base
                ends[packet.stream.type] = max(ends.get(packet.stream.type, 0), end)
    assert 4 < ends["video"] < 60 and abs(ends["audio"] - ends["video"]) < 0.05, ends  # (an AAC frame: 21 ms)


def test_a_reload_starts_again_a_stream_that_failed(make_video, probe, caplog, tmp_path):
    """A stream that failed (here its input; in the field a full disk, a server gone) stayed dead through reloads of
    the same configuration, until its entry was edited or the process restarted; the operator who mended the cause
    and reloaded was told nothing. A reload with nothing to do says so."""
    import logging

    caplog.set_level(logging.INFO, logger="streamdehaze")
    src = tmp_path / "a.mp4"
    src.write_bytes(b"not a video yet")
    stream = {"name": "a", "input": str(src), "output": str(tmp_path / "a.out.mkv"), "model": "dcp"}
    with Fleet([stream]) as fleet:
        assert fleet.wait(60)
        make_video("a.mp4", frames=20)  # mended
        assert fleet.reload([stream]) == {"added": [], "removed": [], "changed": [], "retried": ["a"]}
        assert fleet.wait(60)
        assert fleet.reload([stream]) == {"added": [], "removed": [], "changed": [], "retried": []}
        result = fleet.close()
    first, second = result.streams
    assert first.error is not None and second.error is None and second.result.frames == 20
    assert probe(tmp_path / "a.out.mkv")["count"] == 20
    said = [m for m in caplog.messages if m.startswith("reload: ")]
    assert said == ["reload: started again after failing a", "reload: no changes"], caplog.messages


def test_each_run_of_a_restarted_stream_names_the_partial_that_holds_its_frames(make_video, probe, tmp_path):
    """A file stream restarted by a reload and then stopped: the second run's partial takes the name, the first's
    is moved aside, and the summary names each where it is (both said a.out.partial.mp4)."""
    import time

    from streamdehaze.command import summary

    src = make_video("a.mp4", frames=600, width=320, height=240)
    stream = {"name": "a", "input": str(src), "output": str(tmp_path / "a.out.mp4"), "model": "dcp", "batch": 1}
    with Fleet([stream]) as fleet:
        def frames_at_least(n: int) -> None:
            deadline = time.monotonic() + 60
            while fleet.members()["a"].stats.snapshot()["frames"] < n:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        frames_at_least(5)
        fleet.reload([dict(stream, crf=30)])
        frames_at_least(5)  # (the restarted run's)
        fleet.stop()
        result = fleet.close()
    first, second = (r.result for r in result.streams)
    assert (first.output, second.output) == (str(tmp_path / "a.out.partial.1.mp4"), str(tmp_path / "a.out.partial.mp4"))
    assert [probe(Path(r.output))["count"] for r in (first, second)] == [first.frames, second.frames]
    lines = summary(result)
    assert lines[0].endswith(f"(restarted by a reload; cut short: {first.output})"), lines
    assert lines[1].endswith(f"(cut short: {second.output})"), lines


def test_statistics_are_appended_to_what_a_run_before_wrote(tmp_path):
    # A recording restarted by its supervisor (systemd's Restart=) keeps the lines of the run before.
    from streamdehaze.stats import Reporter, RunStats

    path = tmp_path / "live.jsonl"
    for run in range(2):
        stats = RunStats()
        stats.frame_done(None)
        Reporter(stats, path, interval=60).close()  # the last line alone
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2 and all(line["frames"] == 1 for line in lines)


def test_statistics_follow_their_file_rotated_and_say_when_they_were_written(tmp_path):
    """Rotated as logs are (renamed, then a SIGHUP that does not touch it), the statistics went on into the renamed
    file for good and none came at the name again. And a line's ``time`` counts from the run's start, whose
    wall-clock time nothing said."""
    import time

    from streamdehaze.stats import Reporter, RunStats

    path = tmp_path / "live.jsonl"
    began = time.time()
    reporter = Reporter(RunStats(), path, interval=0.05)
    try:
        time.sleep(0.3)
        path.rename(tmp_path / "live.jsonl.1")
        time.sleep(0.3)
    finally:
        reporter.close()
    old = [json.loads(line) for line in (tmp_path / "live.jsonl.1").read_text().splitlines()]
    new = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(old) >= 2 and len(new) >= 2
    times = [line["unix_time"] for line in old + new]
    assert began <= times[0] and times == sorted(times) and times[-1] <= time.time()


def test_a_full_disk_under_the_statistics_is_said_once_and_naming_the_file(small_filesystem, caplog):
    """A statistics file that cannot be written (a full disk) is said once, naming it, and again when it is
    written again; the run's end does not fail on it. It was an unlabelled 'stats: [Errno 28] ...' every second, and
    the last line's failure ended the run as an internal error."""
    import time

    from streamdehaze.stats import Reporter, RunStats

    folder = small_filesystem(16)
    path, filler = folder / "gate.jsonl", folder / "filler"

    def fill() -> None:
        with open(filler, "wb", buffering=0) as file, contextlib.suppress(OSError):
            while True:
                file.write(b"\0" * 512)
    reporter = Reporter(RunStats(), path, interval=0.02)
    try:
        fill()
        time.sleep(0.5)
        said = [r.getMessage() for r in caplog.records if r.name == "streamdehaze"]
        assert said == [f"{path}: statistics not written: No space left on device; the video goes on"]
        filler.unlink()
        time.sleep(0.3)
        said = [r.getMessage() for r in caplog.records if r.name == "streamdehaze"]
        assert said[1:] == [f"{path}: statistics written again"]
        fill()
    finally:
        reporter.close()
    assert len(said) == 2 and json.loads(path.read_text().splitlines()[-1])["frames"] == 0


def test_a_stream_restarted_with_another_output_has_one_info_series(tmp_path):
    # A reload that changes a stream's output: dashboards join on streamdehaze_info, so the old series must go.
    import time
    import urllib.request

    from streamdehaze.stats import Member, Reporter, RunStats
    from tests.live.conftest import free_port

    port = free_port()
    members = {"gate": Member(RunStats(), {"input": "in.mp4", "output": "gate.mp4", "model": "dcp"})}
    reporter = Reporter(lambda: members, None, ("127.0.0.1", port), interval=0.05)

    def info_lines(wanted: str) -> list[str]:
        deadline = time.monotonic() + 10
        while True:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            lines = [line for line in body.splitlines() if line.startswith("streamdehaze_info{")]
            if any(wanted in line for line in lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)
    try:
        assert len(info_lines('output="gate.mp4"')) == 1
        members["gate"] = Member(RunStats(), {"input": "in.mp4", "output": "gate2.mp4", "model": "dcp"})
        lines = info_lines('output="gate2.mp4"')
        assert len(lines) == 1 and 'output="gate2.mp4"' in lines[0], lines
    finally:
        reporter.close()


def test_every_line_of_a_stream_that_publishes_carries_its_name(make_video, run_cli, caplog, tmp_path):
    """What the publishing connection says (from a thread of its own) is labelled as the stream's other lines are:
    here the input going on at another size, a spliced recording published to a UDP address read by the test."""
    import socket

    first = make_video("first.ts", frames=10, width=96, height=64)
    second = make_video("second.ts", frames=10, width=64, height=48, pts=[512 * i for i in range(10, 20)])
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes(first.read_bytes() + second.read_bytes())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        url = f"udp://127.0.0.1:{receiver.getsockname()[1]}?pkt_size=1316"
        config = tmp_path / "pub.toml"
        config.write_text(f'model = "dcp"\n[[stream]]\nname = "pub"\ninput = "{spliced}"\noutput = "{url}"\n')
        code, err = run_cli("serve", config)
        assert code == 0, err
        assert receiver.recv(2048)[0] == 0x47  # MPEG-TS came
    assert f"pub: {url}: the input went on at 64x48: scaled to the output's 96x64" in caplog.messages
    # (the engine's load and release are the fleet's, said from its own thread)
    said = [r.getMessage() for r in caplog.records if r.threadName != threading.main_thread().name]
    assert said and all(message.startswith("pub: ") for message in said), caplog.messages
    assert "streamdehaze: pub: " in err  # (its summary line)


def test_a_stream_failed_on_a_full_disk_counts_the_frames_it_kept(long_video, make_video, decodable, run_cli,
                                                                   small_filesystem, tmp_path):
    """The fleet's summary and its statistics count a failed stream's frames too, as many as its segments hold."""
    import re

    folder = small_filesystem(600)
    good, stats = make_video("good.mp4", frames=20), tmp_path / "fleet.jsonl"
    config = _config(tmp_path / "files.toml", {"full": (long_video, folder / "full.mp4"),
                                               "good": (good, tmp_path / "good.out.mkv")},
                     model="dcp", stats_json=str(stats))
    full = f'output = "{folder / "full.mp4"}"'
    config.write_text(config.read_text().replace(full, f"{full}\nsegment_time = 2\ncrf = 0"))
    code, err = run_cli("serve", config)
    kept = sum(len(decodable(segment)) for segment in folder.iterdir())
    assert code == 1 and f"the {kept} frames written before it are in" in err, err
    assert re.search(rf"^streamdehaze: fleet: 2 streams, {kept + 20} frames in .* 1 failed$", err, re.M), err
    lines = [json.loads(line) for line in stats.read_text().splitlines()]
    assert [line for line in lines if line.get("stream") == "full"][-1]["frames"] == kept
    assert [line for line in lines if line.get("fleet")][-1]["frames"] == kept + 20

"""``streamdehaze serve`` against real RTSP cameras on 127.0.0.1: several cameras in one process, each on its own,
none holding back another; SIGHUP reloads the configuration."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

RATE = 25  # the test servers' frame rate


def write_config(path: Path, streams: dict[str, tuple[str, Path]], **top: object) -> Path:
    """A serve configuration: ``top`` options for every stream, then one [[stream]] per (input, output)."""
    lines = [f"{key} = {json.dumps(str(value) if isinstance(value, Path) else value)}" for key, value in top.items()]
    for name, (url, out) in streams.items():
        lines += ["[[stream]]", f'name = "{name}"', f'input = "{url}"', f'output = "{out}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def steady(times: list, start: float, end: float) -> bool:
    """About RATE frames a second from ``start`` to ``end`` (seconds of the recording), with no gap."""
    inside = [float(t) for t in times if start <= t <= end]
    gaps = [b - a for a, b in zip(inside, inside[1:])]
    return bool(inside) and max(gaps) < 0.5 and len(inside) >= 0.8 * RATE * (end - start)


def test_four_cameras_on_two_servers_one_restarts(rtsp_servers, cli, decodable, tmp_path):
    one, two = rtsp_servers(2, ("a", "b"))
    cams = {f"{server}_{path}": (s.url_of(path), tmp_path / f"{server}_{path}.mp4")
            for server, s in (("one", one), ("two", two)) for path in ("a", "b")}
    stats = tmp_path / "fleet.jsonl"
    run = cli("serve", write_config(tmp_path / "cams.toml", cams, model="dcp", timeout=2, stats_json=stats))
    for name in cams:
        run.wait_streaming(stats, RATE, stream=name)
    one.stop()  # two of the cameras go away mid-stream ...
    for name in ("one_a", "one_b"):
        assert run.wait_line(f"{name}: rtsp://127.0.0.1:{one.port}/{name[-1]}: ", 15) is not None, run.stderr
    time.sleep(1)
    one.start()  # ... and come back on the same port
    for name in ("one_a", "one_b"):
        back = run.wait_streaming(stats, 1, stream=name)["frames"]
        run.wait_streaming(stats, back + 2 * RATE, stream=name)
    assert run.interrupt() == 0, run.stderr
    lines = [json.loads(line) for line in stats.read_text().splitlines()]
    final = {line["stream"]: line for line in lines if "stream" in line}
    assert final["one_a"]["reconnects"] >= 1 and final["one_b"]["reconnects"] >= 1
    assert final["two_a"]["reconnects"] == final["two_b"]["reconnects"] == 0
    assert lines[-1]["fleet"] and lines[-1]["frames"] == sum(final[name]["frames"] for name in cams)
    times = {name: decodable(out) for name, (_, out) in cams.items()}
    for name in cams:
        assert all(b > a for a, b in zip(times[name], times[name][1:])), name
    for name in ("one_a", "one_b"):  # the outage is a real gap, and frames came after it
        gap = max(b - a for a, b in zip(times[name], times[name][1:]))
        assert gap >= 1 and sum(1 for t in times[name] if t > times[name][0] + gap) > RATE
    for name in ("two_a", "two_b"):  # the other server's cameras never noticed
        assert steady(times[name], times[name][0] + 1, times[name][-1] - 1), name
    summary = [line for line in run.stderr.splitlines() if " frames in " in line]
    for name in cams:
        assert f"streamdehaze: {name}: {final[name]['frames']} frames in " in run.stderr, (final[name], summary)
    assert "cut short" not in run.stderr  # (Ctrl-C ends a camera's recording as it should)


def test_signals_repeated_while_the_fleet_stops_let_it_finish(rtsp_servers, cli, decodable, tmp_path):
    """Ctrl-C pressed twice, or a service manager repeating SIGTERM: the second one ended the stop half-way, exit
    130 with no summary and no last statistics line (a supervisor saw a failed service)."""
    (server,) = rtsp_servers(1, ("a", "b"))
    cams = {name: (server.url_of(name), tmp_path / f"{name}.mp4") for name in ("a", "b")}
    stats = tmp_path / "fleet.jsonl"
    run = cli("serve", write_config(tmp_path / "cams.toml", cams, model="dcp", stats_json=stats))
    for name in cams:
        run.wait_streaming(stats, RATE, stream=name)
    deadline = time.monotonic() + 60
    while run.proc.poll() is None and time.monotonic() < deadline:  # SIGTERM after SIGTERM, until it has stopped
        run.proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    assert run.finish() == 0, run.stderr
    assert "interrupted" not in run.stderr and "streamdehaze: fleet: 2 streams, " in run.stderr, run.stderr
    last = json.loads(stats.read_text().splitlines()[-1])
    assert last["fleet"] and last["frames"] == sum(len(decodable(out)) for _, out in cams.values()), last


def test_reload_starts_stops_and_restarts_only_what_changed(rtsp_servers, cli, decodable, tmp_path):
    (server,) = rtsp_servers(1, ("a", "b", "c", "d"))
    out = {name: tmp_path / f"{name}.mp4" for name in ("keep", "gone", "change")}
    stats, config = tmp_path / "fleet.jsonl", tmp_path / "cams.toml"
    top = dict(model="dcp", stats_json=stats, max_latency=5)
    write_config(config, {"keep": (server.url_of("a"), out["keep"]), "gone": (server.url_of("b"), out["gone"]),
                          "change": (server.url_of("c"), out["change"])}, **top)
    run = cli("serve", config)
    for name in ("keep", "gone", "change"):
        run.wait_streaming(stats, RATE, stream=name)
    # "new" takes over the file of "gone" (a camera renamed): "gone"'s recording is moved aside, and said to be.
    write_config(config, {"keep": (server.url_of("a"), out["keep"]), "change": (server.url_of("d"), out["change"]),
                          "new": (server.url_of("b"), out["gone"])}, **top)
    run.proc.send_signal(signal.SIGHUP)
    for said in ("reload: added new", "reload: removed gone", "reload: changed change"):  # (in that order)
        assert run.wait_line(said, 30) is not None, (said, run.proc.poll(), run.stderr)
    reloaded = time.monotonic()
    run.wait_streaming(stats, 2 * RATE, stream="new")
    run.wait_streaming(stats, 2 * RATE, stream="change")
    stopped = time.monotonic()
    assert run.interrupt() == 0, run.stderr
    gone = decodable(tmp_path / "gone.1.mp4")  # finished, playable, and stopped at the reload
    assert len(gone) >= RATE and all(b > a for a, b in zip(gone, gone[1:]))
    assert f"streamdehaze: gone: {len(gone)} frames" in run.stderr and run.proc.returncode == 0
    summaries = [line for line in run.stderr.splitlines() if " -> " in line]
    assert [line.rsplit(" -> ", 1)[1] for line in summaries
            if line.startswith("streamdehaze: gone: ")] == [f"{tmp_path / 'gone.1.mp4'} (removed by a reload)"]
    old, new = decodable(tmp_path / "change.1.mp4"), decodable(out["change"])  # restarted: a new recording
    summary = [line for line in summaries if line.startswith("streamdehaze: change: ")]
    assert [line.rsplit(" -> ", 1)[1] for line in summary] == [f"{tmp_path / 'change.1.mp4'} (restarted by a reload)",
                                                               str(out["change"])]
    # the recordings moved aside are named with their streams, as the streams' own lines are (they were not)
    assert "streamdehaze: change: change.mp4 already held a recording: moved it to change.1.mp4" in run.stderr
    assert "streamdehaze: gone: gone.mp4 already held a recording: moved it to gone.1.mp4" in run.stderr
    assert len(old) >= RATE and len(new) >= 2 * RATE
    assert len(decodable(out["gone"])) >= 2 * RATE  # the new stream's
    keep = decodable(out["keep"])  # the stream that did not change never noticed
    assert not (tmp_path / "keep.1.mp4").exists()
    assert steady(keep, keep[0] + 1, keep[-1] - 1)
    # It recorded right through the reload: it had a second or more before it, and went on until the end.
    assert keep[-1] - keep[0] >= stopped - reloaded
    # The fleet's counters keep what the streams a reload stopped had done: they never go back.
    fleet = [json.loads(line) for line in stats.read_text().splitlines() if '"fleet": true' in line]
    frames = [line["frames"] for line in fleet]
    assert all(b >= a for a, b in zip(frames, frames[1:])), frames


class SilentCamera:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word (a hung camera)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"rtsp://admin:secret@127.0.0.1:{self.sock.getsockname()[1]}/stream"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_camera_that_never_answers_holds_back_no_other(rtsp_servers, cli, decodable, tmp_path, metrics_port):
    (server,) = rtsp_servers(1, ("a", "b"))
    silent = SilentCamera()
    try:
        stats = tmp_path / "fleet.jsonl"
        cams = {"a": (server.url_of("a"), tmp_path / "a.mp4"), "hung": (silent.url, tmp_path / "hung.mp4"),
                "b": (server.url_of("b"), tmp_path / "b.mp4")}
        run = cli("serve", write_config(tmp_path / "cams.toml", cams, model="dcp", timeout=1, stats_json=stats,
                                        metrics_port=metrics_port), "--duration", 12)
        run.wait_streaming(stats, 3 * RATE, stream="b")
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert run.finish(60) == 0, run.stderr
    finally:
        silent.close()
    for name in ("a", "b"):
        times = decodable(tmp_path / f"{name}.mp4")
        assert steady(times, times[0] + 1, times[-1] - 1), name
    assert not (tmp_path / "hung.mp4").exists()
    assert "hung: rtsp://***@127.0.0.1" in run.stderr and "secret" not in run.stderr, run.stderr
    assert "streamdehaze: hung: never connected" in run.stderr
    assert 'streamdehaze_frames{stream="a"}' in body and 'streamdehaze_frames{stream="b"}' in body
    assert "streamdehaze_fleet_frames " in body and "secret" not in body
    assert f'streamdehaze_info{{input="{server.url_of("a")}",model="dcp",output="{tmp_path / "a.mp4"}",stream="a"}}' \
        in body

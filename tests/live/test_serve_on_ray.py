"""``streamdehaze serve --ray`` against a real Ray cluster on 127.0.0.1 and real RTSP cameras: the cameras spread
over two workers; a worker killed is restarted by Ray and its camera records again."""

from __future__ import annotations

import json
import time

import av
import pytest

pytestmark = pytest.mark.xdist_group("ray")  # (the tests run in two processes: one runs all of these)


def _config(path, top: dict, streams: dict) -> None:
    lines = [f"{key} = {json.dumps(str(value))}" for key, value in top.items()]
    for name, (url, out) in streams.items():
        lines += ["[[stream]]", f'name = "{name}"', f'input = "{url}"', f'output = "{out}"']
    path.write_text("\n".join(lines) + "\n")


def _lines(stats) -> list[dict]:
    return [json.loads(line) for line in stats.read_text().splitlines() if line.endswith("}")] if stats.exists() else []


def _wait(condition, timeout: float, what: str, run) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        assert run.proc.poll() is None, f"serve ended while waiting for {what}:\n{run.stderr}"
        time.sleep(0.2)
    raise AssertionError(f"never saw {what}:\n{run.stderr}")


def _decodable_so_far(decodable, path) -> int:
    """Frames in a recording being written; 0 while a file just started has no header yet."""
    try:
        return len(decodable(path))
    except (OSError, av.FFmpegError):
        return 0


def test_two_cameras_on_two_workers_one_killed_and_restarted(rtsp_servers, ray_cluster, cli, decodable, monkeypatch,
                                                            tmp_path):
    pytest.importorskip("ray")
    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(key, ray_cluster.env[key])
    (server,) = rtsp_servers(1, ("a", "b"))
    out = {name: tmp_path / f"{name}.mp4" for name in ("a", "b")}
    stats = tmp_path / "stats.jsonl"
    config = tmp_path / "cams.toml"
    _config(config, {"model": "dcp", "timeout": 2, "stats_json": stats},
            {name: (server.url_of(name), path) for name, path in out.items()})
    run = cli("serve", config, "--ray", ray_cluster.address, "--workers", 2)

    def frames(name: str) -> int:
        mine = [line for line in _lines(stats) if line.get("stream") == name]
        return mine[-1]["frames"] if mine else 0

    _wait(lambda: frames("a") >= 25 and frames("b") >= 25, 90, "both cameras recording", run)
    workers = ray_cluster.workers("ray::FleetWorker")
    assert len(workers) == 2, workers  # one camera each: balanced
    workers[0].kill()
    # Ray restarts the worker; its camera is dialled again and recorded into a new file, the earlier one kept.
    _wait(lambda: sum(p.exists() for p in (tmp_path / "a.1.mp4", tmp_path / "b.1.mp4")) == 1, 60,
          "the killed worker's recording moved aside by its restart", run)
    killed = "a" if (tmp_path / "a.1.mp4").exists() else "b"
    other = "b" if killed == "a" else "a"
    _wait(lambda: _decodable_so_far(decodable, out[killed]) >= 25, 60, "the restarted camera recording again", run)
    time.sleep(1)
    assert run.interrupt() == 0, run.stderr
    before, after = decodable(tmp_path / f"{killed}.1.mp4"), decodable(out[killed])
    assert len(before) >= 20 and len(after) >= 25  # the recording up to the kill stays playable, then a new one
    assert len(decodable(out[other])) >= len(before) + len(after)  # the other camera never stopped
    assert not (tmp_path / f"{other}.1.mp4").exists()
    assert f"{killed}:" in run.stderr and "fleet: 2 streams" in run.stderr
    # said once, with the streams it runs; the killed camera's counters went on from where they were
    assert run.stderr.count("was restarted by Ray") == 1 and f"({killed}) was restarted by Ray" in run.stderr
    counts = [line["frames"] for line in _lines(stats) if line.get("stream") == killed]
    assert all(a <= b for a, b in zip(counts, counts[1:])), counts
    assert counts[-1] >= len(before) + 25, (counts[-1], len(before))


def test_a_mistake_across_streams_is_found_before_the_cluster_is_dialled(make_video, run_cli, tmp_path):
    """As a one-process fleet checks them: two streams writing one file is one line naming the file, the stream
    and the key, exit 2, before Ray is reached (nothing listens at the address given)."""
    pytest.importorskip("ray")
    src = make_video(frames=3)
    config = tmp_path / "cams.toml"
    _config(config, {"model": "dcp"}, {"x": (src, tmp_path / "same.mp4"), "y": (src, tmp_path / "same.mp4")})
    code, err = run_cli("serve", config, "--ray", "127.0.0.1:1")
    assert code == 2 and err == (f"streamdehaze: error: {config}: stream 'y': output: {tmp_path / 'same.mp4'} is the "
                                 "output of stream 'x' too\n"), err


def test_a_metrics_port_in_use_starts_no_worker(make_video, ray_cluster, cli, monkeypatch, tmp_path):
    """The port is taken before any worker starts: one line naming the file and the key, exit 2, no output."""
    import socket

    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(key, ray_cluster.env[key])
    src = make_video(frames=30)
    config = tmp_path / "cams.toml"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        _config(config, {"model": "dcp", "metrics_port": port}, {"x": (src, tmp_path / "x.mp4")})
        config.write_text(config.read_text().replace(f'"{port}"', str(port)))
        run = cli("serve", config, "--ray", ray_cluster.address)
        assert run.finish(120) == 2, run.stderr
    assert run.stderr == (f"streamdehaze: error: {config}: metrics_port: --metrics-port 127.0.0.1:{port}: Address "
                          "already in use"), run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cams.toml", "in.mp4"]


def test_the_head_lost_ends_the_run_with_its_recordings_and_one_line(rtsp_servers, ray_cluster, cli, decodable,
                                                                    monkeypatch, tmp_path):
    """The head machine gone (its GCS killed): the run once went on for a minute, then Ray ended it with some 500
    lines of its own. It ends as a batch on Ray does: in seconds, with a line naming the cluster, the recordings
    playable up to the loss. (Ray's driver still logs its failing calls meanwhile, a line or two a second.)"""
    pytest.importorskip("ray")
    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(key, ray_cluster.env[key])
    (server,) = rtsp_servers(1, ("a",))
    out, stats, config = tmp_path / "a.mp4", tmp_path / "stats.jsonl", tmp_path / "cams.toml"
    _config(config, {"model": "dcp", "timeout": 2, "stats_json": stats}, {"a": (server.url_of("a"), out)})
    run = cli("serve", config, "--ray", ray_cluster.address, "--workers", 1)
    _wait(lambda: any(line.get("frames", 0) >= 25 for line in _lines(stats)), 90, "the camera recording", run)
    for proc in ray_cluster.processes():
        if proc.pid != ray_cluster.proc.pid and "gcs_server" in " ".join(proc.cmdline()):
            proc.kill()
    lost = time.monotonic()
    code = run.finish(timeout=90)
    took = time.monotonic() - lost
    assert code == 1 and took < 30, (code, took, run.stderr)
    said = run.stderr.splitlines()
    assert said[-1].startswith(f"streamdehaze: error: lost the Ray cluster at {ray_cluster.address}"), run.stderr
    assert "(FleetWorker pid=" in run.stderr and "\x1b[" not in run.stderr  # a worker's line, without colour codes
    assert len(decodable(out)) >= 25

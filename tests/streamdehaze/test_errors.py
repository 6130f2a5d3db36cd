"""Bad input: one clear line on stderr, exit 2 (usage) or 1 (runtime), never a traceback, no partial output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from fractions import Fraction

import av
import pytest

from tests.conftest import free_port


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("streamdehaze: error: ")
    return lines[0]


def _no_output_files(folder, keep):
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


def test_missing_input(run_cli, tmp_path):
    code, err = run_cli(tmp_path / "nope.mp4", tmp_path / "o.mp4")
    assert code == 2 and "input not found" in _one_line(err)


@pytest.mark.parametrize("command", [[], ["batch"]])
def test_an_empty_input_or_output_is_refused(run_cli, hazy_image, tmp_path, monkeypatch, command):
    # A script's unset "$IN": the working folder was taken for the input, and every image in it dehazed
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), hazy_image(0, 32, 24))
    monkeypatch.chdir(tmp_path)
    for args, which in ((["", "out"], "IN_DIR" if command else "input"), (["a.png", ""], "OUT_DIR" if command
                                                                          else "output")):
        code, err = run_cli(*command, *args, "--model", "dcp")
        assert code == 2 and _one_line(err).startswith(f"streamdehaze: error: argument {which}: empty"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_folder_is_not_written_to_standard_output(run_cli, hazy_image, tmp_path, monkeypatch):
    # - is standard output: a folder named - was made, and the images written into it
    import cv2

    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), hazy_image(0, 32, 24))
    monkeypatch.chdir(tmp_path)
    code, err = run_cli("in", "-", "--model", "dcp")
    assert code == 2 and _one_line(err) == "streamdehaze: error: input is a folder, so the output must be a folder " \
                                          "too: -"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_video_that_cannot_be_opened_says_why(make_video, tmp_path):
    # A refused connection and an unreadable file were "corrupt or truncated" and an "internal error" (root reads
    # every file: the file is read without the capability that lets it)
    port = free_port()  # (nothing listens on it)
    out = tmp_path / "o.mp4"
    proc = subprocess.run([sys.executable, "-m", "streamdehaze", f"http://127.0.0.1:{port}/x.mp4", str(out),
                           "--reconnect", "0", "--model", "dcp"], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (1, f"streamdehaze: error: cannot read http://127.0.0.1:{port}/x.mp4: "
                                                 "Connection refused\n")
    src = make_video(frames=3)
    src.chmod(0)
    without = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    if without and subprocess.run([*without, "true"]).returncode != 0:
        pytest.skip("setpriv cannot drop root's right to read any file here")
    proc = subprocess.run([*without, sys.executable, "-m", "streamdehaze", str(src), str(out), "--model", "dcp"],
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (1, f"streamdehaze: error: cannot read {src}: Permission denied\n")
    assert not out.exists()


def test_binary_video_is_not_written_to_a_terminal(make_video, tmp_path):
    import pty

    main, terminal = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "streamdehaze", str(make_video(frames=3)), "-", "--model", "dcp"],
                              stdout=terminal, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(terminal)
        os.close(main)
    assert (proc.returncode, proc.stderr) == (2, "streamdehaze: error: standard output is a terminal: redirect it "
                                                 "(- > out.ts) or pipe it to a player\n")


def test_not_a_video(run_cli, tmp_path):
    src = tmp_path / "notes.mp4"
    src.write_text("these are not the frames you are looking for\n" * 20)
    code, err = run_cli(src, tmp_path / "o.mp4")
    assert code == 2 and "not a video or image" in _one_line(err)
    _no_output_files(tmp_path, ["notes.mp4"])


@pytest.mark.parametrize("cover", [False, True])
def test_no_video_stream(run_cli, tmp_path, cover):
    import av
    import numpy as np
    src = tmp_path / ("song.mp4" if cover else "audio.m4a")  # (.m4a takes no artwork)
    with av.open(str(src), "w") as oc:
        a = oc.add_stream("aac", rate=48000, layout="mono")
        if cover:  # artwork: FFmpeg lists it as a video stream of one frame, but it is not the input's picture
            pic = oc.add_stream("mjpeg", rate=1)
            pic.width, pic.height, pic.pix_fmt = 64, 48, "yuvj420p"
            pic.disposition = av.stream.Disposition.attached_pic
            art = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 200, np.uint8), format="rgb24")
            art = art.reformat(format="yuvj420p")
            art.pts = 0
            oc.mux(pic.encode(art) + pic.encode(None))
        for i in range(20):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 48000, i * 1024
            for p in a.encode(f):
                oc.mux(p)
        for p in a.encode(None):
            oc.mux(p)
    code, err = run_cli(src, tmp_path / "o.mp4")
    assert code == 2 and "no video stream" in _one_line(err)


@pytest.mark.parametrize("target", ["missing_dir/o.mp4", "/proc/streamdehaze_o.mp4", "."])
def test_unwritable_output(make_video, run_cli, tmp_path, target):
    src = make_video(frames=3)
    out = target if target.startswith("/") else tmp_path / target
    code, err = run_cli(src, out)
    assert code == 2
    _one_line(err)
    _no_output_files(tmp_path, ["in.mp4"])


def test_output_is_input(make_video, run_cli, tmp_path):
    src = make_video(frames=3)
    before = src.read_bytes()
    code, err = run_cli(src, tmp_path / "." / "in.mp4")
    assert code == 2 and "is the input" in _one_line(err)
    assert src.read_bytes() == before


@pytest.mark.parametrize("spelling", ["file://{src}", "file:/{src}", "cache:file://{src}"])
def test_an_input_given_as_a_file_url_is_the_input_too(make_video, run_cli, tmp_path, spelling):
    """FFmpeg reads file:///PATH (and file://PATH, through its cache protocol too) as PATH: it was taken for a URL,
    and the run wrote over the file it was reading, in a file run as in serve."""
    src, other = make_video(frames=3), make_video("other.mp4", frames=3)
    before, url = src.read_bytes(), spelling.format(src=src)
    code, err = run_cli(url, src, "--model", "dcp")
    assert code == 2 and _one_line(err) == f"streamdehaze: error: output {src} is the input: refusing to overwrite it"
    config = tmp_path / "cams.toml"
    config.write_text(f'model = "dcp"\n[[stream]]\nname = "a"\ninput = "{url}"\noutput = "{tmp_path}/a.mp4"\n'
                      f'[[stream]]\nname = "b"\ninput = "{other}"\noutput = "{src}"\n')
    code, err = run_cli("serve", config)
    assert code == 2 and _one_line(err) == f"streamdehaze: error: {config}: stream 'b': output: {src} is the input " \
                                           "of stream 'a' too"
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cams.toml", "in.mp4", "other.mp4"]


def test_every_spelling_of_a_file_url_is_read(make_video, run_cli, tmp_path, monkeypatch):
    """``file:PATH`` with one slash, or a relative path, was taken for a file named so ("input not found"); a
    missing one is "not found" in each spelling."""
    src = make_video(frames=3)
    monkeypatch.chdir(tmp_path)
    for n, url in enumerate([f"file:{src}", "file:in.mp4", "file:./in.mp4", f"file://{src}"]):
        code, err = run_cli(url, tmp_path / f"out{n}.mp4", "--model", "dcp")
        assert code == 0, (url, err)
    for url in [f"file:{tmp_path}/gone.mp4", "file:gone.mp4", f"file://{tmp_path}/gone.mp4"]:
        code, err = run_cli(url, tmp_path / "out.mp4", "--model", "dcp")
        assert (code, _one_line(err)) == (2, f"streamdehaze: error: input not found: {url}")


@pytest.mark.parametrize("name", ["clip.partial.mp4", "clip.partial.2.mp4", "photo.partial.png"])
def test_an_input_named_as_an_outputs_partial_is_never_touched(make_video, hazy_image, run_cli, tmp_path, name):
    """``clip.partial.mp4`` -> ``clip.mp4``: a complete run removes ``clip.partial.mp4`` and ``clip.partial.N.mp4``
    (interrupted runs' frames), an interrupted one writes the first, moving it aside. Here it is the input."""
    src = tmp_path / name
    if name.endswith(".mp4"):
        make_video(name, frames=3)
    else:
        import cv2
        assert cv2.imwrite(str(src), hazy_image(0, 32, 24))
    before = src.read_bytes()
    code, err = run_cli(src, tmp_path / name.replace(".partial", "").replace(".2", ""), "--model", "dcp")
    assert code == 2 and "would keep its frames if interrupted" in _one_line(err)
    assert src.read_bytes() == before


def test_unknown_model(make_video, run_cli, tmp_path):
    code, err = run_cli(make_video(frames=3), tmp_path / "o.mp4", "--model", "magic")
    assert code == 2 and "unknown model 'magic'" in _one_line(err)
    _no_output_files(tmp_path, ["in.mp4"])


@pytest.mark.parametrize("args, words", [
    (["--codec", "nonsense264"], "unknown video encoder"),
    (["--max-frames", "0"], "--max-frames: must be at least 1: 0"),
    (["--device", "tpu"], "unknown device"),
    (["--crf", "1000000000000"], "--crf 1000000000000 is out of range for libx264: 0 (best) to 51 (smallest)"),
    (["--crf", "-1"], "--crf -1 is out of range for libx264"),
    (["--crf", "60", "--codec", "libx265"], "--crf 60 is out of range for libx265: 0 (best) to 51"),
    (["--crf", "64", "--codec", "libvpx-vp9"], "--crf 64 is out of range for libvpx-vp9: 0 (best) to 63"),
    (["--crf", "18.5"], "--crf: not a whole number: '18.5'"),
    (["--crf", "20", "--codec", "mpeg4"], "--crf does not apply to mpeg4"),
    (["--preset", "fastest"], "unknown --preset 'fastest' for libx264; choose one of ultrafast, superfast, veryfast"),
    (["--preset", "slow", "--codec", "libvpx-vp9"], "unknown --preset 'slow' for libvpx-vp9; choose one of 0, 1,"),
    (["--preset", "4", "--codec", "mpeg4"], "--preset does not apply to mpeg4"),
    (["--codec", "prores_ks"], "o.mp4 (mp4) cannot hold prores_ks video; encoders it takes: libx264, libx265,"),
    (["--preset", "14", "--codec", "libsvtav1"], "unknown --preset '14' for libsvtav1; choose one of 0, 1,"),
    # (SVT-AV1 reads crf 0 as "not set", and would encode at its default, 35)
    (["--crf", "0", "--codec", "libsvtav1"], "--crf 0 is out of range for libsvtav1: 1 (best) to 63 (smallest)"),
    (["--duration", "nan"], "--duration: not a finite number: nan"),
    (["--duration", "inf"], "--duration: not a finite number: inf"),
    (["--duration", "0"], "--duration: must be more than 0: 0"),
    (["--timeout", "1e9"], "--timeout: must be at most 2147: 1e9"),
    (["--timeout", "2148"], "--timeout: must be at most 2147: 2148"),
    (["--max-latency", "-1"], "--max-latency: must be more than 0: -1"),
    (["--segment-time", "nan"], "--segment-time: not a finite number: nan"),
    # (a tiny length made the segment cutting spin, deaf to SIGTERM)
    (["--segment-time", "1e-9"], "--segment-time: must be at least 0.1: 1e-9"),
    (["--segment-time", "0.05"], "--segment-time: must be at least 0.1: 0.05"),
    (["--reconnect", "-1"], "--reconnect: must be at least 0: -1"),
    (["--reconnect", "lots"], "--reconnect: not a number of attempts or 'inf': 'lots'"),
    (["--batch", "100000"], "--batch: must be at most 256: 100000"),
    (["--infer-size", "8"], "--infer-size: must be at least 16: 8"),
    (["--infer-size", "1e5"], "--infer-size: not a size in pixels, 'full' or 'auto': '1e5'"),
    (["--temporal-strength", "1"], "--temporal-strength: must be less than 1: 1"),
    (["--temporal-strength", "nan"], "--temporal-strength: not a finite number: nan"),
    (["--strength", "1.5"], "--strength: must be at most 1: 1.5"),
    (["--strength", "-0.1"], "--strength: must be at least 0: -0.1"),
    (["--noise-floor", "300"], "--noise-floor: must be at most 255: 300"),
    (["--noise-floor", "lots"], "--noise-floor: not a number of levels or 'auto': 'lots'"),
    (["--metrics-port", "70000"], "--metrics-port: must be at most 65535: 70000"),
    (["--metrics-port", "0.0.0.0:x"], "--metrics-port: not a port number: 'x'"),
    (["--metrics-port", "::1:9108"], "--metrics-port: not PORT or HOST:PORT (an IPv6 address in brackets: "
                                     "[::1]:9108): '::1:9108'"),
])
def test_bad_options(make_video, run_cli, tmp_path, args, words):
    code, err = run_cli(make_video(frames=3), tmp_path / "o.mp4", *args)
    assert code == 2 and words in _one_line(err)
    _no_output_files(tmp_path, ["in.mp4"])


def test_good_quality_settings_for_other_encoders(make_video, probe, run_cli, tmp_path):
    code, err = run_cli(make_video(frames=3), tmp_path / "o.mkv", "--codec", "libvpx-vp9", "--crf", "40", "--model",
                        "dcp", "--quiet")
    assert code == 0, err
    assert probe(tmp_path / "o.mkv")["count"] == 3


@pytest.mark.parametrize("codec, banner", [("libsvtav1", "Svt["), ("libx265", "x265 [")])
def test_an_encoder_says_nothing_of_its_own(make_video, tmp_path, codec, banner):
    # SVT-AV1 and x265 print a 20-line banner to the process's stderr unless told otherwise (SVT_LOG, log-level).
    env = {k: v for k, v in os.environ.items() if k != "SVT_LOG"}
    run = subprocess.run([sys.executable, "-m", "streamdehaze", make_video(frames=3), tmp_path / "o.mkv", "--codec",
                          codec, "--model", "dcp"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and run.stderr.splitlines()[-1].startswith("streamdehaze: 3 frames"), run.stderr
    assert banner not in run.stderr


def test_a_format_without_h264_gets_an_encoder_it_holds(make_video, probe, run_cli, tmp_path):
    src = make_video(frames=5)
    code, err = run_cli(src, tmp_path / "o.webm", "--model", "dcp")
    assert code == 0, err
    assert probe(tmp_path / "o.webm")["times"] == probe(src)["times"]  # every frame, at its time
    with av.open(str(tmp_path / "o.webm")) as written:
        assert written.streams.video[0].codec_context.name == "vp9"
    code, err = run_cli(src, tmp_path / "x.webm", "--model", "dcp", "--codec", "libx264")
    assert code == 2 and _one_line(err) == "streamdehaze: error: " \
        f"{tmp_path / 'x.webm'} (webm) cannot hold libx264 video; encoders it takes: libvpx-vp9, libsvtav1, libvpx"
    code, err = run_cli(src, tmp_path / "o.gif", "--model", "dcp")
    assert code == 2 and _one_line(err) == f"streamdehaze: error: {tmp_path / 'o.gif'} (gif) cannot hold libx264 " \
        "video, nor any other this writes: name a .mp4, .mkv, .mov, .webm or .ts output"


def test_live_recording_needs_a_format_written_as_it_goes(run_cli, tmp_path):
    code, err = run_cli("rtsp://127.0.0.1:9/cam", tmp_path / "cam.avi")
    assert code == 2
    assert _one_line(err) == "streamdehaze: error: a live recording is written as it goes, so it needs a file " \
                             "ending in .mp4, .mov, .mkv, .ts (or .m3u8, HLS), not cam.avi"


def test_the_statistics_file_is_never_the_input_or_the_output(make_video, run_cli, tmp_path):
    src = make_video(frames=3)
    data = src.read_bytes()
    for stats, what in ((src, "input"), (tmp_path / "out.mp4", "output")):
        code, err = run_cli(src, tmp_path / "out.mp4", "--model", "dcp", "--stats-json", stats)
        assert code == 2
        assert _one_line(err) == f"streamdehaze: error: --stats-json {stats} is the {what}: name the statistics " \
                                 "file otherwise"
    assert src.read_bytes() == data and not (tmp_path / "out.mp4").exists()


def test_a_malformed_camera_url_is_one_line(run_cli, tmp_path):
    code, err = run_cli("rtsp://admin:secret@[::1/live", tmp_path / "cam.mp4")
    assert code == 2
    assert _one_line(err) == "streamdehaze: error: rtsp://***@[::1/live is not a valid URL: Invalid IPv6 URL"


def test_a_protocol_this_ffmpeg_lacks_ends_the_run_at_once(run_cli, tmp_path, monkeypatch):
    # srt:// (a camera's protocol, which PyAV's FFmpeg is built without) was dialled again for ever, "Protocol not
    # found; retrying"; a scheme no protocol takes was "corrupt or truncated", exit 1
    from streamdehaze import live

    monkeypatch.setattr(live, "LIVE_SCHEMES", live.LIVE_SCHEMES | {"nosuchproto"})  # (a camera's, as srt is)
    code, err = run_cli("nosuchproto://127.0.0.1:9000", tmp_path / "cam.mp4", "--model", "dcp")
    assert code == 2 and _one_line(err) == ("streamdehaze: error: nosuchproto://127.0.0.1:9000: this FFmpeg cannot "
                                            "read nosuchproto:// (it was built without the nosuchproto protocol)")
    code, err = run_cli("foo://127.0.0.1/x", tmp_path / "x.mp4", "--model", "dcp")
    assert code == 2 and _one_line(err) == "streamdehaze: error: cannot read foo://127.0.0.1/x: this FFmpeg has no " \
                                           "foo:// protocol"
    assert not list(tmp_path.iterdir())


def _reads_dash() -> bool:
    try:
        av.format.ContainerFormat("dash", "r")
    except ValueError:
        return False
    return True


@pytest.mark.skipif(_reads_dash(), reason="this FFmpeg reads DASH")
@pytest.mark.parametrize("where", ["file", "url"])
def test_a_dash_manifest_is_refused_in_one_line_where_ffmpeg_cannot_read_it(run_cli, tmp_path, where):
    """(A live URL was dialled for ever: "Invalid data found when processing input; retrying in 10.0 s".)"""
    manifest = tmp_path / "clip.mpd"
    manifest.write_text('<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"/>\n')
    given = manifest if where == "file" else "http://user:secret@127.0.0.1:9/live/clip.mpd"
    code, err = run_cli(given, tmp_path / "o.mp4", "--model", "dcp")
    line = _one_line(err)
    assert code == 2 and "is a DASH manifest" in line and ".m3u8" in line and "secret" not in line, line
    _no_output_files(tmp_path, ["clip.mpd"])


def test_a_dash_output_is_refused_and_nothing_is_written(make_video, run_cli, tmp_path, monkeypatch):
    """(The trial of the output, meant to be in memory, wrote FFmpeg's segments into the working folder, and the
    refusal named the encoder it refused as the one to take.)"""
    src = make_video(frames=5)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, err = run_cli(src, tmp_path / "out.mpd", "--model", "dcp")
    assert code == 2 and "out.mpd would be a DASH manifest, many files" in _one_line(err), err
    assert "write HLS (.m3u8)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, "work"]) and not any(work.iterdir())


def test_a_raw_slash_in_a_password_is_refused_up_front(make_video, run_cli, tmp_path):
    """It ends the host early: FFmpeg would fail on the rest as a port at every attempt, for ever. The message
    shows no part of the password."""
    hint = "its port is not a number (a password holding '/', '?' or '#' must be percent-encoded: %2F, %3F, %23)"
    cases = ((("rtsp://admin:se/cret@127.0.0.1/live", tmp_path / "cam.mp4"), "rtsp://***@127.0.0.1/live"),
             ((make_video(frames=3), "rtmp://pub:se?cret@127.0.0.1/app/key"), "rtmp://***@127.0.0.1/app/***"))
    for args, shown in cases:
        code, err = run_cli(*args, "--model", "dcp")
        assert code == 2
        assert _one_line(err) == f"streamdehaze: error: {shown} is not a valid URL: {hint}"
        assert "se/" not in err and "se?" not in err and "cret" not in err
    assert not (tmp_path / "cam.mp4").exists()


def test_a_file_published_to_a_server_that_is_down_fails(make_video, run_cli):
    """A file has no camera to keep up with: its frames are not dropped while a server is redialled."""
    port = free_port()  # (nothing listens on it)
    code, err = run_cli(make_video(frames=3), f"tcp://127.0.0.1:{port}", "--model", "dcp")
    assert code == 1
    assert _one_line(err) == f"streamdehaze: error: cannot write tcp://127.0.0.1:{port}: Connection refused"


def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "streamdehaze", str(tmp_path / "x.mp4"), str(tmp_path / "y.mp4")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"streamdehaze: error: input not found: {tmp_path / 'x.mp4'}"


def test_serve_workers_without_ray_is_a_usage_error(run_cli, tmp_path):
    code, err = run_cli("serve", tmp_path / "cams.toml", "--workers", 2)
    assert code == 2
    assert _one_line(err) == "streamdehaze: error: --workers needs --ray (one process runs every stream)"


def test_a_file_published_to_a_server_that_hangs_fails_in_10_s(_long_video, run_cli):
    """A server that takes no more data (its buffers full): FFmpeg would wait for it for ever."""
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()  # and never reads
    try:
        code, err = run_cli(_long_video, f"tcp://127.0.0.1:{port}", "--model", "dcp", "--crf", 0)
    finally:
        for conn, _ in accepted:
            conn.close()
        server.close()
    assert code == 1
    assert _one_line(err) == f"streamdehaze: error: tcp://127.0.0.1:{port} has taken no data for 10 s: gave up on it"


def test_serve_on_ray_checks_the_weights_before_any_worker(make_video, run_cli, tmp_path):
    """Loaded on the head first: weights that do not load are one line, not an error inside a Ray worker."""
    (tmp_path / "junk.safetensors").write_bytes(b"not weights")
    (tmp_path / "cams.toml").write_text(f'model = "kanet-t"\nweights = "{tmp_path / "junk.safetensors"}"\n'
                                        f'[[stream]]\nname = "a"\ninput = "{make_video(frames=3)}"\n'
                                        f'output = "{tmp_path / "a.mkv"}"\n')
    code, err = run_cli("serve", tmp_path / "cams.toml", "--ray", "127.0.0.1:1")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot load" in err, err


def test_what_a_run_would_write_wrongly_is_refused_before_it_starts(make_video, run_cli, tmp_path):
    """MPEG-TS stores VP9 or FFV1 as data that no player shows; a named pipe would be replaced by a file; statistics
    cannot be written to a folder. Each is one line and exit 2, before any frame is dehazed."""
    src = make_video(frames=3)
    for output in (tmp_path / "o.ts", "-"):
        code, err = run_cli(src, output, "--model", "dcp", "--codec", "libvpx-vp9")
        assert code == 2 and _one_line(err) == f"streamdehaze: error: {output} (mpegts) cannot hold libvpx-vp9 " \
            "video; encoders it takes: libx264, libx265, mpeg2video, mpeg1video, mpeg4", err
    os.mkfifo(tmp_path / "pipe.ts")
    code, err = run_cli(src, tmp_path / "pipe.ts", "--model", "dcp")
    assert code == 2 and "is a named pipe or a device, not a file" in _one_line(err)
    assert not (tmp_path / "pipe.ts").is_file()
    code, err = run_cli(src, tmp_path / "o.mp4", "--model", "dcp", "--stats-json", tmp_path)
    assert code == 2 and _one_line(err) == f"streamdehaze: error: --stats-json {tmp_path} is a folder; give a file name"
    _no_output_files(tmp_path, ["in.mp4", "pipe.ts"])


def test_a_codec_named_as_ffmpeg_names_it_takes_its_encoders_settings(make_video, probe, run_cli, tmp_path):
    # (-c:v h264 in FFmpeg: libx264, with --crf and --preset as for libx264, not refused nor left at x264's own)
    code, err = run_cli(make_video(frames=3), tmp_path / "o.mp4", "--model", "dcp", "--codec", "h264", "--crf", 20)
    assert code == 0, err
    with av.open(str(tmp_path / "o.mp4")) as written:
        assert written.streams.video[0].codec_context.name == "h264"


def test_an_output_name_too_long_for_the_names_a_run_writes_is_refused_up_front(make_video, run_cli, tmp_path):
    # (244 bytes: the whole video was dehazed, then naming the finished file failed; 250: an internal error)
    for length in (244, 250):
        out = tmp_path / ("y" * (length - 4) + ".mp4")
        code, err = run_cli(make_video(frames=2), out, "--model", "dcp")
        assert code == 2 and _one_line(err).startswith("streamdehaze: error: output name too long: a run writes "), err
        assert f"{out.name} as .NAME.partial-PID.EXT until it is complete" in err  # (as outputs.py names it)
    _no_output_files(tmp_path, ["in.mp4"])


@pytest.mark.parametrize("name, codec, rate, words", [
    # formats that take a stream of any codec and fail it at the header (or write what no player reads: .mpg)
    ("o.mov", "libvpx-vp9", 25, "(mov) cannot hold libvpx-vp9 video; encoders it takes: libx264, libx265,"),
    ("o.ogv", "libx264", 25, "(ogv) cannot hold libx264 video; encoders it takes: libvpx"),
    ("o.y4m", "libx264", 25, "(yuv4mpegpipe) cannot hold libx264 video, nor any other this writes"),
    ("o.mxf", "libx265", 25, "(mxf) cannot hold libx265 video; encoders it takes: libx264, ffv1, prores_ks"),
    ("o.flv", "mpeg4", 25, "(flv) cannot hold mpeg4 video; encoders it takes: libx264"),
    ("o.mpg", "libvpx-vp9", 25, "(mpeg) cannot hold libvpx-vp9 video; encoders it takes: libx264, libx265, "
                                "mpeg2video, mpeg1video, mpeg4"),
    # a pair that plays, at a rate FFmpeg has no code for (MPEG-1/2, MXF): found by the trial write
    ("o.mp4", "mpeg1video", 12, "(mp4) cannot be written with mpeg1video: Invalid argument; encoders it takes: "
                                "libx264"),
    ("o.mxf", "libx264", 12, "(mxf) cannot be written with libx264: Invalid argument"),
])
def test_a_format_and_encoder_ffmpeg_would_fail_are_refused_before_the_model_loads(make_video, run_cli, tmp_path,
                                                                                     monkeypatch, name, codec,
                                                                                     rate, words):
    # (each failed with "Invalid argument", exit 1, after the model had loaded; .mpg with VP9 ended with exit 0)
    monkeypatch.setattr("streamdehaze.api.create_model", lambda *args: pytest.fail("the model was loaded"))
    src = make_video(frames=3, rate=rate, time_base=Fraction(1, 100 * rate))
    code, err = run_cli(src, tmp_path / name, "--model", "dcp", "--codec", codec)
    assert code == 2 and words in _one_line(err), err
    _no_output_files(tmp_path, ["in.mp4"])


def test_a_closed_standard_input_is_one_line(tmp_path):
    # (its relay's pipe took file descriptor 0, the relay read its own output, and the run waited for ever)
    run = subprocess.run([sys.executable, "-m", "streamdehaze", "-", str(tmp_path / "out.mp4"), "--model", "dcp"],
                         preexec_fn=lambda: os.close(0), capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 1 and _one_line(run.stderr).startswith("streamdehaze: error: cannot read standard input")
    assert list(tmp_path.iterdir()) == []


def test_a_server_published_to_with_an_encoder_that_refuses_is_a_usage_error(make_video, run_cli):
    # (a server's output has no trial write; its encoder refusing is no outage a retry mends)
    src = make_video(frames=3, rate=7, time_base=Fraction(1, 700))  # (MPEG-2 has no code for 7 fps)
    code, err = run_cli(src, "rtsp://127.0.0.1:9/cam", "--model", "dcp", "--codec", "mpeg2video")
    assert (code, _one_line(err)) == (2, "streamdehaze: error: cannot write rtsp://127.0.0.1:9/cam: Invalid argument")


def test_a_recording_whose_encoder_refuses_leaves_no_empty_file(make_video, tmp_path):
    from streamdehaze.encoders import choose_encoding
    from streamdehaze.errors import MediaError
    from streamdehaze.sinks import VideoSink
    from streamdehaze.sources import VideoFileSource

    with VideoFileSource(make_video(frames=3, rate=7, time_base=Fraction(1, 700))) as source:
        frame = next(item for item in source if isinstance(item, av.VideoFrame))
        sink = VideoSink(tmp_path / "cam_00003.ts", source.info, choose_encoding(source.info, "mpeg2video"),
                         exclusive=True, as_it_goes=True)
        with pytest.raises(MediaError, match="writing .*cam_00003.ts failed: Invalid argument"):
            sink.write(frame)
        sink.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize("stderr", ["closed", "reader gone"])
def test_a_run_without_standard_error(make_video, probe, tmp_path, stderr):
    """Started with standard error closed (2>&-, as some service managers do), or with a pipe whose reader has gone
    (2>&1 | head -1), a run still writes its output and ends with its exit code, and a bad input still fails with
    its own and nothing on standard output. The first failed with 'internal error: AttributeError' (printed to
    standard output), the second ended a whole run with exit 1."""
    src = make_video(frames=4)

    def run(*args: object) -> subprocess.CompletedProcess:
        read, write = os.pipe()
        os.close(read)
        try:
            return subprocess.run([sys.executable, "-m", "streamdehaze", *map(str, args), "--model", "dcp"],
                                  stdout=subprocess.PIPE, stderr=write, timeout=300,
                                  preexec_fn=(lambda: os.close(2)) if stderr == "closed" else None)
        finally:
            os.close(write)
    done = run(src, tmp_path / "o.mp4")
    assert done.returncode == 0 and done.stdout == b""
    assert probe(tmp_path / "o.mp4")["times"] == probe(src)["times"]
    failed = run(tmp_path / "nope.mp4", tmp_path / "p.mp4")
    assert failed.returncode == 2 and failed.stdout == b""


def test_a_training_run_or_state_given_as_weights_says_what_to_give(make_video, run_cli, tmp_path):
    # (they said "weights file not found: run" of a folder that is there, and "entry 'optimizer' is not a tensor")
    src, run = make_video(frames=3), tmp_path / "run"
    run.mkdir()
    (run / "last.json").write_text('{"step": 6}')
    (run / "step-0000006.state.pt").write_bytes(b"state")
    code, err = run_cli(src, tmp_path / "o.mp4", "--weights", run)
    assert (code, err) == (2, f"streamdehaze: error: {run} is a training run, not a weights file: give one of its "
                              "step-N.safetensors\n")
    code, err = run_cli(src, tmp_path / "o.mp4", "--weights", run / "step-0000006.state.pt")
    assert (code, err) == (2, f"streamdehaze: error: {run / 'step-0000006.state.pt'} is a training state, not "
                              "weights: they are in step-0000006.safetensors beside it\n")
    assert not (tmp_path / "o.mp4").exists()


def test_the_help_names_the_other_commands():
    # batch and serve are commands of their own: without a word in --help, only the README told of them
    done = subprocess.run([sys.executable, "-m", "streamdehaze", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("batch IN_DIR OUT_DIR", "serve CONFIG"):
        assert done.stdout.count(command) == 2  # (usage, and the list of commands)
    assert "streamdehaze batch --help" in done.stdout and "streamdehaze serve --help" in done.stdout


def test_a_signal_while_the_interpreter_ends_leaves_the_runs_status():
    # Ctrl-C pressed twice, or a reload during a stop: the second signal came while the interpreter shut down (most
    # of a second after a run), after it had put the default handlers back, and the process died with 129 or 143
    code = ("import os, signal, sys, time\n"
            "from streamdehaze import cli\n"
            "class Late:  # (torn down with the script's globals, late in the interpreter's end)\n"
            "    def __del__(self):\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        time.sleep(0.2)\n"
            "late = Late()\n"
            "sys.argv = ['streamdehaze', '--version']  # (a run that ends at once, through main())\n"
            "cli.entry()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_torch_s_compiler_warning_is_not_shown_to_the_command_line_s_user(make_video, tmp_path):
    """``--compile`` on a CPU loads torch's C++ extension tools, which warn "No CUDA runtime is found, using
    CUDA_HOME=..." in their own format among the run's lines (on a machine with a CUDA_HOME and no GPU)."""
    plain = subprocess.run([sys.executable, "-c", "import torch.utils.cpp_extension"], capture_output=True, text=True,
                           timeout=120)
    if "No CUDA runtime" not in plain.stderr:
        pytest.skip("torch does not warn on this machine")
    src = make_video(frames=2)
    code = (f"from streamdehaze.cli import main\nmain([{str(src)!r}, {str(tmp_path / 'o.mp4')!r}, '--model', 'dcp'])\n"
            "import torch.utils.cpp_extension\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "No CUDA runtime" not in done.stderr, done.stderr


@pytest.mark.parametrize("args, code, words", [
    (["--help"], 0, "Dehaze a video"),
    (["--version"], 0, "streamdehaze 0.1.0"),
    (["in.mp4", "out.mp4", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["in.mp4", "out.mp4", "--temporal", "nope"], 2, "invalid choice: 'nope'"),
    (["serve", "--help"], 0, "Dehaze many streams"),
    (["batch", "in"], 2, "required: OUT_DIR"),
])
def test_help_and_usage_errors_answer_before_torch_loads(args, code, words):
    # A typo got its answer after the seconds torch, PyAV and OpenCV take to load (3 s here, more on a busy host)
    script = ("import sys\nfrom streamdehaze.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
              "except SystemExit as exc:\n    code = exc.code\n"
              "print('loaded:', sorted(m for m in ('torch', 'av', 'cv2') if m in sys.modules), file=sys.stderr)\n"
              "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert words in proc.stdout + proc.stderr
    assert "loaded: []" in proc.stderr

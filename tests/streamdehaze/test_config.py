"""A serve configuration's mistakes: one line naming the stream and the key, exit 2, and nothing starts."""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from streamdehaze.config import load_config
from streamdehaze.errors import UsageError

GOOD = '[[stream]]\nname = "first"\ninput = "{src}"\noutput = "{out}/first.mp4"\n'


def _serve(run_cli, tmp_path: Path, text: str) -> tuple[int, str]:
    config = tmp_path / "cams.toml"
    config.write_text(text)
    return run_cli("serve", config, "--duration", 5)


@pytest.mark.parametrize("stream, message", [
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\ncrff = 20',
     "stream 'gate': unknown key 'crff' (did you mean 'crf'?)"),
    ('name = "gate"\ninput = "{src}"', "stream 'gate': missing key 'output'"),
    ('input = "{src}"\noutput = "{out}/x.mp4"', "stream 2: missing key 'name'"),
    # (a misspelt key, not the one it stands for, is the mistake: these said "missing key 'output'", "'name'")
    ('name = "gate"\ninput = "{src}"\nouput = "{out}/gate.mp4"', "stream 'gate': unknown key 'ouput' (did you mean "
     "'output'?)"),
    ('nmae = "gate"\ninput = "{src}"\noutput = "{out}/x.mp4"', "stream 2: unknown key 'nmae' (did you mean 'name'?)"),
    ('name = "first"\ninput = "{src}"\noutput = "{out}/other.mp4"',
     "stream 'first': name: stream 1 has this name too (names must be unique)"),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\ncrf = 60',
     "stream 'gate': crf: --crf 60 is out of range for libx264: 0 (best) to 51 (smallest)"),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\ntimeout = -1',
     "stream 'gate': timeout: must be more than 0: -1"),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\nsegment_time = 1e-300',
     "stream 'gate': segment_time: must be at least 0.1: 1e-300"),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\ntemporal = "strong"',
     "stream 'gate': temporal: must be one of off, ema, static, not 'strong'"),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\nstrength = 2',
     "stream 'gate': strength: must be at most 1: 2"),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\nnoise_floor = 300',
     "stream 'gate': noise_floor: must be at most 255: 300"),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\ncompile = "yes"',
     "stream 'gate': compile: must be true or false, not 'yes'"),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\nmodel = "fog9000"',
     "stream 'gate': model: unknown model 'fog9000'; choose one of: "),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\nmetrics_port = 9108',
     "stream 'gate': metrics_port: set it at the top of the configuration (one for the whole fleet)"),
    ('name = "gate"\ninput = "{out}/nothing.mp4"\noutput = "{out}/gate.mp4"',
     "stream 'gate': input: input not found: {out}/nothing.mp4"),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/no/gate.mp4"',
     "stream 'gate': output: output folder does not exist: {out}/no"),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/first.mp4"',
     "stream 'gate': output: {out}/first.mp4 is the output of stream 'first' too"),
    ('name = "gate"\ninput = "rtsp://cam/x"\noutput = "{out}/gate.avi"',
     "stream 'gate': output: a live recording is written as it goes, so it needs a file ending in "),
    ('name = "a b"\ninput = "{src}"\noutput = "{out}/gate.mp4"', "stream 'a b': name: letters, digits"),
    # No stream writes over a file another reads or writes: inputs are never overwritten, nothing is lost.
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\nstats_json = "{out}/first.mp4"',
     "stream 'gate': stats_json: {out}/first.mp4 is the output of stream 'first' too"),
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\nstats_json = "{src}"',
     "stream 'gate': stats_json: {src} is the input: name the statistics file otherwise"),
    # (statistics appended to the configuration would spoil it for the next start or reload)
    ('name = "gate"\ninput = "{src}"\noutput = "{out}/gate.mp4"\nstats_json = "{out}/cams.toml"',
     "stream 'gate': stats_json: {out}/cams.toml is the configuration file"),
])
def test_a_mistake_in_a_stream_names_it_and_its_key(make_video, run_cli, tmp_path, stream, message):
    src = make_video(frames=3)
    text = GOOD + "[[stream]]\n" + stream + "\n"
    code, err = _serve(run_cli, tmp_path, text.format(src=src, out=tmp_path))
    assert code == 2
    expected = message.format(out=tmp_path, src=src)
    assert err.startswith(f"streamdehaze: error: {tmp_path / 'cams.toml'}: {expected}"), err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cams.toml", "in.mp4"]  # nothing started


@pytest.mark.parametrize("where, message", [
    ("{other}", "stats_json: {other} holds something other than statistics: name the statistics file otherwise"),
    ("{out}/nowhere/fleet.jsonl", "stats_json: folder does not exist: {out}/nowhere"),
])
def test_the_fleet_s_statistics_file_is_checked_before_anything_starts(make_video, run_cli, tmp_path, where,
                                                                      message):
    """A fleet's statistics file over a video no stream reads (statistics were appended to it), or in a folder that
    is not there (found once the model had loaded): one line, exit 2, nothing started or written."""
    src, other = make_video(frames=3), make_video("other.mp4", frames=3)
    before = other.read_bytes()
    stats = where.format(other=other, out=tmp_path)
    code, err = _serve(run_cli, tmp_path, f'stats_json = "{stats}"\n' + GOOD.format(src=src, out=tmp_path))
    assert code == 2 and err == (f"streamdehaze: error: {tmp_path / 'cams.toml'}: "
                                 f"{message.format(other=other, out=tmp_path)}\n"), err
    assert other.read_bytes() == before and not (tmp_path / "first.mp4").exists()


def test_streams_that_would_write_over_each_others_inputs(make_video, run_cli, tmp_path):
    a, b = make_video("a.mp4", frames=3), make_video("b.mp4", frames=4)
    before = a.read_bytes(), b.read_bytes()
    text = (f'[[stream]]\nname = "one"\ninput = "{a}"\noutput = "{b}"\n'
            f'[[stream]]\nname = "two"\ninput = "{b}"\noutput = "{a}"\n')
    code, err = _serve(run_cli, tmp_path, text)
    assert code == 2 and err == (f"streamdehaze: error: {tmp_path / 'cams.toml'}: stream 'two': input: {b} is the "
                                 f"output of stream 'one' too\n")
    assert (a.read_bytes(), b.read_bytes()) == before


@pytest.mark.parametrize("password", ["Pub Secret", "ApiS3cret"])
def test_two_streams_publishing_to_one_url_are_refused_with_its_password_masked(make_video, run_cli, tmp_path,
                                                                                password):
    """The file's message (the command line masks what it was given: the file's name, not the URLs in it) and the
    Python API's exception (which nothing masks after it) alike."""
    from streamdehaze import serve
    src, url = make_video(frames=3), f"rtsp://pub:{password}@127.0.0.1:1/a"
    streams = [{"name": name, "input": str(src), "output": url} for name in ("a", "b")]
    text = "".join(f'[[stream]]\nname = "{s["name"]}"\ninput = "{s["input"]}"\noutput = "{url}"\n' for s in streams)
    code, err = _serve(run_cli, tmp_path, text)
    with pytest.raises(UsageError) as refused:
        serve(streams)
    expected = "stream 'b': output: rtsp://***@127.0.0.1:1/a is the output of stream 'a' too"
    assert code == 2 and err == f"streamdehaze: error: {tmp_path / 'cams.toml'}: {expected}\n", err
    assert str(refused.value) == expected


def test_a_file_a_segmented_stream_will_write_is_taken(make_video, run_cli, tmp_path):
    src = make_video(frames=3)
    text = GOOD + 'segment_time = 1\n[[stream]]\nname = "gate"\ninput = "{src}"\noutput = "{out}/first_00000.mp4"\n'
    code, err = _serve(run_cli, tmp_path, text.format(src=src, out=tmp_path))
    assert code == 2 and err == (f"streamdehaze: error: {tmp_path / 'cams.toml'}: stream 'gate': output: "
                                 f"{tmp_path}/first_00000.mp4 is the output of stream 'first' too\n")


def test_a_configuration_that_is_not_utf8_text_is_one_line(make_video, run_cli, tmp_path):
    config = tmp_path / "cams.toml"
    config.write_bytes(GOOD.format(src=make_video(frames=3), out=tmp_path).replace("first.mp4", "caf\u00e9.mp4")
                       .encode("latin-1"))
    code, err = run_cli("serve", config)
    assert code == 2 and err.startswith(f"streamdehaze: error: {config}: not UTF-8 text (byte ") and \
        err.count("\n") == 1, err
    config.write_text(GOOD.format(src=make_video(frames=3), out=tmp_path).replace("first.mp4", "f\\u0000.mp4"))
    code, err = run_cli("serve", config)
    assert code == 2 and err == f"streamdehaze: error: {config}: a setting holds a NUL character\n", err


@pytest.mark.parametrize("text, message", [
    ('crf = "high"\n' + GOOD, "crf: not a whole number: 'high'"),
    ('fps = 25\n' + GOOD, "unknown key 'fps'"),
    (GOOD.replace("[[stream]]", "[[streams]]"), "unknown key 'streams' (did you mean 'stream'?)"),
    ('input = "x.mp4"\n' + GOOD, "input: belongs in a [[stream]] table"),
    ('model = "dcp"\n', "no streams: add a [[stream]] table with name, input and output"),
    ('model = "dcp\n' + GOOD, "not valid TOML: "),
    ('stats_json = "{out}/no/fleet.jsonl"\n' + GOOD, "stats_json: folder does not exist: {out}/no"),
    ('stats_json = "{out}/cams.toml"\n' + GOOD, "stats_json: {out}/cams.toml is the configuration file"),
])
def test_a_mistake_at_the_top_is_one_line(make_video, run_cli, tmp_path, text, message):
    src = make_video(frames=3)
    code, err = _serve(run_cli, tmp_path, text.format(src=src, out=tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"streamdehaze: error: {tmp_path / 'cams.toml'}: {message.format(out=tmp_path)}"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cams.toml", "in.mp4"]


def test_an_unwritable_output_folder(make_video, run_cli, tmp_path):
    try:  # root may write anywhere, but not on a read-only filesystem such as /sys
        with tempfile.TemporaryFile(dir="/sys"):
            pytest.skip("/sys is writable here")
    except OSError:
        pass
    code, err = _serve(run_cli, tmp_path, GOOD.format(src=make_video(frames=3), out="/sys"))
    assert code == 2 and err.strip().endswith("stream 'first': output: cannot write to /sys: Permission denied"), err


def test_the_process_exits_2_with_one_line_and_no_traceback(make_video, tmp_path):
    config = tmp_path / "cams.toml"
    config.write_text(GOOD.format(src=make_video(frames=3), out=tmp_path) + 'crf = 99\n')
    done = subprocess.run([sys.executable, "-m", "streamdehaze", "serve", str(config)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == (
        f"streamdehaze: error: {config}: stream 'first': crf: --crf 99 is out of range for libx264: 0 (best) to "
        "51 (smallest)\n")
    assert not (tmp_path / "first.mp4").exists()


def test_a_dict_and_a_list_of_streams_mean_the_same():
    table = {"name": "gate", "input": "rtsp://cam/1", "output": "gate.mp4", "segment_time": 600}
    from_dict = load_config({"model": "dcp", "stream": [dict(table, model="dcp")]})
    from_list = load_config([dict(table, model="dcp")])
    assert from_dict.streams == from_list.streams
    (gate,) = from_dict.streams
    assert gate.model.model == "dcp" and gate.encode.segment_time == 600 and gate.max_latency == 1.0


def test_the_noise_floor_is_auto_unless_set():
    table = {"name": "gate", "input": "rtsp://cam/1", "output": "gate.mp4"}
    auto, fixed = load_config([table, dict(table, name="yard", noise_floor=1.5)]).streams
    assert auto.model.noise_floor == "auto" and fixed.model.noise_floor == 1.5
    with pytest.raises(UsageError, match="stream 'gate': noise_floor: not a number of levels or 'auto': 'high'"):
        load_config([dict(table, noise_floor="high")])


@pytest.mark.parametrize("value, address", [(9108, ("127.0.0.1", 9108)), ("0.0.0.0:9108", ("0.0.0.0", 9108)),
                                            ("[::]:9108", ("::", 9108))])
def test_the_metrics_port_takes_an_address(value, address):
    table = {"name": "gate", "input": "rtsp://cam/1", "output": "gate.mp4"}
    assert load_config({"metrics_port": value, "stream": [table]}).metrics_port == address


@pytest.mark.parametrize("key, value, expected", [
    ("reconnect", 3, 3), ("reconnect", 0, 0), ("reconnect", "inf", math.inf), ("timeout", 2.5, 2.5),
    ("max_latency", 0.5, 0.5), ("batch", 2, 2), ("infer_size", "full", None), ("infer_size", 176, 176),
    ("crf", 20, 20), ("strength", 0.5, 0.5), ("temporal_strength", 0.9, 0.9), ("segment_time", 60, 60),
    # numpy's numbers, as an application computes them (np.clip gives an np.float64), and a whole float for a count
    ("strength", np.clip(0.7, 0, 1), 0.7), ("strength", np.float32(0.5), 0.5), ("infer_size", np.int64(256), 256),
    ("crf", np.int64(20), 20), ("reconnect", 3.0, 3), ("batch", np.float64(2.0), 2),
])
def test_what_the_command_line_takes_a_configuration_takes(key, value, expected):
    """Each value is checked once as the command line checks it, and again, converted, as a StreamConfig is built:
    both must take it."""
    (stream,) = load_config([{"name": "gate", "input": "rtsp://cam/1", "output": "gate.mp4", key: value}]).streams
    group = {"reconnect": stream.live, "timeout": stream.live, "batch": stream, "max_latency": stream,
             "temporal_strength": stream, "infer_size": stream.model, "strength": stream.model}.get(key, stream.encode)
    assert getattr(group, key) == expected


def test_what_names_a_segment_pattern_writes():
    # (how two streams, or a stream and its statistics file, are found to write one file)
    from streamdehaze.job import same_file
    assert same_file("/r/cam_%05d.mp4", "/r/cam_00012.mp4") and not same_file("/r/cam_%05d.mp4", "/r/cam_x.mp4")
    assert same_file("/r/cam_%Y%m%d-%H%M%S.mp4", "/r/cam_20261206-101010.mp4")
    assert same_file("/r/cam_20261206-101010.1.mp4", "/r/cam_%Y%m%d-%H%M%S.mp4")  # (a name taken: NAME.1.EXT)
    assert not same_file("/r/cam_%Y%m%d-%H%M%S.mp4", "/r/gate_20261206-101010.mp4")
    assert same_file("/r/100%.mp4", "/r/100%.mp4") and not same_file("/r/100%.mp4", "/r/100x.mp4")


def test_a_stream_s_statistics_file_over_a_video_no_stream_reads(make_video, run_cli, tmp_path):
    src, other = make_video(frames=3), make_video("other.mp4", frames=3)
    before = other.read_bytes()
    code, err = _serve(run_cli, tmp_path, GOOD.format(src=src, out=tmp_path) + f'stats_json = "{other}"\n')
    assert code == 2 and err == (f"streamdehaze: error: {tmp_path / 'cams.toml'}: stream 'first': stats_json: {other} "
                                 "holds something other than statistics: name the statistics file otherwise\n"), err
    assert other.read_bytes() == before


def test_a_metrics_port_in_use_is_said_before_the_models_load(make_video, run_cli, tmp_path):
    """A metrics port another program holds: said at once, not after every model has loaded (the weights here do
    not load, and that was the error said, the port never)."""
    import socket

    src, weights = make_video(frames=3), tmp_path / "broken.safetensors"
    weights.write_bytes(b"not weights" * 100)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        code, err = _serve(run_cli, tmp_path, f'metrics_port = {port}\n' + GOOD.format(src=src, out=tmp_path)
                           + f'weights = "{weights}"\n')
    assert code == 2 and err == (f"streamdehaze: error: {tmp_path / 'cams.toml'}: metrics_port: --metrics-port "
                                 f"127.0.0.1:{port}: Address already in use\n"), err
    assert not (tmp_path / "first.mp4").exists()

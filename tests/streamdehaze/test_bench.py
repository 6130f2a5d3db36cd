"""The benchmark script runs end to end and prints a complete table (figures themselves go to BENCHMARKS.md)."""

from __future__ import annotations

import pytest

from streamdehaze.bench import main


def test_bench_prints_fps_and_cpu_rows(capsys):
    assert main(["--sizes", "360p", "--frames", "6", "--model", "dcp", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fps = next(line for line in lines if line.split()[:2] == ["360p", "fps"]).split()[2:]
    cpu = next(line for line in lines if line.split()[:1] == ["cpu"]).split()[1:6]
    assert len(fps) == 7 and all(float(v) > 0 for v in fps)  # 5 stages, e2e/transcode, efficiency
    assert len(cpu) == 5 and all(float(v) > 0 for v in cpu)


def test_bench_runs_and_names_the_model_users_run_by_default(capsys):
    assert main(["--sizes", "360p", "--frames", "2", "--device", "cpu"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "; model kanet-t, device cpu," in header  # auto, named as what ran


def test_bench_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "``" not in said and said.count("(default: ") >= 8
    for default in ("(default: 720p 1080p)", "(default: auto)", "(default: 100)"):
        assert default in said


def test_capacity_bench_compares_one_engine_with_a_process_per_camera(capsys):
    assert main(["--streams", "2", "--seconds", "1.5", "--model", "dcp", "--device", "cpu"]) == 0
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in capsys.readouterr().out.splitlines()
            if line.split()[:1] == ["2"]}
    for mode in ("shared", "separate"):
        fps, per_camera, p95, dropped = map(float, rows[("2", mode)])
        assert 0 < fps <= 2 * 25 * 1.05 and abs(per_camera - fps / 2) < 0.1  # cameras deliver 25 fps at most
        assert p95 > 0 and 0 <= dropped < 100
    assert float(rows[("2", "ratio")][0]) > 0


def test_bench_clip_loops_the_sample_at_25_fps(tmp_path):
    """Past the sample's 132 frames the clip loops it; each frame keeps its own time at 25 fps (once, frames past
    256 all fell on the sample's time base and the muxer refused them)."""
    import av

    from streamdehaze.bench import make_clip

    make_clip(tmp_path / "clip.mp4", 64, 36, 300)
    with av.open(str(tmp_path / "clip.mp4")) as clip:
        times = [float(frame.time) for frame in clip.decode(video=0)]
    assert len(times) == 300 and times == [n / 25 for n in range(300)]


@pytest.mark.parametrize("args, said", [
    (["--model", "nosuch", "--sizes", "360p", "--frames", "2"], "streamdehaze: error: unknown model 'nosuch'"),
    (["--preset", "bogus"], "streamdehaze: error: unknown --preset 'bogus' for libx264"),
    (["--json", "/no/such/folder/x.json"], "streamdehaze: error: --json: no folder /no/such/folder"),
    (["--json", ".", "--sizes", "360p", "--frames", "2"], "streamdehaze: error: --json: . is a folder; give a file name"),
    (["--streams", "1", "--seconds", "1", "--model", "kanet-t", "--weights", "/no/such.safetensors"],
     "streamdehaze: error: weights file not found: /no/such.safetensors"),
    (["--streams", "1", "--seconds", "1", "--batch", "2", "--sizes", "360p"],
     "streamdehaze: error: --sizes, --batch: not for --streams"),
])
def test_a_mistake_is_one_line_before_any_work(capsys, args, said):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(said) and err.count("\n") == 1


@pytest.mark.parametrize("args", [["--frames", "0"], ["--batch", "0"], ["--streams", "0"],
                                  ["--streams", "1", "--seconds", "0"]])
def test_counts_and_lengths_are_checked(capsys, args):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"streamdehaze: error: argument {args[-2]}: must be") and err.count("\n") == 1



def test_capacity_bench_runs_the_weights_it_is_given(tmp_path, capsys):
    import kanet

    from streamdehaze.bench_streams import Setup

    weights = kanet.save_weights(kanet.create_model("kanet-t", seed=1), tmp_path / "t.safetensors")
    # the weights are loaded (they are not kanet-s), in this process and in a worker of the process-per-camera runs
    shared = ["--streams", "1", "--seconds", "1", "--model", "kanet-s", "--weights", str(weights), "--device", "cpu"]
    worker = ["--streams", "1", "--seconds", "1", "--worker", *Setup("kanet-s", weights, "cpu").options()]
    for args in (shared, worker):
        assert main(args) == 2
        assert "holds kanet-t weights, not kanet-s" in capsys.readouterr().err


@pytest.mark.parametrize("tool, defaults", [("bench_batch", 3), ("soak", 2), ("bench_dehazer", 5)])
def test_the_other_benchmarks_help_names_them_and_their_defaults(tool, defaults):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", f"streamdehaze.{tool}", "--help"], capture_output=True, text=True,
                          timeout=120, check=True)
    said = " ".join(done.stdout.split())
    assert said.startswith(f"usage: python -m streamdehaze.{tool} ") and "``" not in said
    assert said.count("(default: ") == defaults


def test_without_the_bundled_sample_both_benchmarks_ask_for_an_input(monkeypatch, tmp_path, capsys):
    """An installed package has no samples/ folder: one line naming --input, not a traceback."""
    from streamdehaze import bench_batch, sample

    monkeypatch.setattr(sample, "SAMPLE", tmp_path / "samples" / "hazy_bunny.mp4")
    for run in (main, bench_batch.main):
        assert run(["--model", "dcp"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("streamdehaze: error: no clip to benchmark: the bundled sample (samples/hazy_bunny.mp4) comes with "
                              "a checkout of the repository; give --input FILE") and err.count("\n") == 1


@pytest.mark.parametrize("name, said", [("missing.mp4", "input not found: "), (".", "is a folder"),
                                        ("junk.mp4", "")])
def test_an_input_that_cannot_be_benchmarked_is_one_line(tmp_path, capsys, name, said):
    from streamdehaze import bench_batch

    (tmp_path / "junk.mp4").write_bytes(b"\x00not a video" * 300)
    for run in (main, bench_batch.main):
        assert run(["--input", str(tmp_path / name), "--model", "dcp", "--sizes", "360p", "--frames", "2"]
                   if run is main else ["--input", str(tmp_path / name)]) in (1, 2)
        err = capsys.readouterr().err
        assert err.startswith("streamdehaze: error: ") and said in err and err.count("\n") == 1


def test_the_clip_is_made_from_the_input_given(tmp_path):
    import av

    from streamdehaze.bench import make_clip
    from streamdehaze.bench_batch import clip_facts

    from ..conftest import write_video

    write_video(tmp_path / "in.mkv", frames=5, width=96, height=64)
    assert clip_facts(tmp_path / "in.mkv") == (5, 96, 64)
    make_clip(tmp_path / "clip.mp4", 64, 36, 12, tmp_path / "in.mkv")  # looped past its 5 frames
    with av.open(str(tmp_path / "clip.mp4")) as clip:
        assert sum(1 for _ in clip.decode(video=0)) == 12

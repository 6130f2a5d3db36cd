"""The benchmark script runs end to end and prints a complete table (figures themselves go to BENCHMARKS.md)."""

from __future__ import annotations

from streamdehaze.bench import main


def test_bench_prints_fps_and_cpu_rows(capsys):
    assert main(["--sizes", "360p", "--frames", "6", "--model", "dcp", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fps = next(line for line in lines if line.split()[:2] == ["360p", "fps"]).split()[2:]
    cpu = next(line for line in lines if line.split()[:1] == ["cpu"]).split()[1:6]
    assert len(fps) == 7 and all(float(v) > 0 for v in fps)  # 5 stages, e2e/transcode, efficiency
    assert len(cpu) == 5 and all(float(v) > 0 for v in cpu)

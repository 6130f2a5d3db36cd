"""The benchmark command runs and reports one row per model, size and mode (no timing assertions)."""

from __future__ import annotations

from kanet.bench import main


def test_bench_prints_a_row_per_combination(capsys) -> None:
    assert main(["--models", "kanet-t", "--sizes", "64x48,80x64", "--modes", "fp32,bf16-cl", "--device", "cpu",
                 "--warmup", "0", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| kanet-t")]
    assert len(rows) == 4
    assert "| kanet-t | 64x48 | fp32 |" in rows[0] and rows[0].endswith("| - |")
    deviation = float(rows[1].rstrip(" |").rsplit("|", 1)[1])
    assert 0 < deviation < 1e-2  # bf16 differs from fp32, but not by much


def test_bench_bad_arguments(capsys) -> None:
    assert main(["--models", "kanet-xl"]) == 2
    assert main(["--sizes", "12by7"]) == 2
    assert main(["--modes", "int8"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)

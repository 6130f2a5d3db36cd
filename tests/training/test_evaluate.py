"""training.evaluate: paired PSNR/SSIM, video warping error, errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.cli import run_main
from training.evaluate import main

SHIPPED = str(Path(__file__).resolve().parents[2] / "streamdehaze" / "weights" / "kanet-t.safetensors")

from .conftest import scene


def _pairs(tmp_path: Path) -> tuple[Path, Path]:
    clean, hazy = tmp_path / "clean", tmp_path / "hazy"
    clean.mkdir(), hazy.mkdir()
    for i in range(3):
        image = cv2.cvtColor(scene(i, 72, 88), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(clean / f"im{i}.png"), image)
        cv2.imwrite(str(hazy / f"im{i}.png"), (image * 0.5 + 110).astype(np.uint8))
    return hazy, clean


def test_paired_scores_of_existing_outputs(tmp_path, capsys):
    hazy, clean = _pairs(tmp_path)
    assert run_main(main, ["--dehazed", str(clean), "--clean", str(clean), "--json", str(tmp_path / "s.json")]) == 0
    perfect = json.loads((tmp_path / "s.json").read_text())
    assert perfect["mean"]["psnr"] == 100.0 and perfect["mean"]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert run_main(main, ["--dehazed", str(hazy), "--clean", str(clean), "--json", str(tmp_path / "h.json")]) == 0
    veiled = json.loads((tmp_path / "h.json").read_text())
    assert veiled["mean"]["psnr"] < 25 and len(veiled["images"]) == 3
    assert "psnr" in capsys.readouterr().out


def test_model_on_paired_folder_and_video(tmp_path):
    import kanet

    weights = kanet.save_weights(kanet.create_model("kanet-t"), tmp_path / "t.safetensors")
    hazy, clean = _pairs(tmp_path)
    assert run_main(main, ["--weights", str(weights), "--hazy", str(hazy), "--clean", str(clean),
                           "--json", str(tmp_path / "m.json")]) == 0
    assert np.isfinite(json.loads((tmp_path / "m.json").read_text())["mean"]["psnr"])
    video = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    big = scene(3, 64, 140)
    for t in range(4):
        writer.write(cv2.cvtColor(np.ascontiguousarray(big[:, 3 * t:3 * t + 96]), cv2.COLOR_RGB2BGR))
    writer.release()
    assert run_main(main, ["--weights", str(weights), "--video", str(video), "--json", str(tmp_path / "v.json")]) == 0
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["frames"] == 4 and result["warping_error"] >= 0 and result["warping_error_input"] < 0.01
    assert run_main(main, ["--video", str(video), "--dehazed", str(video), "--json", str(tmp_path / "w.json")]) == 0
    same = json.loads((tmp_path / "w.json").read_text())
    assert same["warping_error"] == pytest.approx(same["warping_error_input"])


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of --weights"),
    (["--dehazed", "x"], "give --clean DIR"),
    (["--dehazed", "/no/such", "--clean", "/no/such"], "image folder not found"),
    (["--weights", "/no/w.safetensors", "--video", "v.mp4"], "weights not found"),
    (["--dehazed", "/no/o.mp4", "--video", "/no/v.mp4"], "video not found"),
    # (tracebacks, the second after all the scoring was done)
    (["--weights", SHIPPED, "--video", "/no/v.mp4", "--device", "tpu"],
     "error: --device must be auto, cpu or cuda[:N], got tpu"),
    (["--weights", SHIPPED, "--video", "/no/v.mp4", "--json", "/no/such/f.json"],
     "error: --json /no/such/f.json: folder does not exist: /no/such"),
])
def test_bad_input_is_one_line(args, message, capsys):
    assert run_main(main, args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1

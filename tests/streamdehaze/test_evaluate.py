"""python -m streamdehaze.evaluate: its pieces and a whole run on tiny synthetic data (fast, CPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import kanet
from streamdehaze import evaluate as ev

from ..conftest import hazy_pattern, write_video

HAS_FADE = importlib.util.find_spec("pyfade") is not None


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random-init kanet-t weights saved like a training checkpoint."""
    path = tmp_path_factory.mktemp("w") / "step-0000042.safetensors"
    kanet.save_weights(kanet.create_model("kanet-t", seed=1), path)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A miniature ``../shared/data``: 12 clean photos, 2 real hazy photos, an 8-frame foggy video."""
    root = tmp_path / "data"
    (root / "clean").mkdir(parents=True)
    (root / "real_hazy").mkdir()
    (root / "real_video").mkdir()
    for i in range(12):
        cv2.imwrite(str(root / "clean" / f"scene_{i:02d}.png"), hazy_pattern(i, 128, 96)[..., ::-1])
    cv2.imwrite(str(root / "real_hazy" / "a_input.png"), hazy_pattern(3, 120, 80)[..., ::-1])
    cv2.imwrite(str(root / "real_hazy" / "b.jpg"), hazy_pattern(7, 90, 100)[..., ::-1])
    write_video(root / "real_video" / "dvd_fog_1080p.mp4", frames=8, width=96, height=64)
    return root


def write_config(path: Path, clean: Path) -> Path:
    path.write_text(f"""[data]
clean = "{clean}"
cache_short_side = 96
val_fraction = 0.25
val_crop = 64
[model]
name = "kanet-t"
[train]
crop = 64
device = "cpu"
threads = 1
[loss]
contrastive = 0.0
""")
    return path


def test_score_pairs_identity_and_engine(weights):
    clean = torch.rand(3, 3, 32, 48)
    same = ev.score_pairs(None, clean, clean)
    assert same["psnr"] == pytest.approx(100.0) and same["ssim"] == pytest.approx(1.0, abs=1e-4)
    run = ev.engine_runner("kanet-t", weights)
    out = run(clean)
    assert out.shape == clean.shape and torch.equal(out, (out * 255).round() / 255)  # 8-bit like a saved file
    scores = ev.score_pairs(run, clean, clean, batch=2)
    assert 0 < scores["psnr"] < 100 and -1 <= scores["ssim"] <= 1


def test_validation_pairs_are_the_trainers(data, tmp_path):
    from training.config import load_config
    from training.trainer import Trainer

    config = write_config(tmp_path / "c.toml", data / "clean")
    hazy, clean = ev.validation_pairs(config)
    assert hazy.shape == clean.shape and hazy.shape[1:] == (3, 64, 64) and len(hazy) >= 1
    again = Trainer(load_config(config), progress=False).val
    assert torch.equal(hazy, again["hazy"]) and torch.equal(clean, again["clean"])


def test_dehaze_array_and_sheet(weights, data, tmp_path):
    run = ev.engine_runner("dcp", None)
    photos = ev.list_photos(data / "real_hazy")
    assert [p.name for p in photos] == ["a_input.png", "b.jpg"]
    image = ev.read_uint8(photos[0])
    out = ev.dehaze_array(run, image)
    assert out.shape == image.shape and out.dtype == np.uint8
    sheet = ev.contact_sheet([[image, out], [image]], tmp_path / "s" / "sheet.png", height=40, gap=2)
    written = cv2.imread(str(sheet))
    assert written.shape[0] == 2 * 40 + 2 and written.shape[1] == 2 * 60 + 2


def test_fade_scores(data):
    image = ev.read_uint8(data / "real_hazy" / "a_input.png")
    result = ev.fade_scores({"a": {"input": image, "dcp": image}, "b": {"input": image, "dcp": image[::-1]}})
    if not HAS_FADE:
        assert "fade-python" in result["error"]
        return
    assert result["images"] == 2 and set(result["summary"]) == {"input", "dcp"}
    assert result["summary"]["input"]["mean"] == pytest.approx(result["per_image"]["a"]["input"])


def test_temporal_scores(weights, data):
    video = data / "real_video" / "dvd_fog_1080p.mp4"
    result = ev.temporal_scores(video, [("dcp", None, "off"), ("kanet-t", weights, "ema")], frames=5)
    assert result["frames"] == 5 and result["size"] == [96, 64] and result["input"] > 0
    for key in ("dcp off", "kanet-t ema"):
        assert result[key]["warping_error"] >= 0 and result[key]["fps"] > 0
    if HAS_FADE:  # dehazing the fogged test clip lowers its fog density
        assert 0 < result["dcp off"]["fade"] < result["input fade"]
    else:
        assert result["input fade"] is None and result["dcp off"]["fade"] is None


def test_whole_run(weights, data, tmp_path, capsys):
    out = tmp_path / "eval"
    config = write_config(tmp_path / "c.toml", data / "clean")
    code = ev.main(["--weights", str(weights), "--out", str(out), "--config", str(config), "--data", str(data),
                    "--frames", "4", "--threads", "1"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 42 and summary["temporal"]["frames"] == 4
    assert set(summary["synthetic"]["scores"]) == {"hazy input", "dcp (engine)", "kanet-t (engine)"}
    assert set(summary["temporal"]) >= {"dcp off", "dcp ema", "kanet-t off", "kanet-t ema"}
    assert (out / "sheet.png").is_file() and summary["sheet_images"] == ["a_input.png", "b.jpg"]
    text = capsys.readouterr().out
    assert "| dcp (engine) |" in text and (out / "results.md").read_text() in text


@pytest.mark.parametrize("args, message", [
    (["--weights", "missing.safetensors"], "weights file not found"),
    (["--weights", "{w}", "--model", "dcp"], "baseline"),
    (["--weights", "{w}", "--data", "nowhere"], "not found: nowhere"),
    (["--weights", "{w}", "--model", "kanet-s"], "not kanet-s"),
])
def test_bad_input_is_one_line(weights, data, tmp_path, capsys, args, message):
    args = [a.replace("{w}", str(weights)) for a in args]
    if "--data" not in args:
        args += ["--data", str(data), "--config", str(write_config(tmp_path / "c.toml", data / "clean"))]
    assert ev.main(args + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_real_data_is_readable(shared_data):
    photos = ev.list_photos(shared_data / "real_hazy")
    assert len(photos) >= 8 and all(n in {p.name for p in photos} for n in ev.SHEET_NAMES)
    image = ev.read_uint8(photos[0])
    assert ev.dehaze_array(ev.engine_runner("dcp", None), image).shape == image.shape

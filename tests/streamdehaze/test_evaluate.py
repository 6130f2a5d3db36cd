"""python -m streamdehaze.evaluate: its data, its pieces and a whole run on tiny synthetic data (fast, CPU)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import kanet
from streamdehaze import evalsets
from streamdehaze import evaluate as ev
from training.data import is_validation

from ..conftest import hazy_pattern, write_video

HAS_FADE = importlib.util.find_spec("pyfade") is not None


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random-init kanet-t weights (the coefficient head) saved like a training checkpoint."""
    path = tmp_path_factory.mktemp("w") / "step-0000042.safetensors"
    kanet.save_weights(kanet.create_model("kanet-t", seed=1), path)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A miniature ``../shared/data``: 40 clean photos, 2 real hazy photos, an 8-frame foggy video."""
    root = tmp_path / "data"
    (root / "clean").mkdir(parents=True)
    (root / "real_hazy").mkdir()
    (root / "real_video").mkdir()
    for i in range(40):
        cv2.imwrite(str(root / "clean" / f"scene_{i:02d}.png"), hazy_pattern(i, 128, 96)[..., ::-1])
    cv2.imwrite(str(root / "real_hazy" / "a_input.png"), hazy_pattern(3, 120, 80)[..., ::-1])
    cv2.imwrite(str(root / "real_hazy" / "b.jpg"), hazy_pattern(7, 90, 100)[..., ::-1])
    write_video(root / "real_video" / "dvd_fog_1080p.mp4", frames=8, width=96, height=64)
    return root


def test_classic_haze_thickens_with_distance_towards_a_uniform_airlight():
    clean = torch.zeros(3, 100, 60)  # black: the hazy image is the airlight's share, A (1 - t)
    hazy = evalsets.classic_haze(clean, torch.Generator().manual_seed(3))
    rows = hazy.mean((0, 2))
    assert (rows[1:] <= rows[:-1] + 1e-6).all() and rows[0] > rows[-1] + 0.1  # far at the top, near at the bottom
    assert torch.allclose(hazy[:, 0], hazy[:, 0, :1].expand(-1, 60))  # no texture, no noise: depth alone
    again = evalsets.classic_haze(clean, torch.Generator().manual_seed(3))
    assert torch.equal(hazy, again)


def test_held_out_pairs_are_the_held_out_photos_at_full_size(data):
    for haze in evalsets.HAZE_MODELS:
        pairs = list(evalsets.held_out_pairs(data / "clean", haze, val_fraction=0.25))
        names = sorted(p.name for p in (data / "clean").iterdir() if is_validation(p.name, 0.25))
        assert [p.name for p in pairs] == names and names
        assert all(p.hazy.shape == p.clean.shape == (96, 128, 3) and p.hazy.dtype == np.uint8 for p in pairs)
        again = next(evalsets.held_out_pairs(data / "clean", haze, val_fraction=0.25))
        assert np.array_equal(again.hazy, pairs[0].hazy)  # seeded by the file name: the same pairs every run
    ours = next(evalsets.held_out_pairs(data / "clean", "ours", val_fraction=0.25))
    classic = next(evalsets.held_out_pairs(data / "clean", "classic", val_fraction=0.25))
    assert not np.array_equal(ours.hazy, classic.hazy)
    with pytest.raises(ValueError, match="unknown haze model"):
        next(evalsets.held_out_pairs(data / "clean", "fog"))


def test_pan_is_a_moving_window_over_the_photo(tmp_path):
    photo = np.concatenate([hazy_pattern(i, 100, 120) for i in range(4)], 1)  # 400 x 120
    path = evalsets.make_pan(photo, tmp_path / "pan.mp4", frames=6, size=(160, 96))
    frames = ev.decode_rgb(path)
    assert len(frames) == 6 and frames[0].shape == (96, 160, 3)
    assert not np.array_equal(frames[0], frames[-1])


def test_still_is_a_fixed_camera_with_noise_of_its_own(tmp_path):
    photo = hazy_pattern(0, 200, 120)
    path = evalsets.make_still(photo, tmp_path / "still.mp4", frames=6, size=(160, 96), noise=3.0)
    frames = ev.decode_rgb(path)
    assert len(frames) == 6 and frames[0].shape == (96, 160, 3)
    steps = [np.abs(b.astype(float) - a).mean() for a, b in zip(frames, frames[1:])]
    assert max(steps) > 0 and all(step < 3 for step in steps)  # the encoder's refreshes change; nothing moves
    assert np.abs(frames[0].astype(float) - cv2.resize(photo, (160, 96))).mean() < 6


def test_an_hd_clip_reaches_the_product_in_its_own_colours(tmp_path):
    # Written BT.601 untagged, a 720-line clip was read as BT.709 (as players read HD): the product was given
    # shifted colours (a cast of 1.5 on the XG clips with the frames passed through)
    from streamdehaze.api import process
    from training.metrics import colour_cast

    photo = np.zeros((90, 160, 3), np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2] = 210, np.linspace(40, 200, 160, dtype=np.uint8), 60
    clip = evalsets.make_still(photo, tmp_path / "still.mp4", frames=2, size=(1280, 720), noise=0.0)
    shown = cv2.resize(photo, (1280, 720))
    assert colour_cast(shown, ev.decode_rgb(clip)[0]) < 0.5
    process(clip, tmp_path / "same.mp4", model="dcp", strength=0.0, noise_floor=0, temporal="off")
    assert colour_cast(shown, ev.decode_rgb(tmp_path / "same.mp4")[0]) < 0.5


def test_held_out_scores_and_photo_scores(data, weights):
    runners = {"input": None, "same": lambda image: image, "model": ev.photo_runner("kanet-t", weights)}
    part = ev.held_out_scores(runners, data / "clean", "classic")
    assert part["images"] >= 1
    assert part["scores"]["same"] == part["scores"]["input"] and part["scores"]["input"]["psnr"] < 100
    assert part["scores"]["input"]["colour_error"] > 0 and part["scores"]["input"]["detail"] < 1  # against the clean
    image = ev.read_uint8(data / "real_hazy" / "a_input.png")
    grey = np.full_like(image, 128)
    photos = ev.photo_scores({"a": {"input": image, "dcp": image, "model": grey}})
    row = photos["summary"]
    assert row["dcp"]["cast"]["mean"] == 0 and row["dcp"]["detail"]["mean"] == pytest.approx(1.0, abs=1e-4)
    assert row["model"]["detail"]["mean"] < 0.1  # a flat grey output keeps no detail
    assert ("fade" in row["dcp"]) == HAS_FADE


def test_textured_crop_finds_the_detail():
    image = np.full((200, 300, 3), 120, np.uint8)
    image[120:180, 200:260] = np.random.default_rng(0).integers(0, 256, (60, 60, 3))  # a busy patch
    y, x = ev.textured_crop(image, side=64)
    assert 116 <= y <= 124 and 196 <= x <= 204
    assert [c.shape for c in ev.crops([image, image], side=64)] == [(64, 64, 3)] * 2


def test_clip_scores(data, weights, tmp_path):
    video = data / "real_video" / "dvd_fog_1080p.mp4"
    work = tmp_path / "work"
    work.mkdir()
    runs = [("dcp", "dcp", None, 1.0, 0.0), ("model", "kanet-t", weights, 1.0, 0.0),
            ("none", "kanet-t", weights, 0.0, 0.0)]
    result, stills = ev.clip_scores(video, runs, work, 5)
    assert result["frames"] == 5 and result["size"] == [96, 64] and set(stills) == {"input", "dcp", "model", "none"}
    for key in ("dcp", "model"):
        assert result[key]["warping_error"] >= 0 and result[key]["cast"] >= 0 and result[key]["fps"] > 0
    if HAS_FADE:  # dehazing the fogged test clip lowers its fog density
        assert 0 < result["dcp"]["fade"] < result["input"]["fade"]
        assert len(result["stretch_curve"]) == 7 and result["stretch_curve"][0][0] == result["input"]["fade"]
    assert result["input"]["crushed"] == 0.0 and all(0 <= result[k]["crushed"] <= 1 for k in ("dcp", "model"))
    # strength 0 gives the input back, through the encoder: at the input's contrast and colour, and keeping more
    # of its fine detail than any correction does (crf 18 loses some of this tiny noisy clip's)
    none = result["none"]
    assert abs(none["detail_gain"] - 1) < 0.1 and none["cast"] < 1, none
    assert none["detail"] > max(result["dcp"]["detail"], result["model"]["detail"])
    assert list(work.iterdir()) == []  # outputs are removed once scored


def test_whole_run(weights, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evalsets, "split_files", lambda files, fraction: (files[4:], files[:4]))
    out = tmp_path / "eval"
    code = ev.main(["--weights", str(weights), "--out", str(out), "--data", str(data), "--frames", "4",
                    "--threads", "1"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 42 and summary["model"] == "kanet-t" and summary["video"][0]["frames"] == 4
    assert set(summary["held-out"]) == {"ours", "classic"} and summary["held-out"]["ours"]["images"] == 4
    assert set(summary["held-out"]["ours"]["scores"]) == {"input", "dcp", "model"}
    assert set(summary["photos"]["per_image"]) == {"a_input.png", "b.jpg"}
    assert {t["target"] for t in summary["targets"]} >= {"held-out (classic haze): PSNR >= dcp + 2 dB",
                                                          "real photos: detail retention >= dcp's",
                                                          "dvd_fog_1080p.mp4: warping error <= dcp's"}
    for sheet in ("sheet.png", "crops.png", "video_crops.png"):
        assert cv2.imread(str(out / sheet)) is not None
    text = capsys.readouterr().out
    assert "| target | value | met |" in text and (out / "results.md").read_text() in text


def test_parts_run_alone(weights, data, tmp_path):
    assert ev.main(["--weights", str(weights), "--out", str(tmp_path / "o"), "--data", str(data),
                    "--parts", "photos", "--threads", "1"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert "photos" in summary and "video" not in summary and "held-out" not in summary


def test_without_fade_python_one_line_says_what_is_left_out(weights, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyfade", None)  # ``import pyfade`` fails, as where it is not installed
    out = tmp_path / "o"
    assert ev.main(["--weights", str(weights), "--out", str(out), "--data", str(data), "--parts", "photos,video",
                    "--frames", "3", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count(f"note: {ev.FADE_MISSING}\n") == 1 and "pip install 'streamdehaze[fade]'" in err
    assert ev.FADE_MISSING in (out / "results.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert "fade" not in summary["photos"]["summary"]["model"] and summary["video"][0]["model"]["fade"] is None
    assert not any("FADE" in t["target"] for t in summary["targets"])


@pytest.mark.parametrize("args, message", [
    (["--weights", "missing.safetensors"], "weights file not found"),
    (["--weights", "{w}", "--model", "dcp"], "baseline"),
    (["--weights", "{w}", "--data", "nowhere"], "not found: nowhere"),
    (["--weights", "{w}", "--model", "kanet-s"], "not kanet-s"),
    (["--weights", "{w}", "--parts", "photos,sky"], "--parts takes"),
    (["--weights", "{w}", "--parts", "photos", "--out", "{file}"], "cannot write into"),
    (["--weights", "{w}", "--frames", "many"], "argument --frames: invalid int value: 'many'"),
])
def test_bad_input_is_one_line(weights, data, tmp_path, capsys, args, message):
    (tmp_path / "a_file").write_text("")
    args = [a.replace("{w}", str(weights)).replace("{file}", str(tmp_path / "a_file")) for a in args]
    if "--data" not in args:
        args += ["--data", str(data)]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "o")]
    assert ev.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamdehaze: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("clip", [b"", b"\x00not a video" * 300])
def test_an_unreadable_clip_is_one_line(weights, data, tmp_path, capsys, clip):
    video = data / "real_video" / "dvd_fog_1080p.mp4"
    video.write_bytes(clip)
    assert ev.main(["--weights", str(weights), "--out", str(tmp_path / "o"), "--data", str(data), "--parts", "video",
                    "--threads", "1"]) == 1
    err = capsys.readouterr().err.removeprefix(f"note: {ev.FADE_MISSING}\n")  # (where fade-python is missing)
    assert err.startswith(f"streamdehaze: error: cannot decode {video}: ") and err.count("\n") == 1


def test_real_data_is_readable(shared_data):
    photos = ev.list_photos(shared_data / "real_hazy")
    assert len(photos) >= 8 and all(n in {p.name for p in photos} for n in ev.SHEET_NAMES)
    assert all((shared_data / "real_hazy" / name).is_file() for name, _ in ev.PANS)
    image = ev.read_uint8(photos[0])
    assert ev.photo_runner("dcp", None)(image).shape == image.shape

"""The trainer: a short CPU run lowers the loss, resume is exact, CLI errors are one line."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.cli import run_main
from training.data import is_validation
from training.images import list_images
from training.train import main

from .conftest import scene, write_jpeg

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, clean: Path, out: Path, **sections: dict) -> Path:
    """A tiny TOML config: kanet-t, 64 px crops, 2-frame clips, one thread, no VGG term."""
    base = {
        "data": {"clean": str(clean), "cache_short_side": 96, "val_fraction": 0.25, "val_crop": 64},
        "model": {"name": "kanet-t"},
        "train": {"steps": 20, "batch": 2, "crop": 64, "clip_frames": 2, "lr": 1e-3, "warmup_steps": 0,
                  "schedule": "constant", "device": "cpu", "threads": 1, "seed": 0, "val_every": 20,
                  "checkpoint_every": 20, "log_every": 1, "out": str(out)},
        "loss": {"contrastive": 0.0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_validation_split_is_by_file_name(clean_folder):
    names = sorted(p.name for p in clean_folder.iterdir())
    held = [n for n in names if is_validation(n, 0.25)]
    assert 0 < len(held) < len(names)
    assert held == [n for n in names if is_validation(n, 0.25)]  # deterministic
    assert not any(is_validation(n, 0.0) for n in names) and all(is_validation(n, 1.0) for n in names)


def test_twenty_step_cpu_run_of_an_image_model_lowers_the_loss(clean_folder, tmp_path):
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, model={"output": "image"})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0
    log = _log(run)
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    val = [r["val_psnr"] for r in log if "val_psnr" in r]
    assert val[-1] > val[0] + 1.0, val
    assert {"pixel", "msssim", "temporal", "weight_max", "lr", "sec_per_step"} <= set(log[2])
    pointer = json.loads((run / "last.json").read_text())
    assert pointer["step"] == 20 and (run / pointer["weights"]).is_file()
    import kanet

    model = kanet.load_weights(run / pointer["weights"])
    assert model.config.output == "image" and model.config_name == "kanet-t"  # kanet-t with the image output


def test_coefficient_model_starts_as_the_identity_and_learns(clean_folder, tmp_path):
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 40, "val_every": 40})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0
    log = _log(run)
    val = [r["val_psnr"] for r in log if "val_psnr" in r]
    assert val[0] == pytest.approx(log[0]["val_psnr_input"], abs=0.05)  # zero output layer: output = input
    assert val[-1] > val[0] + 1.0, val
    import kanet

    assert kanet.load_weights(run / "step-0000040.safetensors").config_name == "kanet-t"


def test_full_resolution_training_from_an_image_body_with_real_haze(clean_folder, tmp_path):
    import kanet
    from training.config import load_config
    from training.trainer import Trainer

    image_body = kanet.KANet(dataclasses.replace(kanet.CONFIGS["kanet-t"], output="image"), seed=5)
    body = kanet.save_weights(image_body, tmp_path / "body.safetensors")
    config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "run",
                          data={"real_hazy": str(clean_folder)}, model={"init": str(body)},
                          train={"steps": 4, "crop": 48, "scale": [1.5, 1.9], "real_batch": 2,
                                 "val_every": 4, "checkpoint_every": 4},
                          loss={"fog_left": 1.0, "airlight": 0.5})
    trainer = Trainer(load_config(config), progress=False)
    state = trainer.model.state_dict()
    for key, value in image_body.state_dict().items():  # the image model's body, and an identity output layer
        if key.startswith("head.out."):
            assert not state[key].any()
        else:
            assert torch.equal(state[key], value), key
    sides = {trainer._batch().hazy.shape[-1] for _ in range(6)}
    assert min(sides) >= 72 and max(sides) <= 91 and len(sides) > 1  # 48 px x 1.5-1.9, drawn per batch
    trainer.fit()
    # The real photos' windows are drawn at the synthetic frames' side, also when the loss scores a smaller window
    # of them (they were drawn at the window's side: at a scale of 1, the network saw real haze unshrunk).
    trainer.config = dataclasses.replace(trainer.config, train=dataclasses.replace(trainer.config.train, loss_crop=64))
    frame_sides, real_sides = [], []
    batch, real_terms = trainer._batch, trainer._real_terms
    trainer._batch = lambda: frame_sides.append((c := batch()).hazy.shape[-1]) or c
    trainer._real_terms = lambda side: real_sides.append(side) or real_terms(side)
    for _ in range(3):
        trainer.train_step()
    assert real_sides == frame_sides and min(frame_sides) > 64
    log = _log(tmp_path / "run")
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 4 and all(r["fog_left"] >= 0 and r["airlight"] >= 0 for r in steps)
    assert all(math.isfinite(r["loss"]) for r in steps)


def test_resume_continues_identically(clean_folder, tmp_path):
    config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "a",
                          train={"steps": 4, "checkpoint_every": 2, "keep_every": 2, "val_every": 2})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0
    assert run_main(main, ["--resume", str(tmp_path / "a" / "step-0000002.state.pt"),
                           "--out", str(tmp_path / "b"), "--quiet"]) == 0
    a = load_file(tmp_path / "a" / "step-0000004.safetensors")
    b = load_file(tmp_path / "b" / "step-0000004.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) <= 1e-6
    losses_a = [r["loss"] for r in _log(tmp_path / "a") if "loss" in r][2:]
    losses_b = [r["loss"] for r in _log(tmp_path / "b") if "loss" in r]
    assert losses_a == pytest.approx(losses_b, abs=1e-6)



class _Planted:
    """What a pickle may hold besides a state: a call, here one that creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_planted_state_file_runs_no_code(clean_folder, tmp_path, capsys):
    """--resume unpickled the .state.pt in full: a file planted in a run folder ran whatever it held."""
    config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "run",
                          train={"steps": 4, "checkpoint_every": 2})
    assert run_main(main, ["--config", str(config), "--until", "2", "--quiet"]) == 0
    state, marker = tmp_path / "run" / "step-0000002.state.pt", tmp_path / "ran"
    saved = torch.load(state, weights_only=True)  # (what is saved loads so: a run folder of before resumes)
    torch.save({**saved, "validation_due": _Planted(marker)}, state)
    capsys.readouterr()
    assert run_main(main, ["--resume", str(state), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"error: cannot read checkpoint {state}: it holds more than a training " \
                                              "state's tensors and numbers (objects that could run code): not loaded"
    assert not marker.exists()


def test_a_checkpoint_file_resumed_from_another_folder_goes_on_in_its_own(clean_folder, tmp_path, monkeypatch):
    # train.out is relative to where the run started: resumed from elsewhere by its file, the run goes on in the
    # checkpoint's folder, not in a new folder of that name under the working directory
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    config = write_config(tmp_path / "c.toml", clean_folder, Path("run"), train={"steps": 4, "checkpoint_every": 2})
    assert run_main(main, ["--config", str(config), "--until", "2", "--quiet"]) == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    run = tmp_path / "project" / "run"
    assert run_main(main, ["--resume", str(run / "step-0000002.state.pt"), "--quiet"]) == 0
    assert json.loads((run / "last.json").read_text())["step"] == 4
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_amp_paired_data_and_contrastive_term_run(clean_folder, tmp_path, random_vgg):
    import cv2

    hazy, clean = tmp_path / "pairs_hazy", tmp_path / "pairs_clean"
    hazy.mkdir(), clean.mkdir()
    for f in sorted(clean_folder.iterdir())[:4]:
        image = cv2.imread(str(f))
        cv2.imwrite(str(clean / f.name), image)
        cv2.imwrite(str(hazy / f.name), (image * 0.6 + 90).astype("uint8"))
    config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "run",
                          data={"paired_hazy": str(hazy), "paired_clean": str(clean), "paired_fraction": 0.5},
                          train={"steps": 3, "amp": True, "val_every": 3, "checkpoint_every": 3},
                          loss={"contrastive": 0.04, "vgg_weights": str(random_vgg)})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0
    log = _log(tmp_path / "run")
    assert all(r["contrastive"] > 0 for r in log if "loss" in r)
    held_out = [f.name for f in sorted(clean.iterdir()) if is_validation(f.name, 0.25)]
    assert held_out and log[-1]["val_paired_images"] == len(held_out) and "val_paired_psnr" in log[-1]
    assert any("temporal" not in r for r in log if "loss" in r)  # a real-pair step has no clip


@pytest.mark.parametrize("edit, message", [
    (None, "config file not found"),
    ({"train": {"stepz": 3}}, "unknown setting train.stepz"),
    ({"train": {"steps": "many"}}, "train.steps must be an integer"),
    ({"data": {"clean": "/no/such/folder"}}, "image folder not found: /no/such/folder"),
    ({"train": {"crop": 60}}, "not a multiple of 16"),
    ({"train": {"crop": 32}}, "train.crop = 32 is below 48, the smallest input kanet-t takes"),
    ({"model": {"output": "image"}, "data": {"val_crop": 16}}, "data.val_crop = 16 is below 48"),
    ({"model": {"name": "resnet"}}, "unknown model.name"),
    ({"model": {"output": "rgb"}}, "model.output must be image or coefficients"),
    ({"train": {"scale": [0.5, 2.0]}}, "train.scale must be [low, high] with 1 <= low <= high"),
    ({"model": {"output": "image"}, "train": {"scale": [1.5, 2.0]}}, "apply to coefficient models"),
    ({"train": {"real_batch": 2}}, "train.real_batch > 0 and data.real_hazy go together"),
    ({"loss": {"contrastive": 0.04, "vgg_weights": "/no/vgg19-dcbb9e9d.pth"}}, "VGG19 ImageNet weights not found"),
    ({"train": {"lr": -1e-4}}, "train.lr must be a number > 0, got -0.0001"),
    ({"train": {"betas": [0.9, 1.5]}}, "train.betas must be two numbers in [0, 1), got [0.9, 1.5]"),
    ({"train": {"weight_decay": -1.0}}, "train.weight_decay must be >= 0"),
    ({"train": {"device": "gpu0"}}, "train.device must be auto, cpu or cuda[:N], got gpu0"),
    ({"model": {"rff": "bogus"}}, "model.rff must be one of fixed, parity, got 'bogus'"),
    ({"train": {"crop": 0}}, "train.crop must be >= 1, got 0"),
    ({"train": {"steps": -5}}, "train.steps must be >= 1, got -5"),  # (it named three keys, and no value)
    ({"train": {"clip_frames": 0}}, "train.clip_frames must be >= 1, got 0"),
    ({"train": {"checkpoint_every": 0}}, "train.checkpoint_every must be >= 1, got 0"),
    ({"train": {"log_every": 0}}, "train.log_every must be >= 1, got 0"),
    ({"haze": {"thickness": [3.0, 1.0]}}, "haze.thickness must be [low, high] with low <= high, got [3.0, 1.0]"),
    ({"haze": {"jpeg_quality": [10.0, 200.0]}}, "haze.jpeg_quality must be two numbers in [1, 100], got [10.0, 200.0]"),
    ({"haze": {"noise_p": 1.5}}, "haze.noise_p must be in [0, 1], got 1.5"),
    ({"motion": {"max_speed": -3.0}}, "motion.max_speed must be >= 0, got -3.0"),
    ({"reweight": {"num_f": 0}}, "reweight.num_f must be >= 1, got 0"),
    ({"loss": {"temporal": -0.5}}, "loss.temporal must be >= 0, got -0.5"),
    ({"loss": {"msssim_scales": 7}}, "loss.msssim_scales must be in [0, 5], got 7"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(clean_folder, tmp_path, capsys, edit, message):
    config = tmp_path / "missing.toml"
    if edit is not None:
        config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "run", **edit)
    assert run_main(main, ["--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_cut_photo_is_one_line_not_grey_training_data(clean_folder, tmp_path, capsys):
    # libjpeg decodes a JPEG cut short (a copy that stopped) with its missing part grey, without an error
    whole = (clean_folder / "scene_00.png").read_bytes()
    (clean_folder / "scene_00.png").unlink()
    cv2.imwrite(str(clean_folder / "cut.jpg"), cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_COLOR))
    data = (clean_folder / "cut.jpg").read_bytes()
    (clean_folder / "cut.jpg").write_bytes(data[:len(data) // 2])
    assert cv2.imread(str(clean_folder / "cut.jpg")) is not None  # (what training used to learn from)
    config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "run")
    assert run_main(main, ["--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: cannot decode image: {clean_folder / 'cut.jpg'}: truncated (its data ends before the " \
                  "picture does)"


def test_a_configuration_as_windows_editors_save_it(clean_folder, tmp_path, capsys):
    """UTF-16 (PowerShell's ``>``) or Latin-1 was a UnicodeDecodeError traceback; a byte-order mark (Notepad's UTF-8)
    "Invalid statement (at line 1, column 1)"."""
    config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "run", train={"steps": 1})
    text = config.read_text(encoding="utf-8")
    config.write_text("# café\n" + text, encoding="utf-16")
    assert run_main(main, ["--config", str(config), "--quiet"]) == 2
    assert capsys.readouterr().err == f"error: {config}: not UTF-8 text (byte 0 cannot be read): save it as UTF-8\n"
    config.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0


def test_max_fog_without_fade_python_is_one_line(clean_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyfade", None)  # as if fade-python were not installed
    config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "run", data={"max_fog": 0.8})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data.max_fog: FADE needs the optional package fade-python") and "\n" not in err


def test_a_run_started_again_goes_on_and_another_configuration_is_refused(clean_folder, tmp_path, capsys):
    # A recipe run again after a crash starts each stage with --config again: the stage goes on where its
    # checkpoint is. A different run into the same folder would have its checkpoints pruned away as older.
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 6, "checkpoint_every": 2})
    assert run_main(main, ["--config", str(config), "--until", "4", "--quiet"]) == 0
    capsys.readouterr()
    assert run_main(main, ["--config", str(config), "--until", "4", "--quiet"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0
    assert f"continuing the run in {run} from its checkpoint at step 4" in capsys.readouterr().err
    steps = [r["step"] for r in _log(run) if "loss" in r]
    assert steps == list(range(1, 7))
    other = write_config(tmp_path / "o.toml", clean_folder, run, train={"steps": 6, "checkpoint_every": 2,
                                                                       "lr": 5e-2})
    assert run_main(main, ["--config", str(other), "--quiet"]) == 2
    assert "already holds a run of another configuration (train.lr 0.001 -> 0.05)" in capsys.readouterr().err
    assert run_main(main, ["--resume", str(run), "--config", str(other), "--quiet"]) == 2
    assert "was trained with another configuration (train.lr 0.001 -> 0.05)" in capsys.readouterr().err
    assert json.loads((run / "last.json").read_text())["step"] == 6


def test_a_second_training_into_a_run_folder_in_use_is_refused(clean_folder, tmp_path, capsys):
    """The same command in another terminal trained the same steps beside the first, both writing one log; another
    seed started at the same moment mixed its checkpoints in. The folder is locked by the training in it (taken
    here as that training would)."""
    import fcntl
    import os

    run = tmp_path / "run"
    run.mkdir()
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 2})
    fd = os.open(run, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert run_main(main, ["--config", str(config), "--quiet"]) == 2
        assert capsys.readouterr().err == f"error: {run}: another training is running in it\n"
        assert list(run.iterdir()) == []
    finally:
        os.close(fd)
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0  # let go: it trains


def test_a_full_disk_under_a_checkpoint_is_one_line(clean_folder, small_filesystem, tmp_path, capsys):
    """(It was a torch or safetensors traceback: "basic_ios::clear: iostream error", "I/O error".) The checkpoint
    before stays whole and named, and nothing half-written is left."""
    run = small_filesystem(40 * 1024) / "run"  # (a checkpoint: 11 MB of weights, 22 MB of state: room for one)
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 2, "checkpoint_every": 1})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 1
    assert capsys.readouterr().err == (f"error: {run}: No space left on device while writing the checkpoint at "
                                       "step 2\n")
    assert json.loads((run / "last.json").read_text())["step"] == 1
    assert not [p for p in run.iterdir() if ".tmp." in p.name]


def test_a_resumed_run_forgets_what_it_does_again_and_what_a_killed_run_left(clean_folder, tmp_path):
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 4, "checkpoint_every": 2})
    assert run_main(main, ["--config", str(config), "--until", "3", "--quiet"]) == 0  # checkpoints at 2 and 3
    (run / "last.json").write_text(json.dumps({"step": 2, "weights": "step-0000002.safetensors",
                                               "state": "step-0000002.state.pt"}))  # killed before step 3's pointer
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = dead.stdout.strip()  # a process that has ended
    stale = [run / f"step-0000003.tmp.{pid}.safetensors", run / f".step-0000003.tmp.{pid}"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    assert run_main(main, ["--resume", str(run), "--quiet"]) == 0
    assert [r["step"] for r in _log(run) if "loss" in r] == [1, 2, 3, 4]  # steps 3 and 4 logged once
    assert not any(path.exists() for path in stale)


def test_a_damaged_checkpoint_is_one_line(clean_folder, tmp_path, capsys):
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 2, "checkpoint_every": 2})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0
    state = run / "step-0000002.state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    assert run_main(main, ["--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot read checkpoint {state}: ") and "\n" not in err
    (run / "last.json").write_text("{")
    assert run_main(main, ["--resume", str(run), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {run / 'last.json'} is damaged: it names no checkpoint"
    assert run_main(main, ["--config", str(config), "--until", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --until must be >= 1"


def test_sigterm_ends_a_run_with_a_checkpoint(clean_folder, tmp_path):
    # A job scheduler's stop (or Ctrl-C) ends the run after the step under way, checkpointed: nothing is lost.
    import signal
    import time

    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 10_000, "checkpoint_every": 5000,
                                                                       "val_every": 5000})
    job = subprocess.Popen([sys.executable, "-m", "training.train", "--config", str(config), "--quiet"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "log.jsonl").is_file() or sum("loss" in line for line in
                                                         (run / "log.jsonl").read_text().splitlines()) < 3:
            assert time.monotonic() < deadline and job.poll() is None, job.communicate()
            time.sleep(0.2)
        job.send_signal(signal.SIGTERM)
        out, err = job.communicate(timeout=120)
    finally:
        job.kill()
    step = json.loads((run / "last.json").read_text())["step"]
    assert job.returncode == 130 and step >= 3, err
    assert f"interrupted: checkpoint at step {step} in {run}" in err and "Traceback" not in err
    assert max(r["step"] for r in _log(run) if "loss" in r) == step


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_while_torch_loads_ends_the_run_before_it_trains(clean_folder, tmp_path, sig):
    # torch's import swallowed a Ctrl-C, and the run went on to train for hours.
    import signal
    import time

    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 10_000})
    job = subprocess.Popen([sys.executable, "-m", "training.train", "--config", str(config), "--quiet"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60  # (loading torch takes seconds: its library is mapped early in it)
        while job.poll() is None and time.monotonic() < deadline and \
                "libtorch" not in Path(f"/proc/{job.pid}/maps").read_text():
            time.sleep(0.005)
        job.send_signal(getattr(signal, sig))
        out, err = job.communicate(timeout=60)
    finally:
        job.kill()
    assert (job.returncode, err) == (130, "interrupted\n")
    assert not run.exists()


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "training.train", "--resume", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: no checkpoint in") and "Traceback" not in done.stderr


@pytest.mark.cuda
def test_cuda_run_with_fp16_autocast(clean_folder, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "run",
                          train={"steps": 4, "device": "cuda", "amp": True, "val_every": 4, "checkpoint_every": 4})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0
    log = _log(tmp_path / "run")
    assert log[0]["device"].startswith("cuda") and all(math.isfinite(r["loss"]) for r in log if "loss" in r)


def _stop_during_step(monkeypatch, step: int) -> None:
    """SIGTERM to this process while step ``step`` is under way, as a job scheduler sends it."""
    import os
    import signal

    from training.trainer import Trainer

    train_step = Trainer.train_step

    def stopped(self):
        if self.step == step - 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return train_step(self)

    monkeypatch.setattr(Trainer, "train_step", stopped)


def test_the_interrupted_message_continues_to_the_same_stop(clean_folder, tmp_path, capsys, monkeypatch):
    # A recipe stage stops at --until 4 of a 8-step schedule; stopped at step 2, the command it prints must stop at
    # 4 too, or it would prune the step-4 checkpoint the next stage starts from.
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 8, "checkpoint_every": 2})
    with monkeypatch.context() as patch:
        _stop_during_step(patch, 2)
        assert run_main(main, ["--config", str(config), "--until", "4", "--quiet"]) == 130
    err = capsys.readouterr().err
    command = err[err.index("python -m training.train"):].split(" continues")[0].split()
    assert command[:3] == ["python", "-m", "training.train"]
    assert run_main(main, [*command[3:], "--quiet"]) == 0
    assert json.loads((run / "last.json").read_text())["step"] == 4 and (run / "step-0000004.safetensors").is_file()


def test_a_validation_a_stop_skipped_is_done_on_resume(clean_folder, tmp_path, monkeypatch):
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 6, "checkpoint_every": 2,
                                                                       "val_every": 2})
    for stop, validated in ((2, [0]), (3, [0, 2])):  # a validation step, then one that is not
        with monkeypatch.context() as patch:
            _stop_during_step(patch, stop)
            assert run_main(main, ["--config", str(config), "--quiet"]) == 130
        assert [r["step"] for r in _log(run) if "val_psnr" in r] == validated
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0
    assert [r["step"] for r in _log(run) if "val_psnr" in r] == [0, 2, 4, 6]  # as a run never stopped
    # stopped at the run's last step: the run that follows only validates it, once
    run2 = tmp_path / "run2"
    config2 = write_config(tmp_path / "c2.toml", clean_folder, run2, train={"steps": 2, "val_every": 2})
    with monkeypatch.context() as patch:
        _stop_during_step(patch, 2)
        assert run_main(main, ["--config", str(config2), "--quiet"]) == 130
    for _ in range(2):
        assert run_main(main, ["--config", str(config2), "--quiet"]) == 0
    assert [r["step"] for r in _log(run2) if "val_psnr" in r] == [0, 2]


def test_the_evaluations_photos_never_train(evaluation_data, tmp_path, capsys):
    # data.val_fraction 0 holds nothing out for validation, but the evaluation's held-out scene_16 still stays out
    run = tmp_path / "run"
    clean = evaluation_data / "clean"
    config = write_config(tmp_path / "c.toml", clean, run, data={"val_fraction": 0.0}, train={"steps": 1})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0
    assert _log(run)[0]["train_images"] == 2
    # nor do the evaluation's real hazy photos (or a copy) as real haze
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "mine.jpg").write_bytes((evaluation_data / "real_hazy" / "fog.jpg").read_bytes())
    for real in (evaluation_data / "real_hazy", copy):
        config = write_config(tmp_path / "r.toml", clean, tmp_path / "r", data={"real_hazy": str(real)},
                              train={"steps": 1, "real_batch": 1}, loss={"fog_left": 0.1})
        assert run_main(main, ["--config", str(config), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: data.real_hazy: ") and "the evaluation's photo" in err and "\n" not in err


def test_a_resized_recoloured_copy_of_an_evaluation_photo_is_left_out(evaluation_data, tmp_path, capsys):
    # real_hazy_train/web_29.jpg is real_hazy/stadium_input.png squashed to 512x512, its red track made blue: a
    # check of the files' bytes let it train
    photo = cv2.cvtColor(scene(100, 384, 512), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(evaluation_data / "real_hazy" / "fog.jpg"), photo)
    real = tmp_path / "real"
    write_jpeg(real / "other.jpg", 101)
    cv2.imwrite(str(real / "copy.jpg"), cv2.resize(photo, (300, 300))[..., ::-1])
    config = write_config(tmp_path / "r.toml", evaluation_data / "clean", tmp_path / "r",
                          data={"real_hazy": str(real)}, train={"steps": 1, "real_batch": 1}, loss={"fog_left": 0.1})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0
    note = f"data.real_hazy: left out {real / 'copy.jpg'}: a copy of the evaluation's photo "
    assert note in capsys.readouterr().err
    left_out = _log(tmp_path / "r")[0]["near_copies"]
    assert len(left_out) == 1 and left_out[0].startswith(note)


def test_the_evaluations_photos_are_found_from_any_folder(shared_data, tmp_path, monkeypatch):
    """The evaluation's own photos, copied under another name and trained from another working folder: refused
    (they were looked for at ../shared/data from the working folder only)."""
    from training.cli import UsageError
    from training.evaldata import refuse_evaluation_photos

    photo = sorted((shared_data / "real_hazy").iterdir())[0]
    copy = tmp_path / "mine.jpg"
    copy.write_bytes(photo.read_bytes())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="is the evaluation's photo"):
        refuse_evaluation_photos({"data.clean": [copy]})



def test_a_mac_s_hidden_metadata_files_are_not_training_photos(clean_folder, tmp_path):
    # A folder copied from a Mac onto another disk has a ._NAME.jpg beside each photo (its metadata): the run stopped
    # at the first, "cannot decode image: ._scene_00.jpg"
    (clean_folder / "._scene_00.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (clean_folder / ".hidden.png").write_bytes(b"not a picture")
    assert all(not p.name.startswith(".") for p in list_images(clean_folder))
    config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "run", train={"steps": 2})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0


def test_a_loss_that_diverges_is_one_line_with_what_to_change(clean_folder, tmp_path, capsys, monkeypatch):
    from training.trainer import Trainer

    step = Trainer.train_step

    def diverging(self):
        if self.step == 1:  # (as a learning rate far too high does, in a few steps)
            for p in self.model.parameters():
                p.data.fill_(float("nan"))
        return step(self)
    monkeypatch.setattr(Trainer, "train_step", diverging)
    config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "run", train={"steps": 4})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the loss is nan at step 1 (") and "a learning rate too high" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_ctrl_c_twice_while_the_checkpoint_is_written_keeps_it(clean_folder, tmp_path, capsys, monkeypatch):
    # Ctrl-C, then Ctrl-C again while the run's checkpoint was written (under a second): "interrupted", and the run
    # had no checkpoint at all
    import os
    import signal

    import training.trainer as trainer_module

    write = trainer_module.save_checkpoint

    def pressed_twice(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return write(*args, **kwargs)
    monkeypatch.setattr(trainer_module, "save_checkpoint", pressed_twice)
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 6, "checkpoint_every": 2})
    code = run_main(main, ["--config", str(config), "--quiet"])
    err = capsys.readouterr().err
    assert code == 130 and "the checkpoint is being written: the run ends once it is" in err, err
    assert (run / "step-0000002.safetensors").is_file() and json.loads((run / "last.json").read_text())


def test_photos_smaller_than_the_crop_are_said_to_be_upscaled(clean_folder, tmp_path, capsys):
    # 40x50 photos with 64 px crops trained without a word, on targets upscaled 1.6 times (blurred)
    for path in list(clean_folder.iterdir())[:2]:
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (50, 40)))
    config = write_config(tmp_path / "c.toml", clean_folder, tmp_path / "run", train={"steps": 2})
    assert run_main(main, ["--config", str(config), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "note: 2 of the " in err and "photos (e.g. " in err and "are upscaled, blurred" in err, err


def test_a_planned_stop_says_how_to_go_on_and_a_resume_says_where_it_starts(clean_folder, tmp_path, capsys):
    # --until (and --minutes) ended with "done: step 2, ..." as a finished run does, and --resume said nothing
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 4, "checkpoint_every": 2})
    assert run_main(main, ["--config", str(config), "--until", "2", "--quiet"]) == 0
    said = capsys.readouterr()
    assert said.out.startswith("done: step 2 of 4, ") and \
        said.err.strip() == f"python -m training.train --resume {run} goes on to step 4", said
    assert run_main(main, ["--resume", str(run), "--quiet"]) == 0
    said = capsys.readouterr()
    assert said.err.strip() == f"resuming the run in {run} from its checkpoint at step 2", said
    assert said.out.startswith("done: step 4, ")

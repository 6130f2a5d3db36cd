"""Models behind the one interface: KA_Net variants load our weights, refuse wrong ones, and say where to get them."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import kanet
import pytest
import torch

from streamdehaze.engine import Engine, compile_model
from streamdehaze.errors import UsageError
from streamdehaze.guided import keep_shadows, smooth_transform
from streamdehaze.models import MODEL_NAMES, create_model


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "t.safetensors"
    kanet.save_weights(kanet.create_model("kanet-t", seed=3), path)
    return path


def test_names():
    assert set(MODEL_NAMES) == {"auto", "dcp", "kanet", "kanet-w256", "kanet-s", "kanet-t"}
    # the command line's list (in defaults.py, light) is kanet's, whatever kanet adds
    assert MODEL_NAMES == ("auto", "dcp", *kanet.MODEL_NAMES)


def test_kanet_t_runs_through_the_engine(tiny_weights):
    model = create_model("kanet-t", tiny_weights)
    engine = Engine(model, "cpu")
    # the CPU default: low resolution plus guided upsampling; the network sees 192 with its border
    assert engine.infer_size == 192 - 2 * kanet.inference.BORDER
    # ... on a GPU too (only the device's name is read; no GPU needed)
    assert model.infer_size_for(torch.device("cuda")) == engine.infer_size
    x = torch.rand(2, 3, 97, 131, generator=torch.Generator().manual_seed(0))
    out = engine.process_rgb(x)
    assert out.shape == x.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    # Same weights straight through kanet in fp32, the model's precision on a CPU, with the engine's smoothing and
    # shadow floor: the same frame. fp32 rounds differently in the engine's channels-last convolutions (up to 2.4e-5
    # seen through this random model's gains of up to 7); bf16 autocast is off by 1.8e-3.
    with torch.inference_mode():
        gain, offset = smooth_transform(x, *kanet.coefficients(kanet.load_weights(tiny_weights).eval(), x))
        ref = kanet.transform.apply(x, gain, keep_shadows(x, gain, offset)).clamp(0, 1)
    assert torch.allclose(out, ref, atol=2e-4)


def test_kanet_t_transform_is_never_stretched_past_its_training_scale(tiny_weights):
    model = create_model("kanet-t", tiny_weights)
    seen = []
    predict = model.coefficients
    model.coefficients = lambda small: seen.append(tuple(small.shape[-2:])) or predict(small)
    engine = Engine(model, "cpu")
    out = engine.process_rgb(torch.rand(1, 3, 1080, 1920))
    assert out.shape == (1, 3, 1080, 1920) and seen == [(270, 480)]  # 4x at most: 270, not the default 176
    assert engine.infer_shape(720, 1280) == (180, 320)
    assert engine.infer_shape(540, 960) == (176, 313)  # the default where 4x is not reached
    # an explicit size is the user's: kept as given
    assert Engine(model, "cpu", infer_size=176).infer_shape(1080, 1920) == (176, 313)


def test_kanet_video_cli(tiny_weights, make_video, probe, run_cli, tmp_path):
    src = make_video(frames=4, width=96, height=64, audio=True)
    out = tmp_path / "k.mp4"
    code, err = run_cli(src, out, "--model", "kanet-t", "--weights", tiny_weights, "--quiet")
    assert code == 0, err
    a, b = probe(src), probe(out)
    assert b["times"] == a["times"] and b["audio"] == a["audio"]


def test_missing_weights_say_where_to_get_them(make_video, run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr("streamdehaze.models.kanet_model.WEIGHTS_DIR", tmp_path / "none")
    code, err = run_cli(make_video(frames=2), tmp_path / "o.mp4", "--model", "kanet")
    assert code == 2 and "no weights for --model kanet" in err and "kanet.convert" in err and "training.train" in err
    assert len(err.strip().splitlines()) == 1


def test_wrong_configuration_is_refused(tiny_weights, make_video, run_cli, tmp_path):
    code, err = run_cli(make_video(frames=2), tmp_path / "o.mp4", "--model", "kanet-s", "--weights", tiny_weights)
    assert code == 2 and "holds kanet-t weights" in err


def test_a_named_configuration_with_the_image_output_is_still_that_configuration(tmp_path):
    # what stages 1-4 of the kanet-t recipe write: kanet-t with the image output (the trainer's model.output)
    import dataclasses

    net = kanet.KANet(dataclasses.replace(kanet.CONFIGS["kanet-t"], output="image"), name="kanet-t")
    path = kanet.save_weights(net, tmp_path / "image.safetensors")
    with pytest.raises(UsageError, match="image.safetensors holds kanet-t weights, not kanet-s"):
        create_model("kanet-s", path)
    model = create_model("kanet-t", path)
    assert model.name == "kanet-t" and not model.net.predicts_coefficients


def test_unreadable_weights(make_video, run_cli, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    code, err = run_cli(make_video(frames=2), tmp_path / "o.mp4", "--model", "kanet-t", "--weights", bad)
    assert code == 2 and "cannot load" in err and "Traceback" not in err


def test_auto_is_dcp_without_shipped_weights(monkeypatch, tmp_path):
    monkeypatch.setattr("streamdehaze.models.kanet_model.WEIGHTS_DIR", tmp_path / "none")
    assert create_model("auto", device=torch.device("cpu")).name == "dcp"


def test_auto_prefers_shipped_kanet(monkeypatch, tmp_path, tiny_weights):
    shipped = tmp_path / "weights"
    shipped.mkdir()
    (shipped / "kanet-t.safetensors").write_bytes(tiny_weights.read_bytes())
    monkeypatch.setattr("streamdehaze.models.kanet_model.WEIGHTS_DIR", shipped)
    model = create_model("auto", device=torch.device("cpu"))
    assert model.name == "kanet-t"
    assert create_model("auto", tiny_weights).name == "kanet-t"  # the file says which configuration


@pytest.mark.parametrize("shipped", [False, True])
def test_default_command_runs_the_shipped_model_offline(monkeypatch, tmp_path, tiny_weights, make_video, run_cli,
                                                       shipped):
    folder = tmp_path / "weights"
    folder.mkdir()
    if shipped:
        (folder / "kanet-t.safetensors").write_bytes(tiny_weights.read_bytes())
    monkeypatch.setattr("streamdehaze.models.kanet_model.WEIGHTS_DIR", folder)

    def no_network(*args, **kwargs):
        raise AssertionError("the default command tried to open a network socket")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    src, stats = make_video(frames=3), tmp_path / "stats.json"
    code, err = run_cli(src, tmp_path / "o.mp4", "--device", "cpu", "--stats-json", stats)
    name = "kanet-t" if shipped else "dcp"
    assert code == 0 and json.loads(stats.read_text())["model"] == name and f") with {name} -> " in err


def test_compiled_model_gives_the_eager_frames(monkeypatch):
    if not any(shutil.which(c) for c in ("g++", "clang++")):
        pytest.skip("no C++ compiler for torch.compile on CPU")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 3, 3, padding=1), torch.nn.Sigmoid()).eval()
    x = torch.rand(3, 3, 48, 64)
    eager = Engine(net, "cpu", infer_size=None).process_rgb(x)
    engine = Engine(net, "cpu", infer_size=None, compile=True)
    assert net._compiled_call_impl is not None  # compiled in place
    assert torch.allclose(engine.process_rgb(x), eager, atol=1e-5)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UsageError, match="--compile on CPU needs a C\\+\\+ compiler"):
        Engine(net, "cpu", compile=True)


def test_compile_on_cuda_asks_for_a_c_compiler_first(monkeypatch):
    """Triton compiles its kernel launchers with the C compiler: without one, --compile on CUDA is refused before
    the model is touched (checked without a GPU: the check comes before any CUDA work)."""
    net = torch.nn.Conv2d(3, 3, 1)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UsageError, match="--compile on CUDA needs a C compiler"):
        compile_model(net, torch.device("cuda"))
    assert net._compiled_call_impl is None


def test_the_summary_names_the_configuration_a_weight_file_holds(make_video, run_cli, tmp_path):
    """``--weights FILE`` with ``--model auto``: the summary and the statistics name what ran, not "auto"."""
    weights = Path(__file__).resolve().parents[2] / "streamdehaze" / "weights" / "kanet-t.safetensors"
    stats = tmp_path / "s.json"
    code, err = run_cli(make_video(frames=2), tmp_path / "o.mp4", "--weights", weights, "--stats-json", stats)
    assert code == 0 and " with kanet-t -> " in err, err
    assert json.loads(stats.read_text())["model"] == "kanet-t"

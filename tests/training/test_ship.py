"""Shipping a checkpoint into the package: fp16 copy, provenance, size budget, and the package picks it up."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import kanet
from training.cli import UsageError, run_main
from training.ship import main, ship


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return kanet.save_weights(kanet.create_model("kanet-t").eval(), tmp_path / "step-0000100.safetensors")


def test_ship_writes_fp16_copy_the_package_uses(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    dest = tmp_path / "weights"
    target = ship(checkpoint, dest)
    assert target == dest / "kanet-t.safetensors" and sorted(p.name for p in dest.iterdir()) == [target.name]
    with safe_open(str(target), framework="pt") as f:
        assert f.metadata()["source"] == str(checkpoint)
        assert f.get_tensor("head.out.weight").dtype == torch.float16
    assert target.stat().st_size < checkpoint.stat().st_size * 0.6  # fp16 halves all but the fp32 RFF draw

    from streamdehaze.models import create_model, default_model

    monkeypatch.setattr("streamdehaze.models.kanet_model.WEIGHTS_DIR", dest)
    assert default_model(torch.device("cpu")) == "kanet-t"
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        shipped = create_model("auto").net(x)[0]
        original = kanet.load_weights(checkpoint)(x)[0]
    assert (shipped - original).abs().max() < 2e-3


def test_an_image_output_body_ships_as_its_configuration(tmp_path: Path) -> None:
    # the module's first example: a stage-2 checkpoint of the kanet-t recipe, kanet-t with the image output
    import dataclasses

    torch.manual_seed(0)
    net = kanet.KANet(dataclasses.replace(kanet.CONFIGS["kanet-t"], output="image"), name="kanet-t").eval()
    target = ship(kanet.save_weights(net, tmp_path / "step-0006000.safetensors"), tmp_path / "weights")
    shipped = kanet.load_weights(target)
    assert target.name == "kanet-t.safetensors" and shipped.config_name == "kanet-t"
    assert shipped.config.output == "image"


def test_over_budget_replaces_nothing(checkpoint: Path, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / "kanet-t.safetensors").write_bytes(b"older shipped weights")
    with pytest.raises(UsageError, match=r"kanet-t in fp16 is \d+\.\d MB, over the 0 MB"):
        ship(checkpoint, dest, max_bytes=1000)
    assert [p.name for p in dest.iterdir()] == ["kanet-t.safetensors"]
    assert (dest / "kanet-t.safetensors").read_bytes() == b"older shipped weights"


def test_bad_input_is_one_line(tmp_path: Path, capsys) -> None:
    assert run_main(main, [str(tmp_path / "missing.safetensors")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.safetensors'}: no such file"
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not weights")
    assert run_main(main, [str(junk), "--dest", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {junk}: not a readable safetensors file") and err.count("\n") == 1


def test_a_run_folder_ships_its_newest_checkpoint(clean_folder: Path, tmp_path: Path, capsys) -> None:
    from training.train import main as train

    from .test_train import write_config

    run = tmp_path / "run"
    config = write_config(tmp_path / "c.toml", clean_folder, run, train={"steps": 50, "checkpoint_every": 2})
    # --minutes stops training at the first step past the time, checkpointed (here: the first step)
    assert run_main(train, ["--config", str(config), "--minutes", "0.0001", "--quiet"]) == 0
    assert [p.name for p in sorted(run.glob("step-*.safetensors"))] == ["step-0000001.safetensors"]
    assert run_main(main, [str(run), "--dest", str(tmp_path / "w")]) == 0
    assert (tmp_path / "w" / "kanet-t.safetensors").is_file()
    assert str(run / "step-0000001.safetensors") in capsys.readouterr().out


def test_several_checkpoints_ship_as_their_average(checkpoint: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(1)
    second = kanet.save_weights(kanet.create_model("kanet-t").eval(), tmp_path / "other.safetensors")
    assert run_main(main, [str(checkpoint), str(second), "--dest", str(tmp_path / "w")]) == 0
    target = tmp_path / "w" / "kanet-t.safetensors"
    with safe_open(str(target), framework="pt") as f:
        assert f.metadata()["source"] == f"{checkpoint} + {second}"
    a, b, shipped = (kanet.load_weights(p).state_dict() for p in (checkpoint, second, target))
    weight = "head.out.weight"
    assert not torch.equal(a[weight], b[weight])
    assert torch.allclose(shipped[weight], (a[weight] + b[weight]) / 2, atol=1e-3)
    assert f"{checkpoint} + {second} -> {target}" in capsys.readouterr().out


def test_only_one_configuration_averages(checkpoint: Path, tmp_path: Path, capsys) -> None:
    small = kanet.save_weights(kanet.create_model("kanet-s").eval(), tmp_path / "small.safetensors")
    assert run_main(main, [str(checkpoint), str(small), "--dest", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err == (f"error: {small}: a different configuration from {checkpoint}; "
                                       "only one can be averaged\n")
    assert not (tmp_path / "w").exists()


def test_only_one_draw_of_the_random_features_averages(checkpoint: Path, tmp_path: Path, capsys) -> None:
    # Two runs of other train.seed values draw other random Fourier features: their average was shipped, a draw of
    # neither (its spread 0.72 of theirs) under the first one's seed
    other = kanet.save_weights(kanet.KANet(kanet.CONFIGS["kanet-t"], seed=1).eval(), tmp_path / "seed1.safetensors")
    assert run_main(main, [str(checkpoint), str(other), "--dest", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err == (f"error: {other}: its bottleneck.mrfe.rff.weight differs from {checkpoint}'s "
                                       "(another train.seed?); only runs of one draw can be averaged\n")
    assert not (tmp_path / "w").exists()


def test_the_package_s_own_weights_are_replaced_only_in_a_checkout(checkpoint: Path, tmp_path: Path, capsys,
                                                                   monkeypatch) -> None:
    """With no --dest, an installed package's weights (no other copy: git keeps a checkout's) were replaced without
    a word, and every later run used the new ones."""
    installed = tmp_path / "site-packages" / "streamdehaze" / "weights"
    installed.mkdir(parents=True)
    (installed / "kanet-t.safetensors").write_bytes(b"the shipped weights")
    monkeypatch.setattr("training.ship.DEST", installed)
    assert run_main(main, [str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: give --dest: with none, the installed package's own weights") and \
        err.count("\n") == 1, err
    assert (installed / "kanet-t.safetensors").read_bytes() == b"the shipped weights"
    (tmp_path / "site-packages" / ".git").mkdir()  # a checkout: git keeps what it replaces
    assert run_main(main, [str(checkpoint)]) == 0
    assert (installed / "kanet-t.safetensors").read_bytes() != b"the shipped weights"

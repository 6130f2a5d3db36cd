"""Official checkpoints: key layout vs the manifests, conversion, round trips, refusal of untrusted pickles."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

import kanet
from kanet.convert import main
from kanet.official import (
    CheckpointError, checkpoint_filter_fn, detect_config_name, to_official_state_dict,
)

from .conftest import randomise_batchnorm


@pytest.mark.parametrize("name,width", [("kanet", 320), ("kanet-w256", 256)])
def test_official_layout_matches_manifest(manifest, name: str, width: int) -> None:
    expected = manifest(width)
    assert len(expected) == 481
    model = kanet.create_model(name)
    official = to_official_state_dict(model)
    assert {k: tuple(v.shape) for k, v in official.items()} == expected

    # A checkpoint shaped like the manifest, each tensor filled with its own index, DataParallel-prefixed.
    fake = {"model": {"module." + k: torch.full(shape, float(i)) if shape else torch.tensor(i)
                      for i, (k, shape) in enumerate(expected.items())}, "epoch": 1}
    assert detect_config_name({k.removeprefix("module."): v for k, v in fake["model"].items()}) == name
    converted, missing, unexpected = checkpoint_filter_fn(fake, model)
    assert len(converted) == 481 and missing == [] and unexpected == []
    model.load_state_dict(converted, strict=False)
    back = to_official_state_dict(model)
    for i, key in enumerate(expected):  # every value landed where its name says
        assert back[key].flatten()[0].item() == i, key


@pytest.fixture(scope="module")
def paper_checkpoint(tmp_path_factory) -> tuple[Path, kanet.KANet]:
    """A random paper-size model and the same weights saved in the official layout."""
    torch.manual_seed(0)
    model = kanet.create_model("kanet", seed=5)
    randomise_batchnorm(model)
    model.eval()
    path = tmp_path_factory.mktemp("official") / "ots_train_Dehaze.pk"
    sd = {"module." + k: v for k, v in to_official_state_dict(model).items()}
    torch.save({"model": sd, "epoch": 3}, path)
    return path, model


def test_official_checkpoint_round_trip(paper_checkpoint, tmp_path: Path, capsys) -> None:
    path, model = paper_checkpoint
    x = torch.rand(1, 3, 64, 80) * 2 - 1
    with torch.no_grad():
        ref = model(x)
        loaded = kanet.load_official(path, seed=5)
        assert loaded.config_name == "kanet" and not loaded.training
        out = loaded(x)
        assert torch.equal(ref[0], out[0]) and torch.equal(ref[1], out[1])

        assert main([str(path), str(tmp_path / "no-such-dir" / "kanet.safetensors")]) == 2
        target = tmp_path / "kanet.safetensors"
        assert main([str(path), str(target), "--seed", "5"]) == 0
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 2
        assert err[0] == f"error: no folder {tmp_path / 'no-such-dir'} to write kanet.safetensors into"
        assert "kanet" in err[1]
        again = kanet.load_weights(target)
        assert again.config_name == "kanet"
        assert torch.equal(again(x)[0], ref[0])


def test_missing_and_unexpected_keys_are_named(paper_checkpoint, tmp_path: Path, capsys) -> None:
    path, _ = paper_checkpoint
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model"]["module.Tdecoder.norm1.weight"]
    ckpt["model"]["module.extra_head.weight"] = torch.zeros(3)
    bad = tmp_path / "bad.pk"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): Tdecoder\.norm1\.weight.*extra_head\.weight"):
        kanet.load_official(bad)
    with pytest.warns(UserWarning, match="Tdecoder.norm1.weight"):
        model = kanet.load_official(bad, strict=False)
    assert isinstance(model, kanet.KANet)

    out = tmp_path / "out.safetensors"
    assert main([str(bad), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Tdecoder.norm1.weight" in err and "extra_head.weight" in err
    assert not out.exists()


def test_untrusted_pickle_is_refused(paper_checkpoint, tmp_path: Path, capsys) -> None:
    path, model = paper_checkpoint
    ckpt = torch.load(path, weights_only=True)
    ckpt["args"] = argparse.Namespace(lr=1e-4)  # an arbitrary Python object: needs full unpickling
    risky = tmp_path / "risky.pk"
    torch.save(ckpt, risky)
    with pytest.raises(CheckpointError, match=r"\(argparse\.Namespace\).*trust"):
        kanet.load_official(risky)
    out = tmp_path / "out.safetensors"
    assert main([str(risky), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--trust" in err and not out.exists()

    x = torch.rand(1, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        assert torch.equal(kanet.load_official(risky, trust=True, seed=5)(x)[0], model(x)[0])


def test_cli_bad_inputs_give_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.safetensors"
    ours = kanet.save_weights(kanet.create_model("kanet-t"), tmp_path / "ours.safetensors")
    assert main([str(ours), str(out)]) == 2  # was: "not a KA_Net checkpoint: 'Tencoder...' is missing", no file named
    assert capsys.readouterr().err == f"error: {ours} is a .safetensors weights file already: give it to --weights " \
                                      "as it is\n"
    assert main([str(tmp_path / "nope.pk"), str(out)]) == 2
    assert main([str(tmp_path), str(out)]) == 2
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    assert main([str(text), str(out)]) == 1
    unrelated = tmp_path / "other.pt"
    torch.save({"model": {"conv.weight": torch.zeros(2)}}, unrelated)
    assert main([str(unrelated), str(out)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert "no such file" in lines[0] and "is a folder: give a file" in lines[1]
    assert "not a readable PyTorch checkpoint" in lines[2] and "not a KA_Net checkpoint" in lines[3]
    assert not out.exists()


def test_the_input_is_never_the_output(paper_checkpoint, tmp_path: Path, capsys) -> None:
    path, _ = paper_checkpoint
    data = path.read_bytes()
    link = tmp_path / "link.pth"
    link.symlink_to(path)
    for output in (path, link, tmp_path):
        assert main([str(path), str(output)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"error: {path} is the input: give another output name",
                     f"error: {link} is the input: give another output name",
                     f"error: {tmp_path} is a folder: give a file name"]
    assert path.read_bytes() == data


def test_unknown_width_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="width 300"):
        detect_config_name({"Tencoder.patch_embed3.proj.weight": torch.zeros(300, 128, 3, 3)})

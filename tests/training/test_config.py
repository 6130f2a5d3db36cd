"""Config files: the shipped examples parse, types and keys are checked, TOML and JSON agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import UsageError
from training.config import Config, config_from_dict, config_to_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")) + sorted(CONFIGS.glob("*.json")),
                         ids=lambda p: p.name)
def test_example_configs_parse(path):
    config = load_config(path)
    assert config.model.name.startswith("kanet") and config.train.crop % 16 == 0


def test_cpu_config_trains_without_the_vgg_term():
    config = load_config(CONFIGS / "kanet-t-cpu.toml")
    assert config.model.name == "kanet-t" and config.loss.contrastive == 0 and config.train.threads == 1


def test_defaults_follow_the_issue():
    config = Config()
    assert (config.train.optimizer, config.train.lr, config.train.schedule) == ("adam", 1e-4, "cosine")
    assert config.loss.contrastive == 0.04 and config.loss.reweight


def test_round_trip_and_json(tmp_path):
    raw = {"train": {"steps": 7, "betas": [0.8, 0.9]}, "haze": {"thickness": [0.5, 1.5]}}
    config = config_from_dict(raw)
    assert config.train.steps == 7 and config.train.betas == (0.8, 0.9) and config.haze.thickness == (0.5, 1.5)
    assert config_from_dict(config_to_dict(config)) == config
    (tmp_path / "c.json").write_text(json.dumps(raw))
    assert load_config(tmp_path / "c.json") == config


@pytest.mark.parametrize("raw, message", [
    ({"trian": {}}, "unknown section [trian]"),
    ({"loss": {"pixel": "one"}}, "loss.pixel must be a number"),
    ({"loss": {"reweight": 1}}, "loss.reweight must be true or false"),
    ({"haze": {"thickness": [1.0]}}, "haze.thickness must be a list of 2 numbers"),
    ({"train": 3}, "[train] must be a table"),
])
def test_bad_settings_name_the_key(raw, message):
    with pytest.raises(UsageError) as info:
        config_from_dict(raw)
    assert message in str(info.value)


def test_unparsable_file(tmp_path):
    (tmp_path / "bad.toml").write_text("[train\nsteps = 3")
    with pytest.raises(UsageError, match="cannot parse"):
        load_config(tmp_path / "bad.toml")


@pytest.mark.parametrize("name", ["training/configs/kanet-t-cpu.toml", "kanet-t-cpu.toml"])
def test_a_shipped_config_is_found_by_name_from_any_folder(tmp_path, monkeypatch, capsys, name):
    """An installed package's configs are in site-packages: the README's path finds them from any folder."""
    monkeypatch.chdir(tmp_path)
    assert load_config(name) == load_config(CONFIGS / "kanet-t-cpu.toml")
    err = capsys.readouterr().err
    assert f"reading the shipped one, {CONFIGS / 'kanet-t-cpu.toml'}" in err and err.count("\n") == 1


def test_a_file_of_that_name_here_comes_first(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "training" / "configs").mkdir(parents=True)
    (tmp_path / "training" / "configs" / "kanet-t-cpu.toml").write_text("[train]\nsteps = 7\n")
    assert load_config("training/configs/kanet-t-cpu.toml").train.steps == 7
    for missing in ("training/configs/nosuch.toml", "elsewhere/kanet-t-cpu.toml"):
        with pytest.raises(UsageError, match=f"config file not found: {missing}"):
            load_config(missing)
    assert capsys.readouterr().err == ""

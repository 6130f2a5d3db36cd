"""Training configuration: typed sections read from a TOML or JSON file, with one-line errors for bad input.

Sections: ``[data]``, ``[model]``, ``[train]``, ``[loss]``,
``[reweight]`` (:class:`training.reweighting.ReweightConfig`),
``[haze]`` (:class:`training.synthesis.HazeConfig` ranges) and ``[motion]`` (:class:`training.clips.MotionConfig`).
Every key is optional; missing keys take the defaults below. Relative paths are relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from training.cli import UsageError
from training.clips import MotionConfig
from training.reweighting import ReweightConfig
from training.synthesis import HazeConfig

__all__ = ["DataConfig", "ModelConfig", "TrainConfig", "LossConfig", "Config", "load_config", "config_to_dict"]


@dataclass(frozen=True)
class DataConfig:
    clean: str = "../shared/data/clean"  # folder of clean photos for haze synthesis
    depth: str = ""  # optional folder of depth maps named like the clean photos (larger = farther)
    paired_hazy: str = ""  # optional folder of real hazy photos ...
    paired_clean: str = ""  # ... and their clean references (same file stems)
    paired_fraction: float = 0.0  # share of steps that train on the real pairs
    cache_short_side: int = 384  # images are decoded once at this short side and kept in memory
    val_fraction: float = 0.05  # files held out for validation (by a hash of the file name)
    val_crop: int = 256  # validation images: centre crops of this side
    val_limit: int = 0  # at most this many validation images (0: all)
    max_fog: float = 0.0  # drop training photos whose FADE fog density is above this (0: keep all; needs fade-python)
    real_hazy: str = ""  # optional folder of unlabelled real hazy photos for the real-haze terms (loss.fog_left,
    #                      loss.airlight); never an evaluation folder


@dataclass(frozen=True)
class ModelConfig:
    name: str = "kanet-t"  # kanet.create_model name
    output: str = ""  # "image" or "coefficients" (kanet.transform): overrides the configuration's own output
    rff: str = "fixed"
    init: str = ""  # optional weights (kanet.save_weights file) to start from; an image-output body also starts a
    #                 coefficient model (its output layer then starts as the identity transform)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20000
    batch: int = 8  # clips per step; each clip has clip_frames frames
    crop: int = 160  # side the network sees, a multiple of the model's size_multiple
    scale: tuple[float, float] = (1.0, 1.0)  # coefficient models: frames are scale x crop at full resolution (drawn
    #                                          per batch), shrunk to crop for the network, dehazed and scored full size
    real_batch: int = 0  # real hazy photos per step (data.real_hazy), at the same sizes
    loss_crop: int = 0  # score a random window of this side of each full-resolution output (0: all of it; CPU time)
    clip_frames: int = 2  # frames per synthetic clip (1 disables the temporal terms)
    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-4
    lr_min: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max gradient norm, 0: off
    amp: bool = False  # bf16 autocast on CPU, fp16 with loss scaling on CUDA
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads, 0: leave torch's default
    seed: int = 0
    val_every: int = 500
    checkpoint_every: int = 500
    keep_every: int = 0  # also keep a numbered checkpoint every N steps (0: only the last)
    log_every: int = 50
    out: str = "runs/train"


@dataclass(frozen=True)
class LossConfig:
    reconstruction: str = "l1"  # l1 | charbonnier
    pixel: float = 1.0  # weight of the reconstruction term
    msssim: float = 0.5  # weight of 1 - MS-SSIM
    msssim_scales: int = 0  # 0: as many as the crop allows (at most 5)
    contrastive: float = 0.04  # weight of the Gaussian perceptual contrastive term (needs VGG19 weights)
    contrastive_sigma: float = 1.0
    vgg_weights: str = ""  # default: torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth
    temporal: float = 0.5  # short-term warping loss between consecutive outputs
    temporal_long: float = 0.0  # long-term: every frame against the first
    reweight: bool = True  # StableNet sample weights on the per-image terms
    fog_left: float = 0.0  # real haze: fog left beyond what the dark channel prior removes (losses/real.py)
    airlight: float = 0.0  # real haze: change the transform makes to the fog's own colour (grey fog stays grey)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    reweight: ReweightConfig = field(default_factory=ReweightConfig)
    haze: HazeConfig = field(default_factory=HazeConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)


def _coerce(value: object, kind: object, where: str) -> object:
    """Check ``value`` against a field type (int, float, bool, str, or a tuple of floats)."""
    origin = typing.get_origin(kind)
    if origin is tuple:
        args = typing.get_args(kind)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise UsageError(f"{where} must be a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if kind is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{where} must be a number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where} must be an integer, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise UsageError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {kind}")


def _section(cls: type, values: object, name: str) -> object:
    if not isinstance(values, dict):
        raise UsageError(f"[{name}] must be a table of settings")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise UsageError(f"unknown setting {name}.{key} (known: {', '.join(sorted(known))})")
    return cls(**{k: _coerce(v, hints[k], f"{name}.{k}") for k, v in values.items()})


def config_from_dict(raw: dict) -> Config:
    """Build a :class:`Config` from nested mappings; ``UsageError`` on unknown sections, keys or bad types."""
    hints = typing.get_type_hints(Config)
    sections = {f.name for f in dataclasses.fields(Config)}
    for name in raw:
        if name not in sections:
            raise UsageError(f"unknown section [{name}] (known: {', '.join(sorted(sections))})")
    return Config(**{name: _section(hints[name], values, name) for name, values in raw.items()})


# The example configs, shipped in the package: an installed one has them in site-packages, not under the cwd.
SHIPPED = Path(__file__).resolve().parent / "configs"


def shipped_config(path: str | Path) -> Path | None:
    """The shipped config that ``path`` names as the README does (``training/configs/NAME``, or just ``NAME``),
    or None."""
    path = Path(path)
    if path.parent not in (Path("."), Path("training", "configs")):
        return None
    shipped = SHIPPED / path.name
    return shipped if shipped.is_file() else None


def load_config(path: str | Path) -> Config:
    """Read a ``.toml`` or ``.json`` config file; where there is no such file, the shipped config of that name."""
    path = Path(path)
    if not path.is_file():
        shipped = shipped_config(path)
        if shipped is None:
            raise UsageError(f"config file not found: {path}")
        print(f"config: {path} is not in {Path.cwd()}; reading the shipped one, {shipped}", file=sys.stderr)
        path = shipped
    try:
        text = path.read_text(encoding="utf-8-sig")  # (a byte-order mark, as Notepad writes one, is no setting)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start} cannot be read): save it as UTF-8") from None
    try:
        raw = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"{path} must hold a table of sections")
    return config_from_dict(raw)


def config_to_dict(config: Config) -> dict:
    """Plain nested dict (JSON-serialisable), the inverse of :func:`config_from_dict`."""
    return json.loads(json.dumps(dataclasses.asdict(config)))

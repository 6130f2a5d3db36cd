"""Our own weight files: safetensors with the configuration in the metadata.

Metadata keys: ``format`` (``"kanet"``), ``config_name``, ``config`` (JSON of ``KANetConfig``), ``rff`` (mode) and
``rff_seed``. Fixed-mode RFF draws are ordinary buffers of the state dict, so they travel with the weights (always
in float32: they are a random draw, not a learned weight, and fp16 would move the cosine phases).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .model import CONFIGS, KANet, KANetConfig

FORMAT = "kanet"
_KEEP_FP32 = ("bottleneck.mrfe.rff.weight", "bottleneck.mrfe.rff.bias")


class WeightsError(ValueError):
    """A weight file that is missing, not ours, or does not fit its own configuration."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def save_weights(model: KANet, path: str | os.PathLike, dtype: torch.dtype | None = None,
                 extra: dict[str, str] | None = None) -> Path:
    """Write ``model``'s state dict (floating tensors cast to ``dtype`` if given) to ``path`` atomically, with
    ``extra`` metadata strings (e.g. where shipped weights came from) next to ours."""
    path = Path(path)
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(torch.float32 if key in _KEEP_FP32 else dtype)
        tensors[key] = value.contiguous().clone()
    metadata = {
        **(extra or {}),
        "format": FORMAT,
        "config_name": model.config_name or "",
        "config": model.config.to_json(),
        "rff": model.rff_mode,
        "rff_seed": str(model.rff_seed),
    }
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        # (written by Python, not by safetensors: a full disk is then an OSError that says so, not an I/O error)
        tmp.write_bytes(save(tensors, metadata=metadata))
        os.chmod(tmp, 0o644)  # readable by every user of an installed package, whatever the umask
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        if _is_torch_checkpoint(path):  # (an official checkpoint, given as it was downloaded)
            raise WeightsError(f"{path}: a PyTorch checkpoint, not a safetensors file: convert it with "
                               f"`python -m kanet.convert {path} OUT.safetensors`") from e
        raise WeightsError(f"{path}: not a readable safetensors file ({_first_line(e)})") from e
    if meta.get("format") != FORMAT or "config" not in meta:
        raise WeightsError(f"{path}: not a KA_Net weight file (no kanet metadata); official checkpoints need "
                           f"`python -m kanet.convert` or kanet.load_official")
    return meta


def _is_torch_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` begins as ``torch.save`` writes: a zip archive, or a pickle (before PyTorch 1.6)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> KANet:
    """Rebuild the configuration recorded in ``path`` and load its weights (float32 model, eval mode)."""
    if not Path(path).is_file():
        raise WeightsError(f"{path}: no such file")
    meta = read_metadata(path)
    try:
        config = KANetConfig.from_json(meta["config"])
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{path}: bad KA_Net config in metadata ({_first_line(e)})") from e
    name = meta.get("config_name") or None
    rff, seed = meta.get("rff", "fixed"), int(meta.get("rff_seed", "0"))
    named = CONFIGS.get(name)
    # The trainer's model.output gives a named network the other output (stages 1-4 of the kanet-t recipe): still
    # that configuration, so its name stays and a --model of another name is refused. Any other difference makes
    # a custom configuration, which the name would misrepresent.
    if named is None or dataclasses.replace(named, output=config.output) != config:
        name = None
    try:
        with torch.random.fork_rng(devices=[]):  # the layers' initial values, replaced below, leave the caller's
            model = KANet(config, rff=rff, seed=seed, name=name)  # random stream where it was
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        result = model.load_state_dict(state, strict=False)
    except (ValueError, RuntimeError) as e:
        raise WeightsError(f"{path}: weights do not fit the recorded config ({_first_line(e)})") from e
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(f"{path}: weights do not fit the recorded config; missing: {result.missing_keys}, "
                           f"unexpected: {result.unexpected_keys}")
    return model.to(map_location).eval()

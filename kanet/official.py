"""Official KA_Net checkpoints -> our model.

Official files (``torch.save`` of ``{'model': state_dict, ...}`` from a DataParallel model, keys ``module.*``) are
read with ``torch.load(weights_only=True)``; a file that needs full unpickling is refused unless the caller says it
is trusted. Keys are renamed by ``checkpoint_filter_fn`` (official layout -> ours); the model code never bends to
the foreign layout. The stage-3 width (320 or 256) is detected from the shapes. The command-line converter is
``python -m kanet.convert``.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .model import KANet, create_model

# --- key mapping ------------------------------------------------------------------------------------------------

_UPS = ("32", "16", "8", "4", "2", "1")  # official convd{N}x names of head.ups.0..5


def _inc(i: str) -> str:
    return str(int(i) + 1)


# (our-key pattern, official replacement) applied in order; the first structural match wins, then the
# block-internal renames below apply to whatever it produced.
_STRUCTURE: list[tuple[str, Callable[[re.Match], str]]] = [
    (r"^encoder\.stages\.(\d)\.embed\.conv\.", lambda m: f"Tencoder.patch_embed{_inc(m[1])}.proj."),
    (r"^encoder\.stages\.(\d)\.embed\.norm\.", lambda m: f"Tencoder.patch_embed{_inc(m[1])}.norm."),
    (r"^encoder\.stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"Tencoder.block{_inc(m[1])}.{m[2]}."),
    (r"^encoder\.stages\.(\d)\.norm\.", lambda m: f"Tencoder.norm{_inc(m[1])}."),
    (r"^encoder\.intra\.(\d)\.embed\.conv\.", lambda m: f"Tencoder.mini_patch_embed{_inc(m[1])}.proj."),
    (r"^encoder\.intra\.(\d)\.embed\.norm\.", lambda m: f"Tencoder.mini_patch_embed{_inc(m[1])}.norm."),
    (r"^encoder\.intra\.(\d)\.block\.", lambda m: f"Tencoder.patch_block{_inc(m[1])}.0."),
    (r"^encoder\.intra\.(\d)\.norm\.", lambda m: f"Tencoder.pnorm{_inc(m[1])}."),
    (r"^encoder\.unused_intra_embed\.conv\.", lambda m: "Tencoder.mini_patch_embed4.proj."),
    (r"^encoder\.unused_intra_embed\.norm\.", lambda m: "Tencoder.mini_patch_embed4.norm."),
    (r"^decoder\.embed\.conv\.", lambda m: "Tdecoder.patch_embed1.proj."),
    (r"^decoder\.embed\.norm\.", lambda m: "Tdecoder.patch_embed1.norm."),
    (r"^decoder\.blocks\.(\d+)\.", lambda m: f"Tdecoder.block1.{m[1]}."),
    (r"^decoder\.norm\.", lambda m: "Tdecoder.norm1."),
    (r"^head\.ups\.(\d)\.", lambda m: f"convtail.convd{_UPS[int(m[1])]}x.conv2d."),
    (r"^head\.refine\.(\d)\.", lambda m: f"convtail.dense_{4 - int(m[1])}.0."),
    (r"^head\.unused_out\.", lambda m: "convtail.conv_output.conv2d."),
    (r"^head\.out\.", lambda m: "clean.conv2d."),
    (r"^bottleneck\.conv(\d)\.", lambda m: f"block.conv{m[1]}."),
    (r"^bottleneck\.mrfe\.rff\.proj\.", lambda m: "block.MRFEB1.faix."),
    (r"^bottleneck\.mrfe\.branches\.(\d)\.", lambda m: f"block.MRFEB1.MRFRB_{_inc(m[1])}."),
    (r"^bottleneck\.mrfe\.gate\.", lambda m: "block.MRFEB1.AGB."),
]

_INTERNAL: list[tuple[str, str]] = [
    # transformer blocks
    (r"\.attn\.out\.", ".attn.proj."),
    (r"\.attn\.reduce\.conv\.", ".attn.sr."),
    (r"\.attn\.reduce\.norm\.", ".attn.norm."),
    (r"\.attn\.query$", ".attn.task_query"),
    (r"\.ffn\.dwconv\.", ".mlp.dwconv.dwconv."),
    (r"\.ffn\.", ".mlp."),
    # head residual blocks
    (r"^(convtail\.dense_\d\.0\.conv\d)\.", r"\1.conv2d."),
    # bottleneck: attention units, conv-BN-ReLU triples (conv -> .0, bn -> .1)
    (r"\.attn\.channel\.fc1\.", ".AM.CAU.fc.0."),
    (r"\.attn\.channel\.fc2\.", ".AM.CAU.fc.2."),
    (r"\.attn\.channel\.conv1\.", ".AM.CAU.fc1.0."),
    (r"\.attn\.channel\.conv2\.", ".AM.CAU.fc1.2."),
    (r"\.attn\.spatial\.proj\.", ".AM.SAU.conv_1."),
    (r"\.attn\.spatial\.fc1\.", ".AM.SAU.conv_sigm.0."),
    (r"\.attn\.spatial\.fc2\.", ".AM.SAU.conv_sigm.2."),
    (r"\.attn\.fuse\.", ".AM.conv_out."),
    (r"(MRFRB_\d)\.conv1\.", r"\1.DFconv1."),
    (r"(MRFRB_\d)\.conv2\.", r"\1.DFconv2."),
    (r"(MRFRB_\d)\.fuse\.", r"\1.conv_cat."),
    (r"AGB\.fuse\.", "AGB.conv_out."),
    (r"AGB\.fc1\.", "AGB.fc.0."),
    (r"AGB\.fc2\.", "AGB.fc.2."),
    (r"\.conv\.(weight|bias)$", r".0.\1"),
    (r"\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)$", r".1.\1"),
]

# Buffers of ours with no official counterpart: fixed-mode RFF draws (regenerated from the seed).
_OURS_ONLY = re.compile(r"^bottleneck\.mrfe\.rff\.(weight|bias)$")


def official_name(key: str) -> str:
    """Official checkpoint name (without ``module.``) of one of our state-dict keys."""
    for pattern, repl in _STRUCTURE:
        m = re.match(pattern, key)
        if m:
            key = repl(m) + key[m.end():]
            break
    else:
        raise KeyError(f"no official counterpart for {key!r}")
    for pattern, repl in _INTERNAL:
        key = re.sub(pattern, repl, key)
    return key


def official_key_map(model: KANet) -> dict[str, str]:
    """``{official key: our key}`` for every official entry of ``model``'s state dict."""
    ours = [k for k in model.state_dict() if not _OURS_ONLY.match(k)]
    mapping = {official_name(k): k for k in ours}
    if len(mapping) != len(ours):
        raise RuntimeError("official key mapping is not one-to-one")  # a bug in the tables above
    return mapping


def to_official_state_dict(model: KANet) -> dict[str, torch.Tensor]:
    """Our weights in the official layout (keys without ``module.``): for comparisons and round trips."""
    sd = model.state_dict()
    return {off: sd[ours] for off, ours in official_key_map(model).items()}


# --- reading official checkpoints -------------------------------------------------------------------------------

class CheckpointError(ValueError):
    """An official checkpoint that cannot be read or does not match a KA_Net configuration."""


def unwrap(checkpoint: object) -> dict[str, torch.Tensor]:
    """The tensor dict inside an official checkpoint: ``['model']`` (or ``['state_dict']``), ``module.`` stripped."""
    if isinstance(checkpoint, Mapping):
        for key in ("model", "state_dict"):
            if key in checkpoint and isinstance(checkpoint[key], Mapping):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise CheckpointError("no state dict found (expected a dict of tensors, or one under 'model')")
    out = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"entry {key!r} is not a tensor ({type(value).__name__})")
        out[key.removeprefix("module.")] = value
    return out


def detect_config_name(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``'kanet'`` (stage-3 width 320) or ``'kanet-w256'``, from ``Tencoder.patch_embed3.proj.weight``."""
    w = state_dict.get("Tencoder.patch_embed3.proj.weight")
    if w is None:
        raise CheckpointError("not a KA_Net checkpoint: 'Tencoder.patch_embed3.proj.weight' is missing")
    widths = {320: "kanet", 256: "kanet-w256"}
    if w.shape[0] not in widths:
        raise CheckpointError(f"unknown KA_Net stage-3 width {w.shape[0]} (known: 320, 256)")
    return widths[w.shape[0]]


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: KANet
                         ) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Official state dict -> ``(our state dict, missing official keys, unexpected official keys)``.

    ``state_dict`` may be the raw checkpoint (``['model']``, ``module.`` are handled). Shape mismatches raise.
    """
    sd = unwrap(state_dict)
    mapping = official_key_map(model)
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for off, value in sd.items():
        if off not in mapping:
            continue
        target = ours[mapping[off]]
        if tuple(value.shape) != tuple(target.shape):
            raise CheckpointError(f"{off}: shape {tuple(value.shape)} does not fit the model's {tuple(target.shape)}")
        out[mapping[off]] = value
    missing = sorted(k for k in mapping if k not in sd)
    unexpected = sorted(k for k in sd if k not in mapping)
    return out, missing, unexpected


def brief_error(e: BaseException) -> str:
    """Exception type and the first line of its message (error messages here stay on one line)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def input_problem(given: str | os.PathLike | None) -> str | None:
    """Why a command-line tool cannot read the file ``given`` (none there, or a folder), or None: a usage error,
    exit 2, as the product's own commands give for an input that is not there."""
    if given is None or Path(given).is_file():
        return None
    return f"{given} is a folder: give a file" if Path(given).is_dir() else f"{given}: no such file"


def output_problem(output: str | os.PathLike, *inputs: str | os.PathLike | None) -> str | None:
    """Why a command-line tool cannot write ``output`` (it is one of its ``inputs``, a folder, or in no folder that
    exists), or None: said before any work, and never by overwriting what it reads."""
    out = Path(output)
    for given in inputs:
        if given is not None and (out.resolve() == Path(given).resolve() or
                                  (out.exists() and Path(given).exists() and os.path.samefile(out, given))):
            return f"{out} is the input: give another output name"
    if out.is_dir():
        return f"{out} is a folder: give a file name"
    if not out.resolve().parent.is_dir():
        return f"no folder {out.parent} to write {out.name} into"
    return None


def read_checkpoint(path: str | os.PathLike, trust: bool = False) -> object:
    """``torch.load`` with ``weights_only=True``; full unpickling only when ``trust`` is set."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needs = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if needs is None and not trust:  # not a refusal of a Python object: the file itself is unreadable
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint") from e
        if not trust:
            raise CheckpointError(
                f"{path}: the file holds Python objects beyond tensors ({needs[1]}) and needs full unpickling, "
                f"which can run arbitrary code; refusing. If you trust its source, convert it with "
                f"python -m kanet.convert --trust (or pass trust=True)"
            ) from e
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({brief_error(e)})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({brief_error(e)})") from e


def load_official(path: str | os.PathLike, trust: bool = False, *, rff: str = "fixed", seed: int = 0,
                  strict: bool = True) -> KANet:
    """Build the matching configuration and load an official checkpoint into it (eval mode).

    ``strict``: missing or unexpected official keys raise ``CheckpointError`` naming them; with ``strict=False``
    they are reported as a warning and missing entries keep their initial values.
    """
    sd = unwrap(read_checkpoint(path, trust))
    model = create_model(detect_config_name(sd), rff=rff, seed=seed)
    weights, missing, unexpected = checkpoint_filter_fn(sd, model)
    if missing or unexpected:
        msg = f"{path}: " + "; ".join(part for part in (
            f"missing {len(missing)} key(s): {', '.join(missing)}" if missing else "",
            f"unexpected {len(unexpected)} key(s): {', '.join(unexpected)}" if unexpected else "") if part)
        if strict:
            raise CheckpointError(msg)
        warnings.warn(msg, stacklevel=2)
    model.load_state_dict(weights, strict=False)
    return model.eval()

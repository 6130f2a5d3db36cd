"""Checkpoints for exact resume.

A checkpoint ``step-NNNNNNN`` in the run folder is two files:

* ``step-NNNNNNN.safetensors``: the model weights, written by ``kanet.save_weights`` (loadable on their own with
  ``kanet.load_weights``, e.g. to ship or evaluate them);
* ``step-NNNNNNN.state.pt``: step, optimiser, scheduler, loss scaler, every random generator's state, the
  reweighting memory and the config.

``last.json`` names the newest complete checkpoint; it is replaced only after both files are in place, so a run
killed mid-write resumes from the previous checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
from pathlib import Path

import torch

import kanet
from training.cli import UsageError, atomic_path

__all__ = ["save_checkpoint", "resolve_checkpoint", "load_state", "load_weights_into"]

_POINTER = "last.json"
_OUTPUT_LAYER = "head.out."  # the one layer that differs between image and coefficient outputs


def _replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)


def save_checkpoint(folder: str | Path, step: int, model: kanet.KANet, state: dict, *, keep_every: int = 0) -> Path:
    """Write checkpoint ``step`` into ``folder`` and point ``last.json`` at it.

    Args:
        folder: run folder.
        step: optimisation steps done.
        model: the KANet being trained (weights are saved in float32).
        state: everything else needed to resume (``torch.save``-able).
        keep_every: older checkpoints are deleted, except the newest two and those at multiples of this step.

    Returns:
        path of the ``.state.pt`` file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder)
    stem = f"step-{step:07d}"
    weights, state_file = folder / f"{stem}.safetensors", folder / f"{stem}.state.pt"
    tmp_w, tmp_s = atomic_path(weights), atomic_path(state_file)
    try:
        kanet.save_weights(model, tmp_w)
        state_bytes = io.BytesIO()  # (written by Python, not by torch: a full disk is then an OSError that says so)
        torch.save({**state, "step": step}, state_bytes)
        tmp_s.write_bytes(state_bytes.getbuffer())
        _replace(tmp_w, weights)
        _replace(tmp_s, state_file)
    except OSError as exc:  # (the last checkpoint and last.json stay as they were)
        raise OSError(exc.errno, f"{exc.strerror} while writing the checkpoint at step {step}", str(folder)) from None
    finally:
        tmp_w.unlink(missing_ok=True)
        tmp_s.unlink(missing_ok=True)
    pointer = folder / _POINTER
    tmp_p = atomic_path(pointer)
    tmp_p.write_text(json.dumps({"step": step, "weights": weights.name, "state": state_file.name}) + "\n")
    _replace(tmp_p, pointer)
    _prune(folder, keep_every)
    return state_file


# Temporary files: atomic_path's NAME.tmp.PID.SUFFIX, and kanet.save_weights' own .NAME.tmp.PID
_TEMPORARY = re.compile(r"\.tmp\.(\d+)(\.|$)")


def _remove_stale(folder: Path) -> None:
    """Delete the temporary files a killed run left half-written (a checkpoint's are hundreds of MB)."""
    for path in folder.iterdir():
        found = _TEMPORARY.search(path.name)
        if found and not _alive(int(found.group(1))):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _prune(folder: Path, keep_every: int, keep_latest: int = 2) -> None:
    """Delete checkpoints older than the newest ``keep_latest`` unless their step is a multiple of ``keep_every``."""
    states = sorted(folder.glob("step-*.state.pt"))
    for state_file in states[:-keep_latest]:
        step = int(state_file.name[len("step-"):-len(".state.pt")])
        if keep_every > 0 and step % keep_every == 0:
            continue
        state_file.unlink(missing_ok=True)
        state_file.with_name(state_file.name.replace(".state.pt", ".safetensors")).unlink(missing_ok=True)


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(weights, state) files of a checkpoint given a run folder (its ``last.json``), a ``.state.pt`` or a
    ``.safetensors`` file of the pair."""
    path = Path(path)
    if path.is_dir():
        pointer = path / _POINTER
        if not pointer.is_file():
            raise UsageError(f"no checkpoint in {path} (missing {_POINTER})")
        try:
            info = json.loads(pointer.read_text())
            weights, state = path / info["weights"], path / info["state"]
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{pointer} is damaged: it names no checkpoint") from None
    elif path.name.endswith(".state.pt"):
        weights, state = path.with_name(path.name.replace(".state.pt", ".safetensors")), path
    elif path.suffix == ".safetensors":
        weights, state = path, path.with_name(path.name.replace(".safetensors", ".state.pt"))
    else:
        raise UsageError(f"not a checkpoint (run folder, .state.pt or .safetensors): {path}")
    for f in (weights, state):
        if not f.is_file():
            raise UsageError(f"checkpoint file not found: {f}")
    return weights, state


def load_state(state_file: Path) -> dict:
    """The resume state saved by :func:`save_checkpoint`."""
    try:
        # Tensors, numbers, strings and containers only (all a state holds): a file planted in a run folder could
        # otherwise run any code through pickle.
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise UsageError(f"cannot read checkpoint {state_file}: {str(exc).splitlines()[0]}") from None
        raise UsageError(f"cannot read checkpoint {state_file}: it holds more than a training state's tensors and "
                         "numbers (objects that could run code): not loaded") from None
    except Exception as exc:  # (a truncated or foreign file: torch raises whatever its unpickler met)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot read checkpoint {state_file}: {reason}") from None
    if not isinstance(state, dict) or not {"step", "config", "optimizer"} <= state.keys():
        raise UsageError(f"{state_file} is not a training checkpoint's state")
    return state


def load_weights_into(model: kanet.KANet, weights: Path) -> None:
    """Copy weights saved by ``kanet.save_weights`` into ``model`` (same configuration) exactly.

    Weights whose only difference is the output (``KANetConfig.output``: image or coefficients) give their body: every
    tensor but the output layer's, which the model keeps.
    """
    try:
        loaded = kanet.load_weights(weights)
    except kanet.WeightsError as exc:
        raise UsageError(str(exc)) from exc
    state = loaded.state_dict()
    body_only = loaded.config.output != model.config.output
    if body_only:
        state = {k: v for k, v in state.items() if not k.startswith(_OUTPUT_LAYER)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shapes differ: another configuration
        raise UsageError(f"{weights} does not match the model configuration ({str(exc).splitlines()[0]})") from None
    if body_only:
        missing = [k for k in missing if not k.startswith(_OUTPUT_LAYER)]
    if missing or unexpected:
        raise UsageError(f"{weights} does not match the model configuration "
                         f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")

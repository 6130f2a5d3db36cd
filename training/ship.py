"""Ship a trained checkpoint inside the package, where ``--model auto`` finds it.

    python -m training.ship runs/kanet-t-wide/step-0006000.safetensors [--dest streamdehaze/weights]
    python -m training.ship runs/kanet-s-gpu          # a run folder: its newest checkpoint
    python -m training.ship runs/a/step-0001750.safetensors runs/b/step-0001500.safetensors   # their average

Writes ``DEST/<configuration>.safetensors`` in fp16 (the model still runs in fp32/bf16/fp16 autocast: storage
only), with the checkpoint(s) it came from in the metadata. Several checkpoints ship as their parameter average
(a "model soup"): fine-tunes of one starting point trained for different things average into a network that keeps
most of both, where each alone trades one for the other. Before replacing anything it checks that the file stays
within the package's 25 MB per-file budget and that the fp16 copy dehazes like the original.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

import kanet
from training.checkpoint import resolve_checkpoint
from training.cli import UsageError, atomic_path, run_main

DEST = Path(__file__).resolve().parent.parent / "streamdehaze" / "weights"
MAX_BYTES = 25 * 1024 * 1024
# fp16 keeps 11 significant bits: one 8-bit level of output is the most rounding may move a pixel.
MAX_PIXEL_CHANGE = 1 / 255


def _probe_image() -> torch.Tensor:
    """A fixed, smooth hazy-looking test image (no data files needed): gradients, a veil and some texture."""
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    base = torch.stack([x, y, (x + y) / 2]) * 0.6 + 0.1 * torch.rand(3, 96, 128, generator=g)
    return (0.6 * base + 0.35).clamp(0, 1)[None]


def _load(checkpoints: Sequence[Path]) -> kanet.KANet:
    """The network of one checkpoint, or the parameter average of several of one configuration."""
    try:
        nets = [kanet.load_weights(c) for c in checkpoints]
    except kanet.WeightsError as exc:
        raise UsageError(str(exc)) from None
    net = nets[0]
    for other, path in zip(nets[1:], checkpoints[1:]):
        if other.config != net.config:
            raise UsageError(f"{path}: a different configuration from {checkpoints[0]}; only one can be averaged")
        # Buffers are fixed, not learned (the random Fourier features' draw): an average of two draws is neither.
        theirs = dict(other.named_buffers())
        for key, value in net.named_buffers():
            if not torch.equal(value, theirs[key]):
                raise UsageError(f"{path}: its {key} differs from {checkpoints[0]}'s (another train.seed?); "
                                 "only runs of one draw can be averaged")
    if len(nets) > 1:
        states = [n.state_dict() for n in nets]
        # integer buffers (batch-norm step counters) are not parameters: the first checkpoint's are kept
        net.load_state_dict({key: torch.stack([s[key] for s in states]).mean(0) if value.is_floating_point()
                             else value for key, value in states[0].items()})
    return net


def ship(checkpoints: Path | Sequence[Path], dest: Path = DEST, max_bytes: int = MAX_BYTES) -> Path:
    """Write the fp16 copy of ``checkpoints`` (one, or the average of several) to ``dest/<config>.safetensors``;
    return its path."""
    checkpoints = [checkpoints] if isinstance(checkpoints, Path) else list(checkpoints)
    net = _load(checkpoints)
    checkpoint = " + ".join(str(c) for c in checkpoints)
    if net.config_name is None:
        raise UsageError(f"{checkpoint}: a custom configuration; only named ones ({', '.join(kanet.MODEL_NAMES)}) "
                         "can ship")
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{net.config_name}.safetensors"
    tmp = atomic_path(target)
    try:
        kanet.save_weights(net, tmp, dtype=torch.float16, extra={"source": str(checkpoint)})
        size = tmp.stat().st_size
        if size > max_bytes:
            raise UsageError(f"{net.config_name} in fp16 is {size / 2**20:.1f} MB, over the "
                             f"{max_bytes / 2**20:.0f} MB a shipped file may be")
        with torch.no_grad():
            probe = _probe_image()
            change = (kanet.dehaze(net, probe) - kanet.dehaze(kanet.load_weights(tmp), probe)).abs().max().item()
        if change > MAX_PIXEL_CHANGE:
            raise UsageError(f"{checkpoint}: the fp16 copy changes pixels by {change:.4f} (over "
                             f"{MAX_PIXEL_CHANGE:.4f}); nothing shipped")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"{checkpoint} -> {target} ({size / 2**20:.1f} MB, fp16; largest pixel change {change:.5f})")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ship", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, nargs="+",
                        help="weights from python -m training.train (.safetensors), or a run folder (its newest); "
                             "several ship as their average")
    parser.add_argument("--dest", type=Path,
                        help=f"folder to write to (default, in a checkout of the project: {DEST}, the package's own "
                             "weights, which every run of streamdehaze then uses)")
    args = parser.parse_args(argv)
    if args.dest is None:
        # The package's own weights are replaced only where git keeps the ones before: an installed package has
        # no other copy, and every later run would use the new ones.
        if not (DEST.parent.parent / ".git").exists():
            raise UsageError(f"give --dest: with none, the installed package's own weights ({DEST}) would be "
                             "replaced, and streamdehaze would use the new ones from then on")
        args.dest = DEST
    checkpoints = [resolve_checkpoint(c)[0] if c.is_dir() else c for c in args.checkpoint]
    for checkpoint in checkpoints:
        if not checkpoint.is_file():
            raise UsageError(f"{checkpoint}: no such file")
    ship(checkpoints, args.dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

"""Ship a trained checkpoint inside the package, where ``--model auto`` finds it.

    python -m training.ship runs/kanet-t-wide/step-0006000.safetensors [--dest streamdehaze/weights]
    python -m training.ship runs/kanet-s-gpu          # a run folder: its newest checkpoint

Writes ``DEST/<configuration>.safetensors`` in fp16 (the model still runs in fp32/bf16/fp16 autocast: storage
only), with the checkpoint it came from in the metadata. Before replacing anything it checks that the file stays
within the package's 25 MB per-file budget and that the fp16 copy dehazes like the original.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

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


def ship(checkpoint: Path, dest: Path = DEST, max_bytes: int = MAX_BYTES) -> Path:
    """Write the fp16 copy of ``checkpoint`` to ``dest/<config>.safetensors``; return its path."""
    import kanet

    try:
        net = kanet.load_weights(checkpoint)
    except kanet.WeightsError as exc:
        raise UsageError(str(exc)) from None
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
    parser.add_argument("checkpoint", type=Path,
                        help="weights from python -m training.train (.safetensors), or a run folder (its newest)")
    parser.add_argument("--dest", type=Path, default=DEST, help=f"folder to write to (default {DEST})")
    args = parser.parse_args(argv)
    checkpoint = resolve_checkpoint(args.checkpoint)[0] if args.checkpoint.is_dir() else args.checkpoint
    if not checkpoint.is_file():
        raise UsageError(f"{checkpoint}: no such file")
    ship(checkpoint, args.dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

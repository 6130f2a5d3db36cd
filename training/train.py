"""Train KA_Net on synthetic (and optionally real paired) haze.

    python -m training.train --config training/configs/kanet-t-cpu.toml
    python -m training.train --resume runs/kanet-t-cpu            # continue exactly where the last checkpoint was
    python -m training.train --config C.toml --minutes 8           # stop, checkpointed, after 8 minutes

Writes into ``train.out``: ``config.json``, ``log.jsonl`` (one JSON object per line: training terms every
``log_every`` steps, validation PSNR/SSIM every ``val_every``), and checkpoints ``step-NNNNNNN.safetensors`` +
``.state.pt`` with ``last.json`` naming the newest.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from training.checkpoint import load_state, resolve_checkpoint
from training.cli import UsageError, run_main
from training.config import config_from_dict, load_config

__all__ = ["main"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="TOML or JSON config (see training/configs/)")
    parser.add_argument("--resume", type=Path, help="checkpoint to continue from: run folder, .state.pt or "
                                                    ".safetensors (the config saved in it is used unless --config)")
    parser.add_argument("--out", type=Path, help="run folder (overrides train.out)")
    parser.add_argument("--until", type=int, help="stop after this step (the schedule still spans train.steps)")
    parser.add_argument("--minutes", type=float, help="stop, with a checkpoint, after this much training time")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.config is None and args.resume is None:
        raise UsageError("give --config FILE (or --resume CHECKPOINT)")
    if args.minutes is not None and args.minutes <= 0:
        raise UsageError("--minutes must be > 0")
    if args.config is not None:
        config = load_config(args.config)
    else:
        config = config_from_dict(load_state(resolve_checkpoint(args.resume)[1])["config"])
    out = args.out
    if out is None and args.resume is not None and args.config is None and args.resume.is_dir():
        out = args.resume
    if out is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, out=str(out)))
    from training.trainer import Trainer  # after argument checks: importing torch/kanet takes a moment

    trainer = Trainer(config, progress=not args.quiet)
    if args.resume is not None:
        trainer.resume(args.resume)
    metrics = trainer.fit(until=args.until, minutes=args.minutes)
    summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    print(f"done: step {trainer.step}, {summary or 'no validation set'}; checkpoints in {trainer.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

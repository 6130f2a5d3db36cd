"""Train KA_Net on synthetic (and optionally real paired) haze.

    python -m training.train --config training/configs/kanet-t-cpu.toml
    python -m training.train --resume runs/kanet-t-cpu            # continue exactly where the last checkpoint was
    python -m training.train --config C.toml --minutes 8           # stop, checkpointed, after 8 minutes

Writes into ``train.out``: ``config.json``, ``log.jsonl`` (one JSON object per line: training terms every
``log_every`` steps, validation PSNR/SSIM every ``val_every``), and checkpoints ``step-NNNNNNN.safetensors`` +
``.state.pt`` with ``last.json`` naming the newest. The same ``--config`` again goes on from the folder's last
checkpoint (another configuration into that folder is refused); Ctrl-C or SIGTERM stops a run after the step under
way, with a checkpoint (exit 130).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path


def _exit_now(signum: int, frame: object) -> None:
    os.write(2, b"interrupted\n")
    os._exit(130)


if __name__ == "__main__":  # (the program itself, not a module that imported it)
    # Ctrl-C or SIGTERM before the training loop: torch's import swallowed the KeyboardInterrupt, and the run
    # trained on for hours. Nothing is checkpointed yet, so the process ends at once; the loop takes the signals
    # over (``_stop_on_signals``).
    for _signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signal, _exit_now)

from training.checkpoint import load_state, resolve_checkpoint  # noqa: E402 (torch: seconds)
from training.cli import UsageError, run_main  # noqa: E402
from training.config import Config, config_from_dict, config_to_dict, load_config  # noqa: E402

__all__ = ["main"]

# Settings a run may change when it is continued: where it runs and how often it reports, not what it computes.
_RESUMABLE = {"train.out", "train.device", "train.threads", "train.log_every", "train.val_every",
              "train.checkpoint_every", "train.keep_every"}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="TOML or JSON config (see training/configs/)")
    parser.add_argument("--resume", type=Path, help="checkpoint to continue from: run folder, .state.pt or "
                                                    ".safetensors (the config saved in it is used unless --config; "
                                                    "the run goes on in its folder unless --out)")
    parser.add_argument("--out", type=Path, help="run folder (overrides train.out)")
    parser.add_argument("--until", type=int, help="stop after this step (the schedule still spans train.steps)")
    parser.add_argument("--minutes", type=float, help="stop, with a checkpoint, after this much training time")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _changes(before: Config, after: Config) -> list[str]:
    """``section.key old -> new`` for every setting that differs, but those a continued run may change."""
    a, b = config_to_dict(before), config_to_dict(after)
    return [f"{name}.{key} {a[name][key]!r} -> {b[name][key]!r}" for name in a for key in a[name]
            if a[name][key] != b[name][key] and f"{name}.{key}" not in _RESUMABLE]


def _saved_config(checkpoint: Path) -> tuple[int, Config]:
    state = load_state(resolve_checkpoint(checkpoint)[1])
    return int(state["step"]), config_from_dict(state["config"])


@contextlib.contextmanager
def _stop_on_signals(trainer) -> Iterator[None]:
    """Ctrl-C or SIGTERM (a job scheduler, ``timeout``) ends the run after the step under way, with a checkpoint;
    a second one stops at once, but for a checkpoint being written (under a second: a second Ctrl-C then lost the
    run's only checkpoint)."""
    def stop(signum: int, frame: object) -> None:
        if trainer.interrupted and trainer.saving:
            print("\nthe checkpoint is being written: the run ends once it is", file=sys.stderr)
            return
        if trainer.interrupted:
            raise KeyboardInterrupt
        trainer.interrupted = True
        print(f"\nstopping after step {trainer.step + 1}, with a checkpoint (again to stop at once)", file=sys.stderr)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _held(folder: Path) -> Iterator[None]:
    """The run folder (made if need be) locked while this trains in it: a second training into it (the same command
    in another terminal, or another seed started at the same moment) is refused, where it trained the same steps
    beside the first, both writing the one log and its checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{folder}: another training is running in it") from None
        except OSError:  # (a filesystem without locks)
            pass
        yield
    finally:
        os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.config is None and args.resume is None:
        raise UsageError("give --config FILE (or --resume CHECKPOINT)")
    if args.minutes is not None and args.minutes <= 0:
        raise UsageError("--minutes must be > 0")
    if args.until is not None and args.until < 1:
        raise UsageError("--until must be >= 1")
    if args.config is not None:
        config = load_config(args.config)
    else:
        config = _saved_config(args.resume)[1]
    out = args.out
    if out is None and args.resume is not None and args.config is None:
        # the run goes on in the checkpoint's own folder, not in its saved train.out, which may be relative to
        # wherever the run was started
        out = args.resume if args.resume.is_dir() else args.resume.parent
    if out is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, out=str(out)))
    folder = Path(config.train.out)
    with _held(folder):
        return _run(args, config, folder)


def _run(args: argparse.Namespace, config: Config, folder: Path) -> int:
    resume = args.resume
    if (folder / "last.json").is_file():
        # The folder already holds a run: go on with it (a recipe run again after a crash), or refuse to mix
        # another run's checkpoints with it (its own would be pruned away as older).
        if resume is not None and resolve_checkpoint(resume) != resolve_checkpoint(folder):
            raise UsageError(f"{folder} already holds a run: give another --out")
        resume = folder
    if resume is not None and args.config is not None:  # (without --config, the run's own configuration)
        step, saved = _saved_config(resume)
        changed = "; ".join(_changes(saved, config))
        if changed and args.resume is None:
            raise UsageError(f"{folder} already holds a run of another configuration ({changed}): give another "
                             f"--out (or train.out), or remove {folder} to start again")
        if changed:
            raise UsageError(f"{resume} was trained with another configuration ({changed}): resume without "
                             f"--config, or start a new run from its weights with model.init")
        if args.resume is None:
            print(f"continuing the run in {folder} from its checkpoint at step {step}", file=sys.stderr)
    from training.trainer import Trainer  # after argument checks: importing torch/kanet takes a moment

    trainer = Trainer(config, progress=not args.quiet)
    if small := trainer.cache.upscaled:  # (blurred targets teach a blurred picture)
        print(f"note: {len(small)} of the {len(trainer.cache)} photos (e.g. {small[0]}) are smaller than the crops "
              f"cut from them and are upscaled, blurred, to their size: a smaller train.crop, or larger photos",
              file=sys.stderr)
    if resume is not None:
        trainer.resume(resume)
        if args.resume is not None:  # (a folder's own run going on is said above)
            print(f"resuming the run in {trainer.out} from its checkpoint at step {trainer.step}", file=sys.stderr)
    end = min(config.train.steps, args.until or config.train.steps)
    if trainer.step >= end and not trainer.validation_due:
        print(f"nothing to do: {trainer.out} is at step {trainer.step}, the run ends at {end}")
        return 0
    with _stop_on_signals(trainer):
        metrics = trainer.fit(until=args.until, minutes=args.minutes)
    if trainer.interrupted:
        # the stop a recipe stage gives goes into the command too: past it, the run would prune the checkpoint
        # the next stage starts from
        until = f" --until {end}" if end < config.train.steps else ""
        print(f"interrupted: checkpoint at step {trainer.step} in {trainer.out}; python -m training.train --resume "
              f"{trainer.out}{until} continues", file=sys.stderr)
        return 130
    summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    of = f" of {config.train.steps}" if trainer.step < config.train.steps else ""
    print(f"done: step {trainer.step}{of}, {summary or 'no validation set'}; checkpoints in {trainer.out}")
    if of:  # (--until or --minutes: a stop, which reads as the run's end without the command that goes on)
        print(f"python -m training.train --resume {trainer.out} goes on to step {config.train.steps}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

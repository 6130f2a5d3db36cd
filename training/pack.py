"""A training data pack small enough to travel with the code to a GPU machine that has no network.

    python -m training.pack runs/pack [--clean ../shared/data/clean] [--real ../shared/data/real_hazy_train]
                                      [--max-fog 0.75] [--budget-mib 45]

Writes ``OUT/clean/`` and ``OUT/real_hazy_train/`` (the folders a GPU config reads) as JPEG files under the same
names, so the file-name validation split is unchanged (which is why it takes JPEG photos only). The photos a
config's ``data.max_fog`` would drop are left out here instead (the GPU machine has no fade-python), and the JPEG
quality is the highest that keeps the whole pack within the budget. The pack is derived from ``../shared/data``:
it stays in the ignored ``runs/``.

``OUT`` must be a new or empty folder, or an earlier pack (it holds the ``pack.json`` each pack writes), which is
replaced whole once the new one is written beside it; anything else, or a folder that is, holds or lies inside
an input, is refused. The evaluation's photos are refused too (``training.evaldata``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2

from training.cli import UsageError, atomic_path, run_main
from training.evaldata import is_held_out, refuse_evaluation_photos, without_near_copies
from training.images import list_images, read_rgb

QUALITIES = (95, 92, 90, 87, 85, 82, 80, 75, 70)
MANIFEST = "pack.json"  # what went in; also what marks a folder as a pack that a new one may replace


def _check_out(out: Path, inputs: Sequence[Path]) -> None:
    """``UsageError`` unless ``out`` is new, empty or an earlier pack, and apart from every input folder."""
    where = out.resolve()
    for folder in inputs:
        source = folder.resolve()
        if where == source or where in source.parents or source in where.parents:
            raise UsageError(f"{out}: the pack folder must be apart from its inputs, and {folder} is one")
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MANIFEST).is_file())):
        raise UsageError(f"{out} exists and is not a pack (no {MANIFEST}): give a new folder")


def _encode(files: Sequence[Path], quality: int) -> list[bytes]:
    out = []
    for f in files:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(read_rgb(f), cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise UsageError(f"cannot encode {f}")
        out.append(data.tobytes())
    return out


def pack(out: Path, clean: Path, real: Path | None, max_fog: float = 0.0, budget: int = 45 * 2 ** 20) -> dict:
    """Write the pack into ``out`` (replacing an earlier one); returns what went in."""
    _check_out(out, [clean] + ([real] if real is not None else []))
    folders = {"clean": list_images(clean)}
    if real is not None:
        folders["real_hazy_train"] = list_images(real)
    # clean/ keeps the evaluation's held-out names: the trainer leaves them out by name (training.evaldata)
    refuse_evaluation_photos({"--clean": [f for f in folders["clean"] if not is_held_out(f.name)],
                              "--real": folders.get("real_hazy_train", [])})
    kept, near_copies = without_near_copies({"--real": folders.get("real_hazy_train", [])})
    if real is not None:
        folders["real_hazy_train"] = kept["--real"]
    for f in (f for files in folders.values() for f in files):
        if f.suffix.lower() not in (".jpg", ".jpeg"):
            raise UsageError(f"{f}: not a .jpg; the pack keeps every name (the validation split hashes them)")
    dropped: list[str] = []
    if max_fog > 0:
        from training.metrics import fade_density

        try:
            keep = [fade_density(read_rgb(f)) <= max_fog for f in folders["clean"]]
        except ImportError as exc:
            raise UsageError(f"--max-fog: {exc}") from None
        dropped = [f.name for f, k in zip(folders["clean"], keep) if not k]
        folders["clean"] = [f for f, k in zip(folders["clean"], keep) if k]
    for quality in QUALITIES:
        encoded = {name: _encode(files, quality) for name, files in folders.items()}
        size = sum(len(b) for blobs in encoded.values() for b in blobs)
        if size <= budget:
            break
    else:
        raise UsageError(f"the photos do not fit in {budget / 2 ** 20:.4g} MiB even at JPEG quality {QUALITIES[-1]}")
    info = {"quality": quality, "bytes": size, "files": {k: len(v) for k, v in folders.items()}, "dropped": dropped,
            "near_copies": near_copies}
    tmp, old = atomic_path(out), out.with_name(f"{out.name}.old.{os.getpid()}")
    try:
        for name, files in folders.items():
            (tmp / name).mkdir(parents=True)
            for f, blob in zip(files, encoded[name]):
                (tmp / name / f.name).write_bytes(blob)
        (tmp / MANIFEST).write_text(json.dumps(info, indent=1) + "\n")
        if out.exists():  # an earlier pack (checked above): moved aside, so out is always a whole pack
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return info


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.pack", description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="pack folder to write (e.g. runs/pack)")
    p.add_argument("--clean", type=Path, default=Path("../shared/data/clean"), help="clean photos")
    p.add_argument("--real", default="../shared/data/real_hazy_train",
                   help="unlabelled real hazy photos ('' for none)")
    p.add_argument("--max-fog", type=float, default=0.75, help="leave out clean photos with more FADE fog (0: keep)")
    p.add_argument("--budget-mib", type=float, default=45.0, help="largest pack size in MiB (default 45)")
    args = p.parse_args(argv)
    if args.budget_mib <= 0 or args.max_fog < 0:
        raise UsageError("--budget-mib must be > 0 and --max-fog >= 0")
    real = Path(args.real) if args.real else None
    info = pack(args.out, args.clean, real, args.max_fog, round(args.budget_mib * 2 ** 20))
    for note in info["near_copies"]:
        print(note, file=sys.stderr)
    print(f"wrote {args.out}: {info['files']} photos, JPEG quality {info['quality']}, "
          f"{info['bytes'] / 2 ** 20:.1f} MiB; {len(info['dropped'])} foggy clean photos left out")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

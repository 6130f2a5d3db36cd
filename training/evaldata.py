"""The evaluation's photos, which training must never see: the one rule that picks them, shared by the evaluation
(``streamdehaze.evalsets``), the trainer and the pack.

``python -m streamdehaze.evaluate --data DATA`` (default: ``shared/data`` beside the checkout) scores a model on
every photo of ``DATA/real_hazy`` and on the held-out photos of ``DATA/clean``: those whose file name hashes below
``HELD_OUT`` (:func:`training.data.is_validation`, the split ``data.val_fraction`` makes). So the trainer never
trains on a held-out name of its clean folder, whatever ``data.val_fraction`` (a pack keeps the names, so this
holds on a GPU machine too), and the trainer and the pack refuse any training photo with the content of one of
the evaluation's (a copy of ``real_hazy/``, or ``clean/`` given as real haze).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from training.cli import UsageError
from training.data import is_validation
from training.images import image_files

__all__ = ["DATA", "HELD_OUT", "is_held_out", "evaluation_photos", "refuse_evaluation_photos"]

# ``shared/data`` beside this checkout, wherever a command runs from (a package installed elsewhere has none: then
# ``../shared/data`` from the working folder).
_BESIDE = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = _BESIDE if _BESIDE.is_dir() else Path("../shared/data")
HELD_OUT = 0.05  # share of clean/ the evaluation holds out, by a hash of the file name


def is_held_out(name: str) -> bool:
    """Whether the evaluation holds out a clean photo called ``name``."""
    return is_validation(name, HELD_OUT)


def evaluation_photos(data: Path = DATA) -> list[Path]:
    """The photos the evaluation scores in ``data``: all of ``real_hazy/``, the held-out ones of ``clean/`` (none
    where ``data`` is absent, e.g. on a GPU machine with only a pack)."""
    return image_files(data / "real_hazy") + [p for p in image_files(data / "clean") if is_held_out(p.name)]


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def refuse_evaluation_photos(files: Mapping[str, Iterable[Path]], data: Path | None = None) -> None:
    """``UsageError`` naming the first training file (``files``: per setting, the photos it gives training) with the
    content of one of the evaluation's photos in ``data``: by default those in ``DATA`` and in ``../shared/data``
    from the working folder (the trainer found only the latter, and trained on the evaluation's photos when run from
    another folder)."""
    folders = [data] if data is not None else list(dict.fromkeys(p.resolve() for p in (DATA, Path("../shared/data"))))
    photos = [photo for folder in folders for photo in evaluation_photos(folder)]
    sizes = {p.stat().st_size for p in photos}
    digests: dict[str, Path] | None = None
    for setting, paths in files.items():
        for path in paths:
            if path.stat().st_size not in sizes:  # cheap: only files of an evaluation photo's size are read
                continue
            if digests is None:
                digests = {_digest(p): p for p in photos}
            match = digests.get(_digest(path))
            if match is not None:
                raise UsageError(f"{setting}: {path} is the evaluation's photo {match}; training must never see "
                                 f"evaluation data")

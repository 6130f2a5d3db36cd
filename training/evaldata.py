"""The evaluation's photos, which training must never see: the one rule that picks them, shared by the evaluation
(``streamdehaze.evalsets``), the trainer and the pack.

``python -m streamdehaze.evaluate --data DATA`` (default: ``shared/data`` beside the checkout) scores a model on
every photo of ``DATA/real_hazy`` and on the held-out photos of ``DATA/clean``: those whose file name hashes below
``HELD_OUT`` (:func:`training.data.is_validation`, the split ``data.val_fraction`` makes). So the trainer never
trains on a held-out name of its clean folder, whatever ``data.val_fraction`` (a pack keeps the names, so this
holds on a GPU machine too), and the trainer and the pack refuse any training photo with the content of one of
the evaluation's (a copy of ``real_hazy/``, or ``clean/`` given as real haze). A copy resized, squashed or
recoloured (``real_hazy_train/web_29.jpg`` is ``real_hazy/stadium_input.png`` at 512x512, its red track blue) is
left out of training instead (``without_near_copies``), named in the run's log, so that a folder of photos with
one such copy still trains.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import cv2
import numpy as np

from training.cli import UsageError
from training.data import is_validation
from training.images import image_files

__all__ = ["DATA", "HELD_OUT", "is_held_out", "evaluation_photos", "refuse_evaluation_photos", "without_near_copies"]

# ``shared/data`` beside this checkout, wherever a command runs from (a package installed elsewhere has none: then
# ``../shared/data`` from the working folder).
_BESIDE = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = _BESIDE if _BESIDE.is_dir() else Path("../shared/data")
HELD_OUT = 0.05  # share of clean/ the evaluation holds out, by a hash of the file name
# The likeness (``_fingerprint``s' correlation) above which a photo is a copy of another: the stadium's recoloured
# copy scores 0.91; the next likest pair of a training photo and an evaluation photo 0.37, two evaluation photos 0.15.
NEAR_COPY = 0.7


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
    photos = [photo for folder in _folders(data) for photo in evaluation_photos(folder)]
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


def _folders(data: Path | None) -> list[Path]:
    return [data] if data is not None else list(dict.fromkeys(p.resolve() for p in (DATA, Path("../shared/data"))))


@functools.lru_cache(maxsize=4096)
def _fingerprint(path: Path, size: int, mtime: float) -> np.ndarray | None:
    """What survives resizing, squashing and recolouring a photo: the mean of its channels (the same under any swap
    of them) at 64x64, its coarse shading taken away, as a unit vector; None for a file OpenCV cannot read (the
    trainer reports those when it loads them). ``size`` and ``mtime`` key the cache."""
    image = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_4)  # (a JPEG decodes at a quarter: 10x faster)
    if image is None:
        return None
    thumb = cv2.resize(image.astype(np.float32).mean(2), (64, 64), interpolation=cv2.INTER_AREA)
    detail = (thumb - cv2.GaussianBlur(thumb, (0, 0), 3)).ravel()
    detail -= detail.mean()
    return detail / max(float(np.linalg.norm(detail)), 1e-6)


def _fingerprints(paths: Iterable[Path]) -> tuple[list[Path], np.ndarray]:
    kept, prints = [], []
    for path in paths:
        stat = path.stat()
        f = _fingerprint(path, stat.st_size, stat.st_mtime)
        if f is not None:
            kept.append(path)
            prints.append(f)
    return kept, np.stack(prints) if prints else np.zeros((0, 64 * 64), np.float32)


def without_near_copies(files: Mapping[str, list[Path]], data: Path | None = None
                        ) -> tuple[dict[str, list[Path]], list[str]]:
    """``files`` (per setting, the photos it gives training) without those that look like one of the evaluation's
    photos in ``data`` (as in ``refuse_evaluation_photos``), and a line for each photo left out."""
    photos, prints = _fingerprints(photo for folder in _folders(data) for photo in evaluation_photos(folder))
    if not photos:
        return dict(files), []
    kept: dict[str, list[Path]] = {}
    notes: list[str] = []
    for setting, paths in files.items():
        candidates, likeness = _fingerprints(paths)
        similar = likeness @ prints.T if len(candidates) else np.zeros((0, len(photos)))
        copies = {path: photos[int(row.argmax())] for path, row in zip(candidates, similar) if row.max() > NEAR_COPY}
        kept[setting] = [path for path in paths if path not in copies]
        notes += [f"{setting}: left out {path}: a copy of the evaluation's photo {match}"
                  for path, match in copies.items()]
    return kept, notes

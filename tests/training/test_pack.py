"""The data pack for GPU machines: JPEG copies under the same names, within a size budget, foggy photos left out."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.cli import UsageError, run_main
from training.data import split_files
from training.images import list_images
from training.pack import main, pack

from .conftest import write_jpeg



@pytest.fixture
def jpegs(clean_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "jpegs"
    folder.mkdir()
    for f in sorted(clean_folder.iterdir()):
        cv2.imwrite(str(folder / f"{f.stem}.jpg"), cv2.imread(str(f)), [cv2.IMWRITE_JPEG_QUALITY, 98])
    return folder


def test_pack_keeps_names_and_fits_the_budget(jpegs: Path, tmp_path: Path) -> None:
    clean_folder = jpegs
    out = tmp_path / "pack"
    pack(out, clean_folder, None, budget=10 * 1024 ** 2)
    (out / "stale.txt").write_text("in an earlier pack")
    info = pack(out, clean_folder, clean_folder, budget=10 * 1024 ** 2)
    assert info["files"] == {"clean": 12, "real_hazy_train": 12} and info["quality"] == 95
    names = [p.name for p in list_images(out / "clean")]
    assert names == [p.name for p in list_images(clean_folder)] and not (out / "stale.txt").exists()
    # the same names: the validation split by file name holds out the same photos
    held_out = [p.name for p in split_files(list_images(out / "clean"), 0.25)[1]]
    assert held_out and held_out == [p.name for p in split_files(list_images(clean_folder), 0.25)[1]]
    original = cv2.imread(str(sorted(clean_folder.iterdir())[0]))
    copy = cv2.imread(str(sorted((out / "clean").iterdir())[0]))
    assert copy.shape == original.shape and np.abs(copy.astype(int) - original).mean() < 4
    small = pack(tmp_path / "small", clean_folder, None, budget=sum(p.stat().st_size for p in
                                                                     (out / "clean").iterdir()) - 1)
    assert small["quality"] < 95 and not (tmp_path / "small" / "real_hazy_train").exists()
    with pytest.raises(UsageError, match="do not fit"):
        pack(tmp_path / "tiny", clean_folder, None, budget=1000)


@pytest.mark.skipif(importlib.util.find_spec("pyfade") is None, reason="needs fade-python")
def test_pack_leaves_out_foggy_photos(jpegs: Path, tmp_path: Path, capsys) -> None:
    assert run_main(main, [str(tmp_path / "p"), "--clean", str(jpegs), "--real", "", "--max-fog", "0.01"]) == 0
    assert "12 foggy clean photos left out" in capsys.readouterr().out


def test_only_jpegs_keep_their_names(clean_folder: Path, tmp_path: Path, capsys) -> None:
    assert run_main(main, [str(tmp_path / "p"), "--clean", str(clean_folder), "--real", "", "--max-fog", "0"]) == 2
    assert "not a .jpg" in capsys.readouterr().err and not (tmp_path / "p").exists()


def test_only_an_earlier_pack_is_replaced(jpegs: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    (runs / "kanet-t-cpu").mkdir(parents=True)
    (runs / "kanet-t-cpu" / "step-0011500.safetensors").write_text("weights")
    args = ["--clean", str(jpegs), "--real", "", "--max-fog", "0"]
    assert run_main(main, [str(runs), *args]) == 2
    assert "is not a pack" in capsys.readouterr().err
    assert (runs / "kanet-t-cpu" / "step-0011500.safetensors").read_text() == "weights"
    # the inputs themselves, a folder inside them, or one holding them
    for out in (jpegs, jpegs / "pack", tmp_path):
        assert run_main(main, [str(out), *args]) == 2
        assert "apart from its inputs" in capsys.readouterr().err
    assert len(list_images(jpegs)) == 12 and not (jpegs / "pack").exists()
    assert run_main(main, [str(runs / "pack"), *args]) == 0  # a new folder, then again over its own pack
    assert run_main(main, [str(runs / "pack"), *args]) == 0 and (runs / "pack" / "pack.json").is_file()
    assert sorted(p.name for p in (runs / "pack").iterdir()) == ["clean", "pack.json"]


def test_a_budget_is_shown_as_given(jpegs: Path, tmp_path: Path, capsys) -> None:
    args = ["--clean", str(jpegs), "--real", "", "--max-fog", "0", "--budget-mib", "0.001"]
    assert run_main(main, [str(tmp_path / "p"), *args]) == 2
    assert "do not fit in 0.001 MiB" in capsys.readouterr().err


def test_the_evaluations_photos_are_refused(evaluation_data: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(evaluation_data / "real_hazy", copy)
    write_jpeg(copy / "mine.jpg", 101)
    clean = evaluation_data / "clean"
    for real in (copy, evaluation_data / "real_hazy", clean):
        assert run_main(main, [str(tmp_path / "p"), "--clean", str(clean), "--real", str(real), "--max-fog", "0"]) == 2
        err = capsys.readouterr().err
        assert "the evaluation's photo" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()
    # clean/ itself packs whole: its held-out photo keeps its name, which the trainer leaves out
    info = pack(tmp_path / "p", clean, tmp_path / "work")
    assert info["files"] == {"clean": 3, "real_hazy_train": 1}

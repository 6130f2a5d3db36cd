"""training.contact_sheet writes a PNG grid of clean / depth / hazy tiles."""

from __future__ import annotations

import cv2

from training.cli import run_main
from training.contact_sheet import main


def test_contact_sheet_png(clean_folder, tmp_path, capsys):
    out = tmp_path / "runs" / "sheet.png"  # its folder is made, as in a fresh clone's runs/
    assert run_main(main, ["--out", str(out), "--images", str(clean_folder), "--rows", "2", "--draws", "2",
                           "--size", "64", "--real", str(clean_folder), "--real-count", "4"]) == 0
    sheet = cv2.imread(str(out))
    assert sheet.shape[1] == 4 * 64  # clean, depth, two hazy draws
    assert sheet.shape[0] == 22 + 2 * 64 + 22 + 64  # labels, two rows, comparison label, one row of real photos
    assert not list(out.parent.glob("*.tmp.*"))
    assert run_main(main, ["--out", str(tmp_path / "s.jpg"), "--images", str(clean_folder)]) == 2
    assert "must name a .png" in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_made_is_one_line(clean_folder, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert run_main(main, ["--out", str(tmp_path / "a_file" / "sheet.png"), "--images", str(clean_folder)]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot write into {tmp_path / 'a_file'}: ")

"""Every ```python block of the README runs, from a copy of the repository's layout."""

from __future__ import annotations

import os
import re
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "__readme__"})
    made = {p.name for p in tmp_path.iterdir()} - {"samples"}
    expected = {0: {"clear.mp4"}, 1: {"latest.jpg"}, 2: {"overlay.mp4"}, 3: {"gate.mp4", "yard.mp4"}}
    assert made == expected.get(index, made)
    for name in made:
        assert os.path.getsize(tmp_path / name) > 1000
    if index == 2:  # the callback's overlay is in every frame written
        with av.open(str(tmp_path / "overlay.mp4")) as video:
            frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
        assert len(frames) == 25
        assert all(np.abs(f[25:35, 150:195].astype(int) - (255, 0, 0)).max() < 40 for f in frames)

"""The in-memory API returns what it was given: type, shape, dtype, device, channel order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamdehaze import Dehazer, UsageError


@pytest.fixture(scope="module")
def dehazer():
    return Dehazer("dcp", device="cpu")


def test_numpy_bgr_frame_and_batch(dehazer, hazy_image):
    rgb = hazy_image(0, 80, 60)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    out = dehazer(bgr)
    assert out.shape == bgr.shape and out.dtype == np.uint8
    assert out.mean() < bgr.mean() - 10
    as_rgb = Dehazer("dcp", device="cpu", bgr=False)(rgb)
    assert np.array_equal(out, as_rgb[..., ::-1])  # channel order is honoured, not ignored
    batch = np.stack([bgr, bgr[::-1]])
    out_batch = dehazer(batch)
    assert out_batch.shape == batch.shape and np.array_equal(out_batch[0], out)


def test_torch_uint8_and_float(dehazer, hazy_image):
    rgb = torch.from_numpy(hazy_image(1, 64, 48)).permute(2, 0, 1)
    out8 = dehazer(rgb)
    assert out8.dtype == torch.uint8 and out8.shape == rgb.shape
    outf = dehazer(rgb.float() / 255)
    assert outf.dtype == torch.float32 and outf.shape == rgb.shape
    assert (outf * 255 - out8.float()).abs().max() <= 1.0


def test_bad_shapes_and_model(dehazer):
    with pytest.raises(ValueError, match="expected an image"):
        dehazer(np.zeros((10, 10), np.uint8))
    with pytest.raises(UsageError, match="unknown model"):
        Dehazer("nope")

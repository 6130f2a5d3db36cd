"""Image cache, windows and paired folders."""

from __future__ import annotations

import cv2
import pytest
import torch

from training.cli import UsageError
from training.data import ImageCache, PairedCache, random_windows
from training.images import list_images


def test_cache_holds_resized_images_with_depth(clean_folder):
    files = list_images(clean_folder)[:3]
    cache = ImageCache.load(files, short_side=64)
    assert len(cache) == 3 and cache.names == [f.name for f in files]
    stack = cache.stacks[0]
    assert stack.dtype == torch.uint8 and stack.shape == (4, 64, 85)  # RGB + depth, short side 64
    assert stack[3, :10].float().mean() > stack[3, -10:].float().mean()  # the sky is farther than the ground
    upscaled = ImageCache.load(files[:1], short_side=64, min_side=100)
    assert min(upscaled.stacks[0].shape[1:]) == 100


def test_given_depth_maps_are_used_and_must_match(clean_folder, tmp_path):
    depth = tmp_path / "depth"
    depth.mkdir()
    files = list_images(clean_folder)[:2]
    ramp = (torch.linspace(0, 255, 128).round().byte().expand(96, 128)).numpy()
    cv2.imwrite(str(depth / f"{files[0].stem}.png"), ramp)  # farther to the right
    cache = ImageCache.load(files[:1], short_side=96, depth_folder=depth)
    d = cache.stacks[0][3].float()
    assert d[:, :10].mean() < 20 and d[:, -10:].mean() > 235
    with pytest.raises(UsageError, match="no depth map"):
        ImageCache.load(files, short_side=96, depth_folder=depth)


def test_random_windows_are_deterministic_and_in_range(clean_folder):
    cache = ImageCache.load(list_images(clean_folder)[:4], short_side=64)
    a = random_windows(cache.stacks, 5, 48, torch.Generator().manual_seed(0))
    b = random_windows(cache.stacks, 5, 48, torch.Generator().manual_seed(0))
    assert a.shape == (5, 4, 48, 48) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    with pytest.raises(ValueError, match="smaller than"):
        random_windows(cache.stacks, 1, 65, torch.Generator())


def test_paired_folders_match_by_stem(clean_folder, tmp_path):
    hazy = tmp_path / "hazy"
    hazy.mkdir()
    for f in list_images(clean_folder)[:2]:
        cv2.imwrite(str(hazy / f"{f.stem}.jpg"), cv2.imread(str(f)))
    pairs = PairedCache.load(hazy, clean_folder, short_side=64)
    assert len(pairs) == 2 and pairs.hazy[0].shape == pairs.clean[0].shape
    cv2.imwrite(str(hazy / "stranger.png"), cv2.imread(str(list_images(clean_folder)[0])))
    with pytest.raises(UsageError, match="no clean image for stranger.png"):
        PairedCache.load(hazy, clean_folder, short_side=64)


def test_cache_reads_the_shared_photos(shared_data):
    files = list_images(shared_data / "clean")[:2]
    cache = ImageCache.load(files, short_side=128)
    assert all(min(s.shape[1:]) == 128 for s in cache.stacks)


def test_foggy_photos_are_dropped_from_the_cache(clean_folder, tmp_path):
    pytest.importorskip("pyfade")
    from training.metrics import fade_density

    crisp = list_images(clean_folder)[:2]
    for f in crisp:  # a thickly fogged copy of each photo
        rgb = cv2.imread(str(f)).astype("float32")
        cv2.imwrite(str(tmp_path / f"fog_{f.name}"), (0.25 * rgb + 0.75 * 200).round().astype("uint8"))
    cache = ImageCache.load([*crisp, *sorted(tmp_path.glob("fog_*"))], short_side=96)
    fog = {n: fade_density(s[:3].permute(1, 2, 0).numpy()) for n, s in zip(cache.names, cache.stacks)}
    threshold = (max(fog[f.name] for f in crisp) + min(fog[f"fog_{f.name}"] for f in crisp)) / 2
    kept, dropped = cache.without_fog(threshold)
    assert kept.names == [f.name for f in crisp] and dropped == [f"fog_{f.name}" for f in crisp]
    assert all(torch.equal(a, b) for a, b in zip(kept.stacks, cache.stacks[:2]))

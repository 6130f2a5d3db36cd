"""Image mode: one image in, one out; a folder in, a folder out with the same names."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import resource
import signal
import subprocess
import struct
import sys
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms


def _save(path, rgb):
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def test_single_image(run_cli, hazy_image, tmp_path):
    src = tmp_path / "hazy.png"
    _save(src, hazy_image(0, 97, 61))
    out = tmp_path / "clear.jpg"
    code, err = run_cli(src, out)
    assert code == 0, err
    assert "streamdehaze: 1 image in " in err
    result = cv2.imread(str(out))
    assert result.shape == (61, 97, 3)
    assert result.mean() < cv2.imread(str(src)).mean() - 10  # the veil is lifted


def test_a_photo_with_a_percent_sign_in_its_name_is_a_photo(run_cli, hazy_image, tmp_path):
    src = tmp_path / "fog 100%.jpg"  # not an image sequence: a file of that name exists
    _save(src, hazy_image(0, 64, 48))
    code, err = run_cli(src, tmp_path / "clear 100%.jpg", "--model", "dcp")
    assert code == 0 and "1 image in" in err, err
    assert cv2.imread(str(tmp_path / "clear 100%.jpg")).shape == (48, 64, 3)


def test_a_grey_photo_stays_grey(run_cli, hazy_image, tmp_path):
    # An infrared camera's picture: the network's offsets carry a faint airlight colour, which would tint it.
    src, out = tmp_path / "infrared.png", tmp_path / "clear.png"
    grey = hazy_image(0, 320, 240).mean(-1).round().astype(np.uint8)
    assert cv2.imwrite(str(src), grey)
    code, err = run_cli(src, out)
    assert code == 0, err
    result = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert result.shape == grey.shape  # written as it came: one grey channel
    assert result.std() > grey.std() * 1.2  # dehazed all the same
    as_colour = tmp_path / "colour.png"
    assert cv2.imwrite(str(as_colour), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    assert run_cli(as_colour, tmp_path / "colour_out.png")[0] == 0
    colour = cv2.imread(str(tmp_path / "colour_out.png"), cv2.IMREAD_UNCHANGED)
    assert np.ptp(colour, axis=-1).max() == 0 and np.array_equal(colour[..., 0], result)  # the same grey


def test_transparency_is_carried_over(run_cli, hazy_image, tmp_path):
    src = tmp_path / "logo.png"
    rgb = hazy_image(0, 64, 48)
    alpha = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    Image.fromarray(np.dstack([rgb, alpha])).save(src)
    assert run_cli(src, tmp_path / "clear.png", "--quiet")[0] == 0
    result = np.array(Image.open(tmp_path / "clear.png"))
    assert result.shape == (48, 64, 4) and np.array_equal(result[..., 3], alpha)
    assert result[..., :3].mean() < rgb.mean() - 10
    assert run_cli(src, tmp_path / "clear.jpg", "--quiet")[0] == 0  # JPEG holds no alpha: the colour goes alone
    assert np.abs(cv2.imread(str(tmp_path / "clear.jpg"))[..., ::-1].astype(int) - result[..., :3]).mean() < 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_read_as_opencv_shows_it(hazy_image, tmp_path, orientation):
    from streamdehaze.images import read_image
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    src = tmp_path / "turned.png"
    Image.fromarray(hazy_image(0, 40, 30)).save(src, exif=exif.tobytes())
    assert np.array_equal(read_image(src), cv2.imread(str(src))[..., ::-1])


def test_sixteen_bit_image_stays_sixteen_bit(run_cli, hazy_image, tmp_path):
    src = tmp_path / "deep.png"
    _save(src, hazy_image(0, 40, 30).astype(np.uint16) * 257)
    out = tmp_path / "deep_out.png"
    assert run_cli(src, out, "--quiet")[0] == 0
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_a_sixteen_bit_image_into_an_eight_bit_format_is_scaled(run_cli, hazy_image, tmp_path):
    src, shallow = tmp_path / "deep.png", tmp_path / "shallow.png"
    _save(src, hazy_image(0, 40, 30).astype(np.uint16) * 257)
    _save(shallow, hazy_image(0, 40, 30))
    for suffix in (".jpg", ".webp", ".bmp"):
        code, err = run_cli(src, tmp_path / f"deep{suffix}")
        assert code == 0 and "WARN" not in err, err
        assert run_cli(shallow, tmp_path / f"shallow{suffix}", "--quiet")[0] == 0
        deep, eight = (cv2.imread(str(tmp_path / f"{name}{suffix}")).astype(int) for name in ("deep", "shallow"))
        assert np.abs(deep - eight).mean() < 2  # not clipped to white


def _exif_and_profile() -> tuple[Image.Exif, bytes]:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "FogCam"
    exif[ExifTags.Base.Orientation] = 6  # shown turned a quarter clockwise
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2026:12:05 07:30:00"
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] = (52.0, 13.0, 30.5)
    return exif, ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".avif"])
def test_a_photo_keeps_its_exif_and_colour_profile(run_cli, hazy_image, tmp_path, suffix):
    exif, profile = _exif_and_profile()
    src, out = tmp_path / f"hazy{suffix}", tmp_path / f"clear{suffix}"
    Image.fromarray(hazy_image(0, 80, 60)).save(src, exif=exif.tobytes(), icc_profile=profile, quality=95)
    code, err = run_cli(src, out)
    assert code == 0, err
    with Image.open(out) as result:
        kept = result.getexif()
        assert result.size == (60, 80)  # written upright, as it was shown ...
        assert ExifTags.Base.Orientation not in kept  # ... so nothing turns it again
        assert kept[ExifTags.Base.Make] == "FogCam"
        assert kept.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == "2026:12:05 07:30:00"
        assert kept.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] == (52.0, 13.0, 30.5)
        assert result.info["icc_profile"] == profile


def test_a_turned_tiff_is_read_upright(run_cli, hazy_image, tmp_path):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    src, out = tmp_path / "turned.tiff", tmp_path / "clear.png"
    Image.fromarray(hazy_image(0, 80, 60)).save(src, exif=exif.tobytes())
    code, err = run_cli(src, out)
    assert code == 0, err
    result = cv2.imread(str(out))
    assert result.shape == (80, 60, 3) and result.mean() < hazy_image(0, 80, 60).mean() - 10


@pytest.mark.parametrize("layout", ["grey", "rgba", "grey16"])
def test_a_turned_tiff_keeps_its_layout(run_cli, hazy_image, tmp_path, layout):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored a quarter turn anticlockwise of upright
    rgb = hazy_image(0, 80, 60)
    upright = {"grey": rgb[..., 1], "rgba": np.dstack([rgb, np.full((60, 80), 100, np.uint8)]),
               "grey16": rgb[..., 1].astype(np.uint16) * 257}[layout]
    src, out = tmp_path / "turned.tiff", tmp_path / "clear.tiff"
    Image.fromarray(np.rot90(upright)).save(src, exif=exif.tobytes())
    code, err = run_cli(src, out, "--strength", 0)
    assert code == 0, err
    result = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)  # (once grey and alpha became RGB, and 16 bits an error)
    assert result.shape == upright.shape and result.dtype == upright.dtype
    assert np.abs(result.astype(int) - cv2.cvtColor(upright, cv2.COLOR_RGBA2BGRA) if layout == "rgba"
                  else result.astype(int) - upright).max() <= (257 if layout == "grey16" else 1)


@pytest.mark.parametrize("layout", ["rgba", "grey_alpha", "rgba16", "cmyk"])
@pytest.mark.parametrize("turned", [False, True])
def test_a_tiff_keeps_its_colours_and_transparency(run_cli, hazy_image, tmp_path, layout, turned):
    """OpenCV reads an 8-bit TIFF through libtiff's RGBA reader, which multiplied the transparency into the colours
    (the see-through parts of a photo came out dark, at --strength 0 too) and dropped a grey one's; a CMYK one
    gained an alpha channel. Its own RGBA output, which has no tag to call the fourth sample alpha, reads back."""
    tifffile = pytest.importorskip("tifffile")
    rgb = hazy_image(0, 80, 60)
    alpha = np.tile(np.linspace(0, 255, 80).astype(np.uint8), (60, 1))  # (see-through to opaque)
    want = {"rgba": np.dstack([rgb, alpha]), "grey_alpha": np.dstack([rgb[..., 1]] * 3 + [alpha]),
            "rgba16": np.dstack([rgb, alpha]).astype(np.uint16) * 257, "cmyk": rgb}[layout]
    stored = np.rot90(want) if turned else want
    src, out, again = tmp_path / "in.tiff", tmp_path / "out.tiff", tmp_path / "again.tiff"
    tags = {"extratags": [(ExifTags.Base.Orientation, "H", 1, 6, False)]} if turned else {}
    if layout == "grey_alpha":
        tifffile.imwrite(src, stored[..., [0, 3]], photometric="minisblack", extrasamples=["unassalpha"], **tags)
    elif layout == "cmyk":
        tifffile.imwrite(src, np.dstack([255 - stored, np.zeros(stored.shape[:2], np.uint8)]), photometric="separated",
                         **tags)
    else:
        tifffile.imwrite(src, stored, photometric="rgb", extrasamples=["unassalpha"], **tags)
    code, err = run_cli(src, out, "--strength", 0)
    assert code == 0, err
    for written in (out, again):
        # (read back by Pillow; 16 bits, which it reads as 8, by OpenCV, whose 16-bit reading keeps them apart)
        result = cv2.cvtColor(cv2.imread(str(written), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA) \
            if layout == "rgba16" else np.asarray(Image.open(written))
        assert result.shape == want.shape and result.dtype == want.dtype
        assert np.abs(result.astype(int) - want).max() <= (257 if layout == "rgba16" else 1)
        if layout == "cmyk":
            break
        assert run_cli(out, again, "--strength", 0)[0] == 0  # (its own output, dehazed again)


def test_floating_point_samples_are_one_line(run_cli, tmp_path):
    src = tmp_path / "linear.tiff"
    Image.fromarray(np.full((30, 40), 0.5, np.float32)).save(src)
    code, err = run_cli(src, tmp_path / "clear.png")
    assert code == 1 and err.strip() == f"streamdehaze: error: cannot read image {src}: float32 samples (8- and " \
                                       "16-bit images are read)"


def test_a_file_name_that_is_not_utf8_is_read(hazy_image, tmp_path):
    # An old camera card's or a Windows zip's Latin-1 name: OpenCV's imread took the process down with it.
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    name = b"caf\xe9.jpg"
    _save(src / "plain.jpg", hazy_image(0, 64, 48))
    (src / os.fsdecode(name)).write_bytes((src / "plain.jpg").read_bytes())
    for args in ([src / os.fsdecode(name), tmp_path / "one.jpg"], [src, out],
                 [src / "plain.jpg", tmp_path / os.fsdecode(name)]):  # (an output so named was an internal error)
        run = subprocess.run([sys.executable, "-m", "streamdehaze", *map(os.fsencode, args), b"--model", b"dcp"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(os.fsencode(out))) == [name, b"plain.jpg"]
    assert cv2.imread(str(tmp_path / "one.jpg")).shape == (48, 64, 3)
    assert cv2.imdecode(np.fromfile(tmp_path / os.fsdecode(name), np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)


def test_sixteen_bit_photos_in_a_folder_keep_their_colour_profile(run_cli, hazy_image, tmp_path):
    _, profile = _exif_and_profile()
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    deep = np.ascontiguousarray(hazy_image(1, 40, 30)[..., ::-1]).astype(np.uint16) * 257
    ok, data = cv2.imencodeWithMetadata(".png", deep, [cv2.IMAGE_METADATA_ICCP], [np.frombuffer(profile, np.uint8)])
    (src / "deep.png").write_bytes(bytes(data))
    assert ok and run_cli(src, out, "--quiet")[0] == 0
    assert cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    with Image.open(out / "deep.png") as result:
        assert result.info["icc_profile"] == profile


def test_a_failed_write_is_one_line_and_leaves_nothing(tmp_path):
    src, out = tmp_path / "hazy.png", tmp_path / "clear.png"
    _save(src, np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))  # 360 KB

    def small_files() -> None:  # a full disk, as far as this process can tell
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    run = subprocess.run([sys.executable, "-m", "streamdehaze", src, out, "--model", "dcp"], preexec_fn=small_files,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr == f"streamdehaze: error: writing {out} failed: File too large\n"
    assert [p.name for p in tmp_path.iterdir()] == ["hazy.png"]


def test_folder_to_folder(run_cli, hazy_image, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    names = ["a.png", "b.jpg", "c.bmp"]
    for i, name in enumerate(names):
        _save(src / name, hazy_image(i, 50, 40))
    (src / "readme.txt").write_text("not an image")
    out = tmp_path / "out"
    code, err = run_cli(src, out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == names
    assert "3 images in" in err


def test_folder_without_images(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, err = run_cli(tmp_path / "empty", tmp_path / "out")
    assert code == 2 and "no images" in err


def test_image_to_video_name_is_refused(run_cli, hazy_image, tmp_path):
    src = tmp_path / "x.png"
    _save(src, hazy_image(0, 20, 20))
    code, err = run_cli(src, tmp_path / "x.mp4")
    assert code == 2 and "must be an image file" in err


def test_corrupt_image(run_cli, tmp_path):
    src = tmp_path / "broken.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    code, err = run_cli(src, tmp_path / "o.png")
    assert code == 1 and "cannot read image" in err
    assert not (tmp_path / "o.png").exists()


def test_images_run_at_native_resolution_unless_told(monkeypatch):
    import torch

    from streamdehaze.images import image_engine
    from streamdehaze.models.dcp import DarkChannelPrior

    assert image_engine(DarkChannelPrior(), "cpu").infer_size is None  # video would use dcp's 192
    assert image_engine(DarkChannelPrior(), "cpu", 128).infer_size == 128
    seen = []

    class Recording(DarkChannelPrior):
        def forward(self, rgb):
            seen.append(tuple(rgb.shape[-2:]))
            return super().forward(rgb)

    image_engine(Recording(), "cpu").process_rgb(torch.rand(1, 3, 300, 400))
    assert seen == [(300, 400)]


def test_folder_goes_on_past_bad_images(run_cli, hazy_image, caplog, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    good = ["a.png", "c.jpg", "f.bmp"]
    for i, name in enumerate(good + ["b_truncated.jpg", "e_truncated.png"]):
        _save(src / name, hazy_image(i, 120, 90))
    for name in ("b_truncated.jpg", "e_truncated.png"):  # cut in the middle of the picture data
        data = (src / name).read_bytes()
        (src / name).write_bytes(data[: len(data) // 2])
    (src / "d_corrupt.png").write_bytes(b"not a picture at all")
    (src / "g_empty.jpg").write_bytes(b"")  # (each of these two stopped the run, good images unwritten)
    (src / "h_huge.png").write_bytes(_png_header(60000, 60000))
    code, err = run_cli(src, out, "--stats-json", tmp_path / "stats.json")
    assert code == 1
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["images"] == 3  # what was written, said all the same
    # what ran, as a video run's statistics say it: the model's short side, raised for photos above 4x of it
    assert (stats["infer_size"], stats["max_upscale"], stats["device"]) == (176, 4.0, "cpu")
    assert sorted(p.name for p in out.iterdir()) == good  # every good image written
    for name in good:
        assert cv2.imread(str(out / name)).shape == (90, 120, 3)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().endswith("; skipped")]
    assert skipped == [f"cannot read image {src / 'b_truncated.jpg'}: truncated (its data ends before the picture "
                       "does); skipped",
                       f"cannot read image {src / 'd_corrupt.png'}: not an image, or corrupt; skipped",
                       f"cannot read image {src / 'e_truncated.png'}: truncated (its data ends before the picture "
                       "does); skipped",
                       f"cannot read image {src / 'g_empty.jpg'}: the file is empty; skipped",
                       f"cannot read image {src / 'h_huge.png'}: more than 2^30 pixels, OpenCV's limit; skipped"]
    assert err == f"streamdehaze: error: 5 of 8 images could not be read or written and were skipped (named above); " \
                  f"the other 3 are in {out}\n"


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header states ``width`` x ``height`` RGB, with a few bytes of picture."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))


def test_truncated_jpeg_is_refused(run_cli, hazy_image, tmp_path):
    src = tmp_path / "cut.jpg"
    _save(src, hazy_image(0, 64, 48))
    src.write_bytes(src.read_bytes()[:-200])
    code, err = run_cli(src, tmp_path / "o.jpg")
    assert code == 1 and "truncated" in err and not (tmp_path / "o.jpg").exists()


def test_statistics_are_not_written_over_a_photo_of_the_folder_run(run_cli, hazy_image, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.jpg", "b.png"):
        _save(src / name, hazy_image(0, 64, 48))
    # (it wrote both photos, then the statistics over b.png, and said all was well)
    assert run_cli(src, out, "--model", "dcp", "--stats-json", out / "b.png") == (
        2, f"streamdehaze: error: --stats-json {out / 'b.png'} is an output of the run (b.png): name the statistics "
           "file otherwise\n")
    assert not out.exists()


def test_an_empty_photo_is_refused_as_an_empty_video_is(run_cli, tmp_path):
    for name in ("empty.jpg", "empty.mp4"):
        (tmp_path / name).write_bytes(b"")
        assert run_cli(tmp_path / name, tmp_path / f"o{Path(name).suffix}") == (
            2, f"streamdehaze: error: input is empty: {tmp_path / name}\n")


def test_jpeg_truncation_is_told_from_a_whole_file(hazy_image, tmp_path):
    from streamdehaze.truncation import jpeg_truncated

    path = tmp_path / "p.jpg"
    for progressive in (0, 1):
        assert cv2.imwrite(str(path), hazy_image(0, 64, 48), [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive])
        data = path.read_bytes()
        assert not jpeg_truncated(data)
        assert not jpeg_truncated(data + b"trailing bytes \xff\xda after the end")
        assert all(jpeg_truncated(data[:n]) for n in range(4, len(data) - 1, 97))
    assert not jpeg_truncated(b"\x89PNG not a jpeg at all")


def test_png_truncation_is_told_from_a_whole_file(hazy_image, tmp_path):
    from streamdehaze.truncation import png_truncated

    path = tmp_path / "p.png"
    assert cv2.imwrite(str(path), hazy_image(0, 64, 48))
    data = path.read_bytes()
    assert not png_truncated(data)
    assert all(png_truncated(data[:n]) for n in range(9, len(data) - 1, 97))


def test_noise_floor_from_the_command_line(run_cli, hazy_image, tmp_path):
    """``--noise-floor`` reaches the photo's engine (the sky's noise is not amplified) and the stats."""
    rgb = hazy_image(0, 200, 120)
    rgb[:60] = np.clip(185 + np.random.default_rng(0).normal(0, 1, (60, 200, 1)), 0, 255).astype(np.uint8)
    src = tmp_path / "hazy.png"
    _save(src, rgb)
    fine = {}
    for floor in ("0", "3"):
        out, stats = tmp_path / f"clear{floor}.png", tmp_path / f"stats{floor}.json"
        code, err = run_cli(src, out, "--noise-floor", floor, "--stats-json", stats, "--quiet")
        assert code == 0 and json.loads(stats.read_text())["noise_floor"] == float(floor), err
        sky = cv2.imread(str(out)).astype(np.float32)[8:52, 8:-8]
        fine[floor] = (sky - cv2.blur(sky, (9, 9))).std()
    assert fine["3"] < 0.7 * fine["0"], fine


def test_a_photo_run_leaves_a_file_named_like_a_partial_alone(run_cli, hazy_image, tmp_path):
    # Only a video run keeps NAME.partial.EXT when interrupted; beside a photo, a file of that name is the user's.
    src, out = tmp_path / "hazy.jpg", tmp_path / "eclipse.jpg"
    _save(src, hazy_image(0, 64, 48))
    _save(tmp_path / "eclipse.partial.jpg", hazy_image(1, 64, 48))
    assert run_cli(src, out, "--model", "dcp")[0] == 0
    assert (tmp_path / "eclipse.partial.jpg").exists() and out.exists()


def test_a_png_with_bytes_after_its_end_is_whole(run_cli, hazy_image, tmp_path):
    # Some cameras and editors append a trailer; only a PNG that ends before its IEND chunk is truncated.
    src = tmp_path / "trailer.png"
    ok, data = cv2.imencode(".png", hazy_image(0, 64, 48))
    src.write_bytes(bytes(data) + bytes(5000))
    assert run_cli(src, tmp_path / "clear.png", "--model", "dcp")[0] == 0
    src.write_bytes(bytes(data)[:-20])
    code, err = run_cli(src, tmp_path / "clear.png", "--model", "dcp")
    assert code == 1 and "truncated" in err


def test_a_folder_from_a_mac_is_done_without_its_hidden_files(run_cli, hazy_image, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _save(src / "fog.jpg", hazy_image(0, 64, 48))
    (src / "._fog.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(80))  # AppleDouble: the photo's Finder info
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 0 and "1 image in" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["fog.jpg"]


def test_a_large_colour_profile_goes_into_a_jpeg_in_parts(run_cli, hazy_image, tmp_path):
    # A JPEG segment holds 64 KB; a printer's or a CMYK profile is larger (OpenCV's writer failed on them).
    _, profile = _exif_and_profile()
    large = (len(profile) + 100_000).to_bytes(4, "big") + profile[4:] + bytes(100_000)  # (its size in its header)
    src, out = tmp_path / "hazy.png", tmp_path / "clear.jpg"
    ok, data = cv2.imencodeWithMetadata(".png", hazy_image(0, 64, 48), [cv2.IMAGE_METADATA_ICCP],
                                        [np.frombuffer(large, np.uint8)])
    assert ok
    src.write_bytes(bytes(data))
    assert run_cli(src, out, "--model", "dcp")[0] == 0
    with Image.open(out) as result:
        assert result.info["icc_profile"] == large and result.size == (64, 48)
        result.load()  # and the picture is whole


def test_a_colour_profile_of_other_pixels_is_left_out(run_cli, hazy_image, tmp_path):
    # A grey photo's profile describes one channel: a grey JPEG keeps it, but on the RGB pixels of a WebP colour
    # managers refuse it.
    _, rgb = _exif_and_profile()
    grey = rgb[:16] + b"GRAY" + rgb[20:]  # (the colour space an ICC profile is for, in its header)
    src = tmp_path / "hazy.jpg"
    Image.fromarray(hazy_image(0, 64, 48)[..., 1]).save(src, icc_profile=grey)
    for suffix, kept in ((".jpg", grey), (".webp", None)):
        out = tmp_path / f"clear{suffix}"
        assert run_cli(src, out, "--model", "dcp")[0] == 0
        with Image.open(out) as result:
            assert result.info.get("icc_profile") == kept, suffix


def test_an_animated_image_is_said_to_be_dehazed_as_its_first_picture(run_cli, hazy_image, caplog, tmp_path):
    src = tmp_path / "loop.webp"
    frames = [Image.fromarray(hazy_image(i, 64, 48)) for i in range(3)]
    frames[0].save(src, save_all=True, append_images=frames[1:], lossless=True)
    assert run_cli(src, tmp_path / "clear.webp", "--model", "dcp")[0] == 0
    assert f"{src} holds 3 pictures: the first is dehazed" in caplog.text


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_a_tiff_s_description_goes_along_without_its_file_structure(run_cli, hazy_image, tmp_path, suffix):
    # A scanner's or a drone's TIFF says what took it and when in its first IFD, beside the strip offsets and sizes
    # that describe the TIFF file itself (meaningless in another).
    exif = Image.Exif()
    exif[ExifTags.Base.Make], exif[ExifTags.Base.DateTime] = "FogCam", "2026:12:05 07:30:00"
    src, out = tmp_path / "scan.tiff", tmp_path / f"clear{suffix}"
    Image.fromarray(hazy_image(0, 64, 48)).save(src, exif=exif)
    assert run_cli(src, out, "--model", "dcp")[0] == 0
    with Image.open(out) as result:
        kept = result.getexif()
    assert (kept[ExifTags.Base.Make], kept[ExifTags.Base.DateTime]) == ("FogCam", "2026:12:05 07:30:00")
    assert ExifTags.Base.StripOffsets not in kept and ExifTags.Base.ImageWidth not in kept


class _Camera(http.server.SimpleHTTPRequestHandler):
    """Files of a folder over HTTP, behind basic authentication (a camera's snapshot URL)."""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"cam:s3cret").decode():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="camera"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.served.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


def test_an_image_url_is_an_image(run_cli, hazy_image, tmp_path):
    """An http(s) URL of an image file is read once and dehazed as the same file on disk is, EXIF and colour profile
    kept. (It was taken for a camera: "input is a video" for an image output, and a video output dialled it again
    as fast as it ended.)"""
    exif, profile = _exif_and_profile()
    (tmp_path / "www").mkdir()
    src = tmp_path / "www" / "snapshot.jpg"
    Image.fromarray(hazy_image(0, 80, 60)).save(src, exif=exif.tobytes(), icc_profile=profile, quality=95)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_Camera, directory=str(tmp_path / "www")))
    server.served = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://cam:s3cret@127.0.0.1:{server.server_address[1]}"
    try:
        code, err = run_cli(f"{base}/snapshot.jpg", tmp_path / "from-url.jpg")
        assert code == 0 and "1 image in" in err and "s3cret" not in err, err
        assert server.served == ["/snapshot.jpg"]
        code, err = run_cli(f"{base}/gone.jpg", tmp_path / "gone.jpg")
        assert code == 1 and "404" in err and "s3cret" not in err and len(err.strip().splitlines()) == 1, err
        code, err = run_cli(f"{base}/snapshot.jpg", tmp_path / "clip.mp4")
        assert code == 2 and "output must be an image file" in err, err
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert run_cli(src, tmp_path / "from-file.jpg")[0] == 0
    assert np.array_equal(cv2.imread(str(tmp_path / "from-url.jpg")), cv2.imread(str(tmp_path / "from-file.jpg")))
    with Image.open(tmp_path / "from-url.jpg") as result:
        assert result.size == (60, 80) and result.getexif()[ExifTags.Base.Make] == "FogCam"
        assert result.info["icc_profile"] == profile
    assert not (tmp_path / "gone.jpg").exists() and not (tmp_path / "clip.mp4").exists()


class _Endless(http.server.BaseHTTPRequestHandler):
    """A snapshot URL whose body never ends (a stream behind an image's name, or a hostile server)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        chunk = b"\xff\xd8" + bytes(1 << 20)
        try:
            while True:
                self.wfile.write(chunk)
        except OSError:  # (the reader gave up)
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_an_image_url_that_never_ends_is_read_up_to_a_limit(run_cli, tmp_path):
    """It was read into memory for as long as it went on (632 MB after 3 s)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/snap.jpg?token=T"
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        code, err = run_cli(url, tmp_path / "snap.jpg", "--model", "dcp")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - grown) << 10  # (KiB on Linux)
    assert (code, err) == (1, f"streamdehaze: error: cannot read image {url[:-1]}***: it goes on past 256 MB, more "
                              "than any photo (a stream?)\n")
    assert grown < 1 << 30
    assert not list(tmp_path.iterdir())


def _heic(path, rgb, **options):
    """A HEIC as a phone writes one: HEVC tiles in a grid (FFmpeg reads each tile as a video stream of its own)."""
    import pillow_heif
    heif = pillow_heif.from_bytes("RGB", (rgb.shape[1], rgb.shape[0]), np.ascontiguousarray(rgb).tobytes())
    if "icc_profile" in options:
        heif.info["icc_profile"] = options.pop("icc_profile")
    heif.save(path, quality=95, tile_size=256, **options)


def test_a_phone_s_heic_photo_is_a_photo(run_cli, hazy_image, tmp_path):
    """An iPhone's photo (HEIC: tiles in a grid, turned by the file, with EXIF and a colour profile) is read by
    libheif, upright, and dehazed as the same picture in a PNG is; JPEG and HEIC outputs keep its EXIF and profile.
    It was taken for a video of one 256x256 tile."""
    import pillow_heif
    exif, profile = _exif_and_profile()
    src = tmp_path / "IMG_0001.HEIC"
    _heic(src, hazy_image(0, 640, 480), exif=exif.tobytes(), icc_profile=profile)  # (EXIF orientation 6 turns it)
    shown = np.asarray(pillow_heif.open_heif(src))
    assert shown.shape == (640, 480, 3)
    png = tmp_path / "same.png"
    _save(png, shown)
    assert run_cli(png, tmp_path / "same_clear.png")[0] == 0
    expected = cv2.imread(str(tmp_path / "same_clear.png")).astype(float)
    for out in (tmp_path / "clear.jpg", tmp_path / "clear.heic"):
        code, err = run_cli(src, out)
        assert code == 0, err
        with Image.open(out) if out.suffix == ".jpg" else _pillow_of_heic(out) as result:
            kept = result.getexif()
            assert result.size == (480, 640)
            assert ExifTags.Base.Orientation not in kept  # (written upright: nothing turns it again)
            assert kept[ExifTags.Base.Make] == "FogCam"
            assert kept.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] == (52.0, 13.0, 30.5)
            assert result.info["icc_profile"] == profile
            got = np.asarray(result.convert("RGB"))[..., ::-1].astype(float)
        assert np.abs(got - expected).mean() < 2.5, out  # the same picture (JPEG's and HEVC's losses apart)


def _pillow_of_heic(path):
    import pillow_heif
    heif = pillow_heif.open_heif(path)
    image = Image.frombytes(heif.mode, heif.size, heif.data, "raw", heif.mode, heif.stride)
    image.info.update(icc_profile=heif.info.get("icc_profile"), exif=heif.info.get("exif"))
    return image


def test_a_folder_of_heic_photos(run_cli, hazy_image, tmp_path):
    src, out = tmp_path / "phone", tmp_path / "out"
    src.mkdir()
    _heic(src / "IMG_0001.HEIC", hazy_image(0, 96, 64))
    _save(src / "IMG_0002.PNG", hazy_image(1, 96, 64))
    code, err = run_cli(src, out)
    assert code == 0 and "2 images in" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["IMG_0001.HEIC", "IMG_0002.PNG"]
    import pillow_heif
    assert pillow_heif.open_heif(out / "IMG_0001.HEIC").size == (96, 64)


def test_a_truncated_heic_is_refused(run_cli, hazy_image, tmp_path):
    """libheif decodes the tiles whose data is missing into noise without a word, as libjpeg pads a JPEG with grey."""
    whole, cut = tmp_path / "whole.heic", tmp_path / "cut.heic"
    _heic(whole, hazy_image(0, 640, 480))
    cut.write_bytes(whole.read_bytes()[:-2000])
    code, err = run_cli(cut, tmp_path / "clear.jpg")
    assert code == 1 and err.strip() == (f"streamdehaze: error: cannot read image {cut}: truncated (its data ends "
                                         "before the picture does)"), err
    assert run_cli(whole, tmp_path / "clear.jpg")[0] == 0


def test_heic_without_pillow_heif_is_one_line(run_cli, hazy_image, tmp_path, monkeypatch):
    src = tmp_path / "IMG_0001.HEIC"
    _heic(src, hazy_image(0, 96, 64))
    _save(tmp_path / "IMG_0000.PNG", hazy_image(1, 96, 64))
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # (not installed: its import fails)
    for out in (tmp_path / "clear.jpg", tmp_path / "out"):  # (a folder's: before any photo is written)
        code, err = run_cli(src if out.suffix else tmp_path, out)
        assert code == 2 and err.strip() == ("streamdehaze: error: HEIC/HEIF photos need the optional package "
                                             "pillow-heif: pip install 'streamdehaze[heif]'"), err
        assert not out.exists() or not any(out.iterdir())


def test_a_lossy_photo_s_webp_is_lossy_and_a_lossless_one_s_lossless(run_cli, hazy_image, tmp_path):
    # OpenCV writes WebP lossless unless told: a photo of 50 KB came back as 800 KB.
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    picture = np.clip(hazy_image(0, 320, 240).astype(int) + rng.integers(-20, 20, (240, 320, 3)), 0, 255)
    Image.fromarray(picture.astype(np.uint8)).save(src / "lossy.webp", quality=80)
    Image.fromarray(picture.astype(np.uint8)).save(src / "lossless.webp", lossless=True)
    assert run_cli(src, out, "--model", "dcp", "--quiet")[0] == 0
    for name, chunk in (("lossy.webp", b"VP8 "), ("lossless.webp", b"VP8L")):
        data = (out / name).read_bytes()
        assert data[12:16] == chunk, (name, data[12:16])
    assert (out / "lossy.webp").stat().st_size < 3 * (src / "lossy.webp").stat().st_size


def test_a_large_photo_is_read_without_pillow_s_warning(hazy_image, tmp_path):
    # A photo of 90 to 180 megapixels printed Pillow's DecompressionBombWarning with its source file and line of
    # code (here the limit is lowered, for a small photo to pass it).
    src = tmp_path / "large.jpg"
    _save(src, hazy_image(0, 64, 48))
    script = ("import sys, warnings, PIL.Image; PIL.Image.MAX_IMAGE_PIXELS = 2000; from streamdehaze.cli import main;"
              "code = main(sys.argv[1:]); warnings.warn('a library said so'); sys.exit(code)")
    run = subprocess.run([sys.executable, "-c", script, src, tmp_path / "o.jpg", "--model", "dcp", "--quiet"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and run.stderr.splitlines() == ["<string>:1: UserWarning: a library said so"], \
        run.stderr
    assert cv2.imread(str(tmp_path / "o.jpg")).shape == (48, 64, 3)


def test_a_folder_run_says_what_it_leaves_out(run_cli, hazy_image, caplog, tmp_path):
    # Notes, a GIF (a video), a subfolder were passed over without a word; the output folder inside is not named.
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    _save(src / "a.jpg", hazy_image(0, 64, 48))
    (src / "notes.txt").write_text("fog on the 3rd")
    (src / "clip.gif").write_bytes(b"GIF89a")
    assert run_cli(src, src / "out", "--model", "dcp")[0] == 0
    said = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert said == [f"3 left out of {src}, not images: clip.gif, notes.txt, sub/ (streamdehaze batch takes videos "
                    "and subfolders too)"]
    assert sorted(p.name for p in (src / "out").iterdir()) == ["a.jpg"]


def test_options_of_video_alone_given_for_a_photo_are_said_to_be_ignored(run_cli, hazy_image, caplog, tmp_path):
    # --codec, --compile, --temporal ... were taken without a word, as though they applied
    _save(tmp_path / "a.jpg", hazy_image(0, 64, 48))
    code, _ = run_cli(tmp_path / "a.jpg", tmp_path / "b.jpg", "--model", "dcp", "--codec", "libx265", "--compile",
                      "--temporal", "ema", "--duration", "2")
    assert code == 0 and (tmp_path / "b.jpg").exists()
    said = [r.getMessage() for r in caplog.records if "for video only" in r.getMessage()]
    assert said == ["--compile, --codec, --duration: for video only; images are dehazed without them"]


def test_an_interrupted_folder_says_how_many_images_are_done(run_cli, hazy_image, tmp_path, monkeypatch, caplog):
    # It said only "interrupted": which images were written, and where, was left to be found out
    from streamdehaze import images

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(5):
        _save(src / f"{i}.png", hazy_image(i, 48, 32))
    write = images.dehaze_image_file
    count = []

    def interrupted_at_the_fourth(engine, path, dst):
        count.append(path)
        if len(count) == 4:
            raise KeyboardInterrupt
        write(engine, path, dst)

    monkeypatch.setattr(images, "dehaze_image_file", interrupted_at_the_fourth)
    code, err = run_cli(src, out, "--model", "dcp")
    assert code == 130 and err == "streamdehaze: interrupted\n" and f"3 of 5 images are in {out}" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png"]

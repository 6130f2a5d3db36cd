"""The evaluation's data: held-out photos hazed two ways, real hazy photos, and real foggy clips.

Held-out photos are the clean photos that training never sees (``training.evaldata``: a file-name hash, the
split ``data.val_fraction`` makes), at their full resolution, hazed by two independent models:

* ``ours``: ``training.synthesis.synthesize_haze`` with its default ranges (pseudo-depth, density and airlight
  fields, illumination change, blur, sensor noise, JPEG);
* ``classic``: textbook scattering :math:`I = J t + A (1 - t)`, nothing else (no noise, blur or JPEG). Depth is
  a ground plane seen from eye level, which knows nothing of the picture: above a horizon row
  :math:`y_h` (drawn in 25-55 % of the height) everything is at the far distance 1; below it the distance falls
  as :math:`D(y) = \\min(1, n (H - y_h) / (y - y_h))`, reaching the nearest distance :math:`n \\in [0.1, 0.3]`
  at the bottom row. :math:`t = e^{-\\beta D}` with :math:`\\beta \\in [0.8, 2.5]`; the airlight is uniform,
  brightness :math:`a \\in [0.75, 0.95]`, tint :math:`k \\in [-1, 1]` along (0.06, 0, -0.08) (negative:
  blue-grey mist, positive: yellow-grey smog), normalised by its largest channel.

Both draw their parameters from a generator seeded by the file name, so every run scores the same pairs, and both
come out quantised to 8 bits, as a camera or a file delivers them.

Real foggy clips: ``real_video/dvd_fog_1080p.mp4``, slow camera pans made here over the largest real hazy
photos (real haze, synthetic motion), and fixed cameras looking at the same photos through sensor noise and a
camera's H.264 (real haze, synthetic noise), written into the evaluation's output folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from training.data import split_files
from training.evaldata import HELD_OUT
from training.images import list_images, read_rgb
from training.synthesis import synthesize_haze

HAZE_MODELS = ("ours", "classic")
SMPTE170M = 6  # AVColorSpace of BT.601 (525-line), what swscale converts RGB with


@dataclass(frozen=True)
class Pair:
    """A held-out photo: its name, and clean and hazy uint8 RGB ``[H,W,3]`` at full resolution."""

    name: str
    clean: np.ndarray
    hazy: np.ndarray


def _seed(name: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha1(f"{salt}:{name}".encode()).digest()[:8], "big") % (2 ** 63)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def classic_haze(clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The ``classic`` haze model (module docstring) on one clean RGB image ``[3,H,W]`` in [0, 1]."""
    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    h = clean.shape[1]
    horizon, near = uniform(0.25, 0.55) * h, uniform(0.1, 0.3)
    beta, brightness, tint = uniform(0.8, 2.5), uniform(0.75, 0.95), uniform(-1.0, 1.0)
    rows = torch.arange(h, dtype=torch.float32) + 0.5
    below = (rows - horizon).clamp(min=1e-6)
    depth = torch.where(rows > horizon, (near * (h - horizon) / below).clamp(max=1.0), torch.ones(h))
    t = torch.exp(-beta * depth).view(1, h, 1)
    colour = 1 + tint * torch.tensor([0.06, 0.0, -0.08])
    airlight = (brightness * colour / colour.max()).view(3, 1, 1)
    return clean * t + airlight * (1 - t)


def held_out_pairs(clean_folder: Path, haze: str, val_fraction: float = HELD_OUT) -> Iterator[Pair]:
    """Every held-out clean photo at full resolution with its ``haze`` (``ours`` or ``classic``) version."""
    if haze not in HAZE_MODELS:
        raise ValueError(f"unknown haze model {haze!r}; choose {' or '.join(HAZE_MODELS)}")
    _, held_out = split_files(list_images(clean_folder), val_fraction)
    for path in held_out:
        clean = torch.from_numpy(read_rgb(path)).permute(2, 0, 1).float() / 255
        generator = torch.Generator().manual_seed(_seed(path.name, haze))
        if haze == "ours":
            hazy = synthesize_haze(clean[None], generator).hazy[0]
        else:
            hazy = classic_haze(clean, generator)
        yield Pair(path.name, _to_uint8(clean), _to_uint8(hazy))


def make_pan(photo: np.ndarray, path: Path, frames: int = 50, size: tuple[int, int] = (640, 360),
             fps: int = 25) -> Path:
    """A slow camera pan (with a slight zoom) across a uint8 RGB photo, encoded as H.264 (crf 16) at ``path``.

    The window of ``size`` (w, h) starts at the photo's left and travels about a third of the free width.
    """
    h, w = photo.shape[:2]
    cw, ch = size
    scale = max(1.0, cw * 1.35 / w, ch * 1.1 / h)  # 100 % where the photo leaves room to pan and zoom

    def frame(i: int) -> np.ndarray:
        p = i / max(1, frames - 1)
        zoom = scale * (1 + 0.05 * p)
        x0 = (w - cw / zoom) * (0.1 + 0.3 * p)
        y0 = (h - ch / zoom) * 0.5
        m = np.array([[zoom, 0, -x0 * zoom], [0, zoom, -y0 * zoom]], dtype=np.float64)
        return cv2.warpAffine(photo, m, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    return _encode((frame(i) for i in range(frames)), path, size, crf=16, fps=fps)


def make_still(photo: np.ndarray, path: Path, frames: int = 40, size: tuple[int, int] = (1280, 720),
               noise: float = 1.5, fps: int = 25) -> Path:
    """A fixed camera looking at a uint8 RGB photo, encoded as H.264 (crf 23, as a camera's stream) at ``path``.

    The photo is scaled to cover ``size`` (w, h) and cropped to its middle. Each frame gets its own Gaussian sensor
    noise of ``noise`` levels (seeded), which the encoder mostly turns into the sparse block refreshes a real
    camera's stream has.
    """
    h, w = photo.shape[:2]
    cw, ch = size
    scale = max(cw / w, ch / h)
    m = np.array([[scale, 0, (cw - w * scale) / 2], [0, scale, (ch - h * scale) / 2]], dtype=np.float64)
    still = cv2.warpAffine(photo, m, (cw, ch), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    rng = np.random.default_rng(0)
    noisy = (np.clip(still + rng.normal(0.0, noise, still.shape) + 0.5, 0, 255).astype(np.uint8) for _ in range(frames))
    return _encode(noisy, path, size, crf=23, fps=fps)


def _encode(frames: Iterable[np.ndarray], path: Path, size: tuple[int, int], crf: int, fps: int) -> Path:
    """uint8 RGB frames of ``size`` (w, h) -> H.264 (x264 veryfast at ``crf``, yuv420p, BT.601 and tagged so) at
    ``path``. Untagged, a clip of 720 lines was read as BT.709 (as players read HD), its colours shifted before the
    product saw them (1.5 of colour cast on the XG clips, with the product passing the frames through)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.codec_context.colorspace = SMPTE170M
        for frame in frames:
            rgb = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(rgb.reformat(format="yuv420p", dst_colorspace="ITU601")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path

"""Evaluate dehazing: PSNR/SSIM on paired folders, temporal warping error on a video, optional FADE.

    # paired images: run a model on the hazy folder, or score outputs made elsewhere
    python -m training.evaluate --weights W.safetensors --hazy DIR --clean DIR
    python -m training.evaluate --dehazed DIR --clean DIR
    # video: warping error of the dehazed video against its input (flow on the input frames)
    python -m training.evaluate --weights W.safetensors --video IN.mp4 [--short-side 256] [--frames 60]
    python -m training.evaluate --video IN.mp4 --dehazed OUT.mp4
    # add --fade for FADE fog density (needs the optional package fade-python), --json FILE to save the figures

Pairs are matched by file stem. Outputs of the model are clamped to [0, 1] and quantised to 8 bits before scoring,
as a saved image would be.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

import kanet
from training.cli import UsageError, atomic_path, run_main
from training.images import list_images, read_rgb
from training.metrics import fade_density, psnr, ssim, warping_error
from training.trainer import pick_device

__all__ = ["dehaze_image", "read_video", "main"]


@torch.no_grad()
def dehaze_image(model: kanet.KANet, image: np.ndarray, short_side: int | None = None) -> np.ndarray:
    """Run a KANet on one uint8 RGB image :math:`(H, W, 3)`; returns uint8 RGB of the same size.

    The image is optionally shrunk to ``short_side`` for the network. A coefficient model's transform is then
    applied to the full-size image; an image model's output is resized back.
    """
    h, w = image.shape[:2]
    device = next(model.parameters()).device
    full = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div(255).to(device)
    x = full
    if short_side and min(h, w) != short_side:
        s = short_side / min(h, w)
        x = F.interpolate(full, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                          antialias=True, align_corners=False)
    if model.predicts_coefficients:
        y = kanet.transform.apply(full, *kanet.coefficients(model, x))
    else:
        y = F.interpolate(kanet.dehaze(model, x), size=(h, w), mode="bicubic", align_corners=False)
    return y[0].clamp(0, 1).permute(1, 2, 0).mul(255).round().byte().cpu().numpy()


def read_video(path: Path, limit: int = 0) -> Iterator[np.ndarray]:
    """Decode a video file into uint8 RGB frames with OpenCV (at most ``limit`` frames when > 0)."""
    if not path.is_file():
        raise UsageError(f"video not found: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UsageError(f"cannot open video: {path}")
    count = 0
    try:
        while not limit or count < limit:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    if count == 0:
        raise UsageError(f"no frames decoded from {path}")


def _load_model(weights: Path, device: torch.device) -> torch.nn.Module:
    import kanet

    try:
        model = kanet.load_weights(weights)
    except kanet.WeightsError as exc:
        raise UsageError(str(exc)) from exc
    return model.to(device).eval()


def _paired(args: argparse.Namespace, model: torch.nn.Module | None) -> dict:
    clean = {p.stem: p for p in list_images(args.clean)}
    source = args.hazy if model is not None else args.dehazed
    rows = []
    for f in list_images(source):
        if f.stem not in clean:
            raise UsageError(f"no clean image for {f.name} in {args.clean}")
        target = read_rgb(clean[f.stem])
        hazy = read_rgb(f)
        out = dehaze_image(model, hazy, args.short_side) if model is not None else hazy
        if out.shape != target.shape:
            raise UsageError(f"{f.name}: size {out.shape[1]}x{out.shape[0]} differs from its clean image "
                             f"{target.shape[1]}x{target.shape[0]}")
        row = {"name": f.name, "psnr": psnr(out, target).item(), "ssim": ssim(out, target).item()}
        if args.fade:
            row["fade"] = fade_density(out)
            if model is not None:
                row["fade_input"] = fade_density(hazy)
        rows.append(row)
    keys = [k for k in rows[0] if k != "name"]
    return {"images": rows, "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys}}


def _video(args: argparse.Namespace, model: torch.nn.Module | None) -> dict:
    frames_in = list(read_video(args.video, args.frames))
    if model is not None:
        frames_out = [dehaze_image(model, f, args.short_side) for f in frames_in]
    else:
        frames_out = list(read_video(args.dehazed, args.frames))
    if len(frames_out) != len(frames_in):
        raise UsageError(f"{len(frames_in)} input frames but {len(frames_out)} dehazed frames")
    if len(frames_in) < 2:
        raise UsageError("the warping error needs a video of at least two frames")
    result = {"frames": len(frames_in),
              "warping_error": warping_error(frames_in, frames_out, method=args.flow),
              "warping_error_input": warping_error(frames_in, frames_in, method=args.flow)}
    if args.fade:
        step = max(1, len(frames_in) // 8)  # FADE is slow; eight evenly spaced frames describe a clip
        result["fade_input"] = float(np.mean([fade_density(f) for f in frames_in[::step]]))
        result["fade"] = float(np.mean([fade_density(f) for f in frames_out[::step]]))
    return result


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, help="KA_Net weights (kanet.save_weights file) to run")
    parser.add_argument("--hazy", type=Path, help="folder of hazy images (with --weights)")
    parser.add_argument("--clean", type=Path, help="folder of ground-truth images (paired mode)")
    parser.add_argument("--dehazed", type=Path, help="dehazed images folder or video made elsewhere (no --weights)")
    parser.add_argument("--video", type=Path, help="input video (video mode)")
    parser.add_argument("--frames", type=int, default=0, help="use at most this many frames (0: all)")
    parser.add_argument("--short-side", type=int, default=0, help="run the model at this short side (0: native)")
    parser.add_argument("--flow", choices=("dis", "farneback"), default="dis", help="optical flow for warping error")
    parser.add_argument("--fade", action="store_true", help="also report FADE fog density (needs fade-python)")
    parser.add_argument("--device", default="cpu", help="torch device for the model")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if (args.weights is None) == (args.dehazed is None):
        raise UsageError("give exactly one of --weights (run a model) and --dehazed (score existing outputs)")
    if args.video is None and args.clean is None:
        raise UsageError("give --clean DIR (paired images) or --video FILE")
    if args.video is not None and args.clean is not None:
        raise UsageError("--video and --clean are separate modes; give one")
    if args.weights is not None and args.video is None and args.hazy is None:
        raise UsageError("--weights with --clean needs --hazy DIR")
    if args.weights is not None and not args.weights.is_file():
        raise UsageError(f"weights not found: {args.weights}")
    if args.fade:
        try:
            import pyfade  # noqa: F401
        except ImportError:
            raise UsageError("--fade needs the optional package fade-python (pip install fade-python)") from None
    if args.json is not None and not args.json.parent.is_dir():  # (before the work, not after it)
        raise UsageError(f"--json {args.json}: folder does not exist: {args.json.parent}")
    device = pick_device(args.device, "--device")
    model = _load_model(args.weights, device) if args.weights is not None else None
    result = _video(args, model) if args.video is not None else _paired(args, model)
    figures = result["mean"] if "mean" in result else result
    for key, value in figures.items():
        print(f"{key:>20}: {value:.4f}" if isinstance(value, float) and math.isfinite(value) else f"{key:>20}: {value}")
    if args.json is not None:
        tmp = atomic_path(args.json)
        try:
            tmp.write_text(json.dumps(result, indent=1) + "\n")
            os.replace(tmp, args.json)
        finally:
            tmp.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

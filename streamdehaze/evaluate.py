"""Evaluate a dehazing model the way users run it, against the dark channel prior.

    python -m streamdehaze.evaluate --weights runs/kanet-t-cpu/step-0005500.safetensors [--model kanet-t]
                                    [--out runs/eval] [--config training/configs/kanet-t-cpu.toml]

Four measurements, printed and written to ``--out`` (``summary.json``, ``results.md``, ``sheet.png``):

1. the training run's held-out synthetic split (``Trainer(config).val``: the exact validation pairs the trainer
   scores): PSNR/SSIM of the hazy input, of ``dcp`` and of the model through the product's image engine
   (native resolution; outputs quantised to 8 bits, as a saved image would be);
2. FADE fog density (optional package ``fade-python``) of every real hazy photo, for input, dcp and model;
3. temporal warping error of the product's video path (``process()``, ``--temporal off`` and ``ema``);
4. a side-by-side sheet (input | dcp | model) of real hazy photos.

Evaluation data only (``../shared/data``): nothing here is written outside ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import cv2
import numpy as np
import torch

import training.cli
from training.metrics import fade_density, psnr, ssim, warping_error

from .api import process
from .errors import StreamDehazeError, UsageError
from .images import image_engine, is_image, read_image
from .models import create_model

DATA = Path("../shared/data")
DEFAULT_CONFIG = Path("training/configs/kanet-t-cpu.toml")
SHEET_NAMES = ("canon_input.png", "cityscape_input.png", "dubai_input.png", "forest_input.png",
               "hongkong_input.png", "ny17_input.png", "BJ_Baidu_544.jpeg", "XR_Bing_179.jpeg")

Runner = Callable[[torch.Tensor], torch.Tensor]


def validation_pairs(config: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's fixed held-out pairs ``(hazy, clean)``, float ``[N,3,H,W]`` in [0, 1], for a training config.

    Built by ``training.trainer.Trainer`` itself, so they are the pairs its ``val_psnr`` is measured on.
    """
    from training.config import load_config
    from training.trainer import Trainer

    threads = torch.get_num_threads()
    trainer = Trainer(load_config(config), progress=False)
    torch.set_num_threads(threads)  # the trainer sets its own thread count
    if trainer.val is None:
        raise UsageError(f"{config}: the config holds out no validation images (data.val_fraction)")
    return trainer.val["hazy"], trainer.val["clean"]


def engine_runner(model: str, weights: str | Path | None, infer_size: int | str | None = "auto") -> Runner:
    """RGB ``[B,3,H,W]`` in [0,1] -> dehazed as the product dehazes photos (``images.image_engine``: ``auto`` is
    native resolution) on the CPU, quantised to 8 bits."""
    engine = image_engine(create_model(model, weights), "cpu", infer_size)
    return lambda x: engine.process_rgb(x).clamp(0, 1).mul(255).round().div(255)


@torch.no_grad()
def score_pairs(run: Runner | None, hazy: torch.Tensor, clean: torch.Tensor, batch: int = 8) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of ``run(hazy)`` against ``clean`` (``run=None`` scores the hazy input itself)."""
    psnrs, ssims = [], []
    for h, c in zip(hazy.split(batch), clean.split(batch)):
        y = h if run is None else run(h)
        psnrs.append(psnr(y, c))
        ssims.append(ssim(y, c))
    return {"psnr": torch.cat(psnrs).mean().item(), "ssim": torch.cat(ssims).mean().item()}


def list_photos(folder: Path) -> list[Path]:
    """Image files in ``folder``, sorted by name; ``UsageError`` when there are none."""
    if not folder.is_dir():
        raise UsageError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))
    if not files:
        raise UsageError(f"no images in {folder}")
    return files


def read_uint8(path: Path) -> np.ndarray:
    """An image file as uint8 RGB ``[H,W,3]`` (16-bit files scaled down)."""
    image = read_image(path)
    return image if image.dtype == np.uint8 else (image / 257.0).round().astype(np.uint8)


def dehaze_array(run: Runner, image: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H,W,3]`` through ``run``; uint8 RGB out."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
    return run(x)[0].permute(1, 2, 0).mul(255).round().byte().cpu().numpy()


def fade_scores(images: dict[str, dict[str, np.ndarray]]) -> dict:
    """FADE of every image per method: ``images[name][method]`` uint8 RGB. Returns per-image values, mean and
    median per method, or ``{"error": ...}`` when fade-python is missing or fails."""
    per_image: dict[str, dict[str, float]] = {}
    try:
        for name, outputs in images.items():
            per_image[name] = {method: fade_density(image) for method, image in outputs.items()}
    except Exception as exc:  # optional dependency: report, don't abort the evaluation
        return {"error": f"FADE unavailable: {type(exc).__name__}: {exc}".splitlines()[0]}
    methods = next(iter(per_image.values())).keys()
    summary = {m: {"mean": float(np.mean([v[m] for v in per_image.values()])),
                   "median": float(statistics.median(v[m] for v in per_image.values()))} for m in methods}
    return {"images": len(per_image), "summary": summary, "per_image": per_image}


def decode_rgb(path: str | Path, limit: int = 0) -> list[np.ndarray]:
    """Every frame of a video as uint8 RGB ``[H,W,3]`` (PyAV), at most ``limit`` when > 0."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit and len(frames) >= limit:
                break
    return frames


def temporal_scores(video: Path, runs: Sequence[tuple[str, str | Path | None, str]], frames: int = 0) -> dict:
    """Warping error of the product's output for each ``(model, weights, temporal)`` run, and of the input.

    The video goes through ``process()`` (encoded with the CLI's defaults) and is decoded back with PyAV.
    """
    frames_in = decode_rgb(video, frames)
    if len(frames_in) < 2:
        raise UsageError(f"{video}: the warping error needs at least two frames")
    result: dict = {"video": str(video), "frames": len(frames_in), "size": list(frames_in[0].shape[1::-1]),
                    "input": warping_error(frames_in, frames_in), "input fade": video_fog(frames_in)}
    with tempfile.TemporaryDirectory() as tmp:
        for model, weights, temporal in runs:
            out = Path(tmp) / f"{model}-{temporal}.mp4"
            run = process(video, out, model=model, weights=weights, device="cpu", temporal=temporal,
                          max_frames=len(frames_in))
            frames_out = decode_rgb(out)
            if len(frames_out) != len(frames_in):
                raise StreamDehazeError(f"{out.name}: {len(frames_out)} frames decoded, {len(frames_in)} expected")
            result[f"{model} {temporal}"] = {"warping_error": warping_error(frames_in, frames_out),
                                             "fade": video_fog(frames_out), "fps": run.fps}
    return result


def video_fog(frames: Sequence[np.ndarray], every: int = 10) -> float | None:
    """Mean FADE fog density of every ``every``-th frame (how much fog the video path leaves); ``None`` without
    fade-python."""
    try:
        return float(np.mean([fade_density(f) for f in frames[::every]]))
    except ImportError:
        return None


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], path: Path, height: int = 320, gap: int = 4) -> Path:
    """Write a PNG with one row per image set (e.g. input | dcp | model), each image resized to ``height``."""
    lines = []
    for images in rows:
        resized = [cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height),
                              interpolation=cv2.INTER_AREA) for im in images]
        parts = []
        for im in resized:
            parts += [im, np.full((height, gap, 3), 255, np.uint8)]
        lines.append(np.concatenate(parts[:-1], 1))
    width = max(line.shape[1] for line in lines)
    padded = []
    for line in lines:
        padded += [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255),
                   np.full((gap, width, 3), 255, np.uint8)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.concatenate(padded[:-1])[..., ::-1]):
        raise StreamDehazeError(f"cannot write {path}")
    return path


def checkpoint_step(weights: Path) -> int | None:
    """The training step in a trainer checkpoint's name (``step-0005500.safetensors`` -> 5500)."""
    match = re.search(r"step-(\d+)", weights.name)
    return int(match.group(1)) if match else None


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(summary: dict) -> str:
    """The results as Markdown tables."""
    model = summary["model"]
    lines = [f"Held-out synthetic split ({summary['synthetic']['images']} pairs, {summary['synthetic']['crop']}):",
             "", "| method | PSNR (dB) | SSIM |", "|---|---|---|"]
    for name, row in summary["synthetic"]["scores"].items():
        lines.append(f"| {name} | {row['psnr']:.2f} | {row['ssim']:.3f} |")
    fade = summary["fade"]
    lines.append("")
    if "error" in fade:
        lines.append(f"FADE: {fade['error']}")
    else:
        lines += [f"FADE fog density, {fade['images']} real hazy photos (lower = less fog):", "",
                  "| method | mean | median |", "|---|---|---|"]
        for name, row in fade["summary"].items():
            lines.append(f"| {name} | {row['mean']:.3f} | {row['median']:.3f} |")
    t = summary["temporal"]
    lines += ["", f"Warping error, {Path(t['video']).name} ({t['frames']} frames {t['size'][0]}x{t['size'][1]}, "
              "product video path; lower = steadier; FADE of every 10th frame):", "",
              "| run | warping error | FADE | fps |", "|---|---|---|---|",
              f"| input | {t['input']:.5f} | {_number(t['input fade'])} | |"]
    for name, row in t.items():
        if isinstance(row, dict):
            lines.append(f"| {name} | {row['warping_error']:.5f} | {_number(row['fade'])} | {row['fps']:.1f} |")
    verdict = summary["verdict"]
    lines += ["", f"{model} - dcp held-out PSNR: {verdict['psnr_gain_db']:+.2f} dB (target >= +5: "
              f"{'met' if verdict['psnr_target_met'] else 'NOT met'}); FADE mean {model} <= dcp: "
              f"{verdict['fade_target_met']}."]
    return "\n".join(lines) + "\n"


def evaluate(weights: Path, model: str, out: Path, config: Path, data: Path = DATA, frames: int = 0) -> dict:
    """Run all four measurements; write ``summary.json``, ``results.md`` and ``sheet.png`` into ``out``."""
    start = time.perf_counter()
    dcp, ours = engine_runner("dcp", None), engine_runner(model, weights)  # bad weights fail before the slow part
    hazy, clean = validation_pairs(config)
    scores = {"hazy input": score_pairs(None, hazy, clean), "dcp (engine)": score_pairs(dcp, hazy, clean),
              f"{model} (engine)": score_pairs(ours, hazy, clean)}
    synthetic = {"config": str(config), "images": len(hazy), "crop": f"{hazy.shape[-1]}x{hazy.shape[-2]}",
                 "scores": scores}

    images = {}
    for path in list_photos(data / "real_hazy"):
        image = read_uint8(path)
        images[path.name] = {"input": image, "dcp": dehaze_array(dcp, image), model: dehaze_array(ours, image)}
    fade = fade_scores(images)
    names = [n for n in SHEET_NAMES if n in images] or list(images)[:8]
    sheet = contact_sheet([list(images[n].values()) for n in names], out / "sheet.png")

    runs = [(m, w, t) for m, w in (("dcp", None), (model, weights)) for t in ("off", "ema")]
    temporal = temporal_scores(data / "real_video" / "dvd_fog_1080p.mp4", runs, frames)

    gain = scores[f"{model} (engine)"]["psnr"] - scores["dcp (engine)"]["psnr"]
    fade_ok = None if "error" in fade else fade["summary"][model]["mean"] <= fade["summary"]["dcp"]["mean"]
    summary = {"model": model, "weights": str(weights), "step": checkpoint_step(weights),
               "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
                          f"torch {torch.__version__}, {torch.get_num_threads()} threads".replace("  ", " "),
               "synthetic": synthetic, "fade": fade, "temporal": temporal, "sheet": str(sheet),
               "sheet_images": names,
               "verdict": {"psnr_gain_db": gain, "psnr_target_met": gain >= 5.0, "fade_target_met": fade_ok},
               "seconds": time.perf_counter() - start}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "results.md").write_text(markdown(summary))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streamdehaze.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, required=True, help="model weights (.safetensors)")
    p.add_argument("--model", default="kanet-t", help="model name (default: kanet-t)")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="output folder (default: runs/eval)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help=f"training config whose held-out split to score (default: {DEFAULT_CONFIG})")
    p.add_argument("--data", type=Path, default=DATA, help=f"shared data folder (default: {DATA})")
    p.add_argument("--frames", type=int, default=0, help="video frames to use (default 0: all)")
    p.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads (default: 2)")
    args = p.parse_args(argv)
    try:
        if not args.weights.is_file():
            raise UsageError(f"weights file not found: {args.weights}")
        if args.model == "dcp":
            raise UsageError("--model dcp is the baseline every evaluation includes; give a model with weights")
        for need in (args.data / "real_hazy", args.data / "real_video" / "dvd_fog_1080p.mp4", args.config):
            if not need.exists():
                raise UsageError(f"not found: {need}")
        if args.frames < 0 or args.threads < 1:
            raise UsageError("--frames must be >= 0 and --threads >= 1")
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
        args.out.mkdir(parents=True, exist_ok=True)
        summary = evaluate(args.weights, args.model, args.out, args.config, args.data, args.frames)
    except (StreamDehazeError, training.cli.UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    print(markdown(summary), end="")
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'results.md'}, {summary['sheet']} "
          f"in {summary['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

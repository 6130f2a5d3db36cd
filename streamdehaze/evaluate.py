"""Evaluate a dehazing model the way users run it, against the dark channel prior, on data training never saw.

    python -m streamdehaze.evaluate [--model auto] [--weights W.safetensors] [--out runs/eval]
                                    [--parts held-out,photos,video] [--frames N] [--strength S]
                                    [--noise-floor LEVELS]

Photos go through the product's image path (``images.image_engine``: what ``streamdehaze in.jpg out.jpg`` runs)
and clips through its video path (``process()``, temporal smoothing on, as the CLI's default), at the resolution
they come in. No single number decides; every part reports fidelity, fog, colour and detail side by side:

1. ``held-out``: the clean photos that training holds out, whole and at full resolution, hazed two independent
   ways (``evalsets``: our synthesis and a classic scattering model). PSNR and SSIM of input, dcp and model.
2. ``photos``: real hazy photos (``real_hazy/``, no ground truth): FADE fog density (optional package
   fade-python), colour cast (CIELAB distance of the mean a*, b* from the input's), detail retention (how much of
   the input's fine detail the output keeps in textured regions) and its gain; a sheet of whole photos and one of
   100 % crops (the most textured window of each).
3. ``video``: real foggy clips (the DVD clip; pans over the largest real hazy photos, and fixed cameras looking at
   them through sensor noise and H.264, the commonest case in surveillance): FADE of every 10th frame, temporal
   warping error, also against a steady contrast stretch leaving as much fog (the warping error of any contrast
   gain grows with its square), shadows crushed to black, colour cast, detail retention and gain (as for photos,
   against the input frame); a sheet of 100 % crops.

Writes ``summary.json``, ``results.md`` and the sheets into ``--out`` and prints the results with the targets of
issue 14 (met or not). Data: ``../shared/data`` (evaluation only; nothing from it is written outside ``--out``).
"""

from __future__ import annotations

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
from training.evaldata import DATA
from training.metrics import (colour_cast, crushed_shadows, detail_retention, fade_density, flicker_against_stretch,
                              psnr, ssim, stretch_curve, video_fade, video_flow, warping_error)

from . import evalsets
from .api import process
from .engine import check_noise_floor, check_strength
from .errors import MediaError, StreamDehazeError, UsageError
from .frames import to_image
from .images import as_rgb, image_engine, is_image, read_image
from .models import create_model
from .options import Parser, parse_noise_floor

PARTS = ("held-out", "photos", "video")
SHEET_NAMES = ("canon_input.png", "cityscape_input.png", "dubai_input.png", "forest_input.png",
               "hongkong_input.png", "ny17_input.png", "BJ_Baidu_544.jpeg", "XR_Bing_179.jpeg")
# (photo, clip size): the largest real hazy photos, panned across at 100 %, and looked at by a fixed camera
PANS = (("XG_Bing_435.jpeg", (1280, 720)), ("TS_Baidu_504.jpeg", (1280, 720)), ("herzeliya_input.png", (960, 540)),
        ("lviv_input.png", (640, 360)))
CROP = 256

Photo = Callable[[np.ndarray], np.ndarray]


def photo_runner(model: str, weights: str | Path | None, infer_size: int | str | None = "auto",
                 strength: float = 1.0, noise_floor: float | str = "auto") -> Photo:
    """uint8 RGB ``[H,W,3]`` -> dehazed uint8 RGB, exactly as the product dehazes a photo file (on the CPU)."""
    engine = image_engine(create_model(model, weights), "cpu", infer_size, strength, noise_floor)
    return lambda image: engine.process_array(image[None])[0]


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
    image = as_rgb(read_image(path))
    return image if image.dtype == np.uint8 else (image / 257.0).round().astype(np.uint8)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def held_out_scores(runners: dict[str, Photo | None], clean: Path, haze: str) -> dict:
    """Mean PSNR (dB), SSIM, colour error and detail of every runner (``None``: the hazy input itself) over the
    held-out pairs. Colour error and detail are measured against the clean photo, not the input: the real photos'
    cast counts colour that dehazing rightly gives back as cast, and their detail retention counts the input's
    noise and JPEG blocks, kept, as detail; both score an unchanged picture best."""
    scores: dict[str, dict[str, list[float]]] = {
        name: {"psnr": [], "ssim": [], "colour_error": [], "detail": []} for name in runners}
    count = 0
    for pair in evalsets.held_out_pairs(clean, haze):
        count += 1
        for name, run in runners.items():
            out = pair.hazy if run is None else run(pair.hazy)
            scores[name]["psnr"].append(psnr(out, pair.clean).item())
            scores[name]["ssim"].append(ssim(out, pair.clean).item())
            scores[name]["colour_error"].append(colour_cast(pair.clean, out))
            scores[name]["detail"].append(detail_retention(pair.clean, out)["retention"])
    if not count:
        raise UsageError(f"{clean}: no held-out photos")
    return {"images": count, "scores": {n: {k: _mean(v) for k, v in s.items()} for n, s in scores.items()}}


def photo_scores(images: dict[str, dict[str, np.ndarray]]) -> dict:
    """FADE, colour cast and detail retention of every method's output (``images[name][method]``, uint8 RGB; the
    method ``input`` is the hazy photo). Means and medians per method, and the per-photo values."""
    per_image: dict[str, dict[str, dict[str, float]]] = {}
    fade_error = None
    for name, outputs in images.items():
        source = outputs["input"]
        row = {}
        for method, image in outputs.items():
            detail = detail_retention(source, image)
            row[method] = {"cast": colour_cast(source, image), "detail": detail["retention"],
                           "detail_gain": detail["gain"]}
            if fade_error is None:
                try:
                    row[method]["fade"] = fade_density(image)
                except Exception as exc:  # optional dependency: report, don't abort the evaluation
                    fade_error = f"FADE unavailable: {type(exc).__name__}: {exc}".splitlines()[0]
        per_image[name] = row
    methods = next(iter(per_image.values())).keys()
    keys = ("cast", "detail", "detail_gain") + (() if fade_error else ("fade",))
    summary = {m: {k: {"mean": _mean([r[m][k] for r in per_image.values()]),
                       "median": float(statistics.median(r[m][k] for r in per_image.values()))} for k in keys}
               for m in methods}
    return {"images": len(per_image), "summary": summary, "per_image": per_image,
            **({"fade_error": fade_error} if fade_error else {})}


FADE_MISSING = ("FADE figures and the targets on them are left out: fade-python is not installed "
                "(pip install 'streamdehaze[fade]')")


def fade_missing() -> bool:
    """Whether the optional fade-python cannot be imported (then every FADE figure is None or left out)."""
    try:
        import pyfade  # noqa: F401
    except ImportError:
        return True
    return False


def decode_rgb(path: str | Path, limit: int = 0) -> list[np.ndarray]:
    """Every frame of a video as uint8 RGB ``[H,W,3]`` (PyAV), at most ``limit`` when > 0."""
    frames = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(to_image(frame))  # as the product reads it (untagged HD: BT.709)
                if limit and len(frames) >= limit:
                    break
    except av.FFmpegError as exc:  # an empty or damaged clip: said in one line, as the product says it
        raise MediaError(f"cannot decode {path}: {exc.strerror or exc}") from None
    return frames


def video_fog(frames: Sequence[np.ndarray], every: int = 10) -> float | None:
    """Mean FADE fog density of every ``every``-th frame; ``None`` without fade-python."""
    try:
        return video_fade(frames, every)
    except ImportError:
        return None


def clip_scores(video: Path, runs: Sequence[tuple[str, str, str | Path | None, float, float | str]], work: Path,
                frames: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    """FADE, warping error, colour cast and detail of the product's output of ``video`` for each ``(label, model,
    weights, strength, noise_floor)`` (temporal smoothing on, the default), and of the input. Also returns each
    one's middle frame.

    The warping error is put against contrast too: ``flicker_vs_stretch`` divides it by that of a steady global
    stretch leaving as much fog (``training.metrics.stretch_curve``), and ``crushed`` is the share of pixels
    taken to black (shadows crushed flicker no more, and show nothing). The clip goes through ``process()`` with
    the CLI's encoder defaults and is decoded back with PyAV.
    """
    frames_in = decode_rgb(video, frames)
    if len(frames_in) < 2:
        raise UsageError(f"{video}: the warping error needs at least two frames")
    middle = len(frames_in) // 2
    flow = video_flow(frames_in)
    try:
        curve = stretch_curve(frames_in, flow=flow)
    except ImportError:  # no FADE: no fog to match
        curve = None
    result: dict = {"video": video.name, "frames": len(frames_in), "size": list(frames_in[0].shape[1::-1]),
                    "input": {"warping_error": warping_error(frames_in, frames_in, flow=flow),
                              "fade": video_fog(frames_in), "cast": 0.0, "crushed": 0.0, "detail": 1.0,
                              "detail_gain": 1.0, "flicker_vs_stretch": None},
                    "stretch_curve": curve}
    stills = {"input": frames_in[middle]}
    for label, model, weights, strength, noise_floor in runs:
        out = work / f"{video.stem}.{label}.mp4"
        run = process(video, out, model=model, weights=weights, device="cpu", max_frames=len(frames_in),
                      strength=strength, noise_floor=noise_floor)
        frames_out = decode_rgb(out)
        if len(frames_out) != len(frames_in):
            raise StreamDehazeError(f"{out.name}: {len(frames_out)} frames decoded, {len(frames_in)} expected")
        row = {"warping_error": warping_error(frames_in, frames_out, flow=flow), "fade": video_fog(frames_out),
               "cast": _mean([colour_cast(a, b) for a, b in zip(frames_in[::5], frames_out[::5])]),
               "crushed": _mean([crushed_shadows(a, b) for a, b in zip(frames_in[::5], frames_out[::5])]),
               "fps": run.fps}
        details = [detail_retention(a, b) for a, b in zip(frames_in[::10], frames_out[::10])]
        row["detail"], row["detail_gain"] = (_mean([d[k] for d in details]) for k in ("retention", "gain"))
        row["flicker_vs_stretch"] = (None if curve is None or row["fade"] is None else
                                     flicker_against_stretch(row["fade"], row["warping_error"], curve))
        result[label] = row
        stills[label] = frames_out[middle]
        out.unlink()
    return result, stills


def textured_crop(image: np.ndarray, side: int = CROP) -> tuple[int, int]:
    """Top-left corner of the ``side`` x ``side`` window with the most fine detail (where smearing shows)."""
    h, w = image.shape[:2]
    if h <= side or w <= side:
        return 0, 0
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = (luma - cv2.GaussianBlur(luma, (0, 0), 1.5)) ** 2
    sums = cv2.boxFilter(energy, -1, (side, side), normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    sums = sums[: h - side + 1, : w - side + 1]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


def crops(images: Sequence[np.ndarray], side: int = CROP) -> list[np.ndarray]:
    """The same most-textured window (chosen on the first image) of every image, at 100 %."""
    y, x = textured_crop(images[0], side)
    return [im[y:y + side, x:x + side] for im in images]


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], path: Path, height: int | None = 320, gap: int = 4) -> Path:
    """Write a PNG with one row per image set (e.g. input | dcp | model); ``height=None`` keeps 100 % scale."""
    lines = []
    for images in rows:
        if height is not None:
            images = [cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height),
                                 interpolation=cv2.INTER_AREA) for im in images]
        row_h = max(im.shape[0] for im in images)
        parts = []
        for im in images:
            parts += [np.pad(im, ((0, row_h - im.shape[0]), (0, 0), (0, 0)), constant_values=255),
                      np.full((row_h, gap, 3), 255, np.uint8)]
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


def checkpoint_step(weights: Path | None) -> int | None:
    """The training step in a trainer checkpoint's name (``step-0005500.safetensors`` -> 5500)."""
    match = re.search(r"step-(\d+)", weights.name) if weights is not None else None
    return int(match.group(1)) if match else None


def targets(summary: dict) -> list[dict]:
    """Issue 14's targets, each ``{"target", "value", "met"}``, for the parts that ran."""
    out = []

    def add(target: str, value: str, met: bool | None) -> None:
        out.append({"target": target, "value": value, "met": met})

    for haze, part in summary.get("held-out", {}).items():
        s = part["scores"]
        gain = s["model"]["psnr"] - s["dcp"]["psnr"]
        add(f"held-out ({haze} haze): PSNR >= dcp + 2 dB", f"{gain:+.2f} dB", gain >= 2.0)
        add(f"held-out ({haze} haze): SSIM >= dcp's", f"{s['model']['ssim']:.3f} vs {s['dcp']['ssim']:.3f}",
            s["model"]["ssim"] >= s["dcp"]["ssim"])
    photos = summary.get("photos")
    if photos:
        s = photos["summary"]
        if "fade" in s["model"]:
            ratio = s["model"]["fade"]["mean"] / s["dcp"]["fade"]["mean"]
            add("real photos: FADE <= 0.85 x dcp's", f"{ratio:.2f} x", ratio <= 0.85)
        add("real photos: colour cast <= dcp's", f"{s['model']['cast']['mean']:.2f} vs {s['dcp']['cast']['mean']:.2f}",
            s["model"]["cast"]["mean"] <= s["dcp"]["cast"]["mean"])
        add("real photos: detail retention >= dcp's",
            f"{s['model']['detail']['mean']:.3f} vs {s['dcp']['detail']['mean']:.3f}",
            s["model"]["detail"]["mean"] >= s["dcp"]["detail"]["mean"])
    for clip in summary.get("video", []):
        for key, label in (("fade", "FADE"), ("warping_error", "warping error"), ("cast", "colour cast")):
            ours, theirs = clip["model"][key], clip["dcp"][key]
            if ours is None or theirs is None:
                continue
            add(f"{clip['video']}: {label} <= dcp's", f"{ours:.4g} vs {theirs:.4g}", ours <= theirs)
    return out


def markdown(summary: dict) -> str:
    """The results as Markdown tables."""
    strength = "" if summary["strength"] == 1.0 else f", strength {summary['strength']:g}"
    if summary.get("noise_floor", "auto") != "auto":
        strength += f", noise floor {summary['noise_floor']:g}"
    lines = [f"Model: `{summary['model']}` ({summary['weights']}{strength}); dcp is `--model dcp`. "
             f"{summary['machine']}.", ""]
    if summary.get("fade_missing"):
        lines += [f"{summary['fade_missing']}.", ""]
    for haze, part in summary.get("held-out", {}).items():
        lines += [f"Held-out photos, {part['images']} whole images at full resolution, `{haze}` haze:", "",
                  "| method | PSNR (dB) | SSIM | colour error (cast against the clean) | detail of the clean kept |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {row['psnr']:.2f} | {row['ssim']:.3f} | {row['colour_error']:.2f} | "
                  f"{row['detail']:.3f} |" for name, row in part["scores"].items()]
        lines.append("")
    photos = summary.get("photos")
    if photos:
        lines += [f"Real hazy photos ({photos['images']}), means (medians):", "",
                  "| method | FADE | colour cast | detail retention | detail gain |", "|---|---:|---:|---:|---:|"]
        for name, row in photos["summary"].items():
            fade = f"{row['fade']['mean']:.3f} ({row['fade']['median']:.3f})" if "fade" in row else "n/a"
            lines.append(f"| {name} | {fade} | {row['cast']['mean']:.2f} ({row['cast']['median']:.2f}) | "
                         f"{row['detail']['mean']:.3f} ({row['detail']['median']:.3f}) | "
                         f"{row['detail_gain']['mean']:.2f} |")
        lines.append("")
    if summary.get("video"):
        lines += ["Real foggy clips through the video path (temporal ema), FADE of every 10th frame; flicker against "
                  "a steady stretch leaving as much fog (below 1: steadier than contrast alone); shadows crushed to "
                  "black:", "",
                  "| clip | method | FADE | warping error | vs stretch | crushed % | colour cast | detail kept / gain "
                  "| fps |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for clip in summary["video"]:
            for name in ("input", "dcp", "model"):
                row = clip[name]
                fade = "n/a" if row["fade"] is None else f"{row['fade']:.3f}"
                ratio = "n/a" if row.get("flicker_vs_stretch") is None else f"{row['flicker_vs_stretch']:.2f}"
                fps = f"{row['fps']:.1f}" if "fps" in row else ""
                lines.append(f"| {clip['video']} {clip['size'][0]}x{clip['size'][1]} | {name} | {fade} | "
                             f"{row['warping_error']:.3g} | {ratio} | {100 * row['crushed']:.2f} | "
                             f"{row['cast']:.2f} | {row['detail']:.3f} / {row['detail_gain']:.2f} | {fps} |")
        lines.append("")
    lines += ["Targets:", "", "| target | value | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'NO'} |" for t in summary["targets"]]
    return "\n".join(lines) + "\n"


def evaluate(model: str, weights: Path | None, out: Path, data: Path = DATA, parts: Sequence[str] = PARTS,
             frames: int = 0, strength: float = 1.0, noise_floor: float | str = "auto") -> dict:
    """Run the ``parts`` (the model at ``strength`` and ``noise_floor``, dcp at the defaults); write
    ``summary.json``, ``results.md`` and the sheets into ``out``."""
    start = time.perf_counter()
    dcp = photo_runner("dcp", None)
    # bad weights fail before the slow part
    ours = photo_runner(model, weights, strength=strength, noise_floor=noise_floor)
    name = create_model(model, weights).name
    summary: dict = {"model": name, "weights": str(weights) if weights else "shipped", "strength": strength,
                     "noise_floor": noise_floor, "step": checkpoint_step(weights),
                     "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                                f"{torch.get_num_threads()} threads"}
    if {"photos", "video"} & set(parts) and fade_missing():  # said once, now, rather than gaps in the tables
        print(f"note: {FADE_MISSING}", file=sys.stderr)
        summary["fade_missing"] = FADE_MISSING
    if "held-out" in parts:
        runners = {"input": None, "dcp": dcp, "model": ours}
        summary["held-out"] = {haze: held_out_scores(runners, data / "clean", haze) for haze in evalsets.HAZE_MODELS}
    if "photos" in parts:
        images = {}
        for path in list_photos(data / "real_hazy"):
            image = read_uint8(path)
            images[path.name] = {"input": image, "dcp": dcp(image), "model": ours(image)}
        summary["photos"] = photo_scores(images)
        names = [n for n in SHEET_NAMES if n in images] or list(images)[:8]
        contact_sheet([list(images[n].values()) for n in names], out / "sheet.png")
        contact_sheet([crops(list(images[n].values())) for n in names], out / "crops.png", height=None)
    if "video" in parts:
        summary["video"], stills = [], []
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            clips = [data / "real_video" / "dvd_fog_1080p.mp4"]
            for make, name in ((evalsets.make_pan, "pan"), (evalsets.make_still, "still")):
                for photo, size in PANS:
                    if (data / "real_hazy" / photo).is_file():
                        clips.append(make(read_uint8(data / "real_hazy" / photo),
                                          Path(tmp) / f"{name}_{Path(photo).stem}.mp4", size=size))
            for clip in clips:
                result, still = clip_scores(clip, [("dcp", "dcp", None, 1.0, "auto"),
                                                   ("model", model, weights, strength, noise_floor)],
                                            Path(tmp), frames)
                summary["video"].append(result)
                stills.append(crops([still["input"], still["dcp"], still["model"]]))
        contact_sheet(stills, out / "video_crops.png", height=None)
    summary["targets"] = targets(summary)
    summary["seconds"] = time.perf_counter() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "results.md").write_text(markdown(summary))
    return summary


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise UsageError(f"--parts takes a comma-separated list of {', '.join(PARTS)}; got {text!r}")
    return parts


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m streamdehaze.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="auto", help="model to evaluate against dcp (default: auto, the shipped one)")
    p.add_argument("--weights", type=Path, help="its weights (.safetensors); default: the shipped weights")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="output folder (default: runs/eval)")
    p.add_argument("--data", type=Path, default=DATA, help=f"shared data folder (default: {DATA})")
    p.add_argument("--parts", default=",".join(PARTS), help=f"what to run (default: {','.join(PARTS)})")
    p.add_argument("--frames", type=int, default=0, help="frames of each clip to use (default 0: all)")
    p.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads (default: 2)")
    p.add_argument("--strength", type=float, default=1.0,
                   help="the model's --strength, from 0 to 1 (default: 1; dcp always runs at 1)")
    p.add_argument("--noise-floor", type=parse_noise_floor, default="auto", metavar="LEVELS|auto",
                   help="the model's --noise-floor, 8-bit levels or auto (default: auto; dcp always runs at auto)")
    try:
        args = p.parse_args(argv)  # (a mistake: one line, exit 2)
        parts = _parts(args.parts)
        if args.weights is not None and not args.weights.is_file():
            raise UsageError(f"weights file not found: {args.weights}")
        if args.model == "dcp":
            raise UsageError("--model dcp is the baseline every evaluation includes; give another model")
        need = {"held-out": [args.data / "clean"], "photos": [args.data / "real_hazy"],
                "video": [args.data / "real_video" / "dvd_fog_1080p.mp4"]}
        for path in (path for part in parts for path in need[part]):
            if not path.exists():
                raise UsageError(f"not found: {path}")
        if args.frames < 0 or args.threads < 1:
            raise UsageError("--frames must be >= 0 and --threads >= 1")
        check_strength(args.strength)
        check_noise_floor(args.noise_floor)
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot write into {args.out}: {exc.strerror}") from None
        summary = evaluate(args.model, args.weights, args.out, args.data, parts, args.frames, args.strength,
                           args.noise_floor)
    except (StreamDehazeError, training.cli.UsageError) as exc:
        print(f"streamdehaze: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    print(markdown(summary), end="")
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'results.md'} and sheets in {summary['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The training loop: data, model, optimiser, schedule, AMP, validation, logging and exact resume."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from kornia.metrics import ssim as ssim_map
from tqdm import tqdm

import kanet
from kanet.bottleneck import RFF_MODES
from training.checkpoint import load_state, load_weights_into, resolve_checkpoint, save_checkpoint
from training.cli import UsageError, atomic_path
from training.clips import Clip, clip_margin, make_clips
from training.config import Config, config_to_dict
from training.data import ImageCache, PairedCache, is_validation, random_windows, split_files
from training.evaldata import is_held_out, refuse_evaluation_photos, without_near_copies
from training.images import list_images, read_rgb, to_tensor
from training.losses import ContrastiveLoss, airlight_kept, fog_left, load_vgg19_features
from training.metrics import psnr
from training.objective import Objective
from training.reweighting import SampleReweighter
from training.synthesis import synthesize_haze

__all__ = ["Trainer", "pick_device"]


def pick_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device (``UsageError`` naming ``option`` if
    absent)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"{option} must be auto, cpu or cuda[:N], got {name}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{option} is {name} but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"{option} must be auto, cpu or cuda[:N], got {name}")
    return device


def _logged_step(line: str) -> float:
    """The step a log line speaks of; a line cut short by a kill speaks of none that is kept."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return math.inf


# Where the numbers of [haze], [motion], [reweight] and [loss] mean something: (lowest, highest), None for no bound.
# A [low, high] range must also have low <= high; anything not named here must only be finite.
_LIMITS = {
    "haze": {"exposure": (0, None), "gamma": (0, None), "white_balance": (0, 1), "shading": (0, 1),
             "saturation": (0, None), "thickness": (0, None), "near": (0, 1), "depth_gamma": (0, None),
             "density_sigma": (0, None), "airlight": (0, 1), "tint": (0, None), "airlight_sigma": (0, None),
             "scatter_blur": (0, None), "camera_blur": (0, None), "camera_blur_p": (0, 1), "read_noise": (0, None),
             "shot_noise": (0, None), "noise_p": (0, 1), "jpeg_quality": (1, 100), "jpeg_p": (0, 1),
             "field_components": (1, None), "field_cycles": (0, None), "clear_p": (0, 1)},
    "motion": {key: (0, None) for key in ("max_speed", "max_accel", "max_rotation", "max_zoom", "max_perspective",
                                         "drift")},
    "reweight": {"lambdap": (0, None), "decay_pow": (0, None), "num_f": (1, None), "lrbl": (0, None),
                 "inner_steps": (0, None), "lambda_decay_rate": (0, None), "lambda_decay_epochs": (1, None),
                 "min_lambda_times": (0, None), "presave_ratio": (0, 1)},
    "loss": {"pixel": (0, None), "msssim": (0, None), "msssim_scales": (0, 5), "contrastive": (0, None),
             "contrastive_sigma": (0, None), "temporal": (0, None), "temporal_long": (0, None),
             "fog_left": (0, None), "airlight": (0, None)},
}


def _check_limits(config: Config) -> None:
    """``UsageError`` for a number of [haze], [motion], [reweight] or [loss] outside :data:`_LIMITS`, or a range
    given high to low (synthesis would draw from it without a word)."""
    for section, limits in _LIMITS.items():
        for name, value in dataclasses.asdict(getattr(config, section)).items():
            if isinstance(value, (str, bool)):
                continue
            numbers = list(value) if isinstance(value, tuple) else [value]
            low, high = limits.get(name, (None, None))
            shown = f"{section}.{name}"
            if not all(math.isfinite(v) and (low is None or v >= low) and (high is None or v <= high)
                       for v in numbers):
                bounds = (f"in [{low}, {high}]" if high is not None else f">= {low}" if low is not None
                          else "finite")
                raise UsageError(f"{shown} must be {bounds}, got {value!r}" if len(numbers) == 1 else
                                 f"{shown} must be two numbers {bounds}, got {list(value)}")
            if len(numbers) == 2 and numbers[0] > numbers[1]:
                raise UsageError(f"{shown} must be [low, high] with low <= high, got {list(value)}")


def _check_ranges(config: Config) -> None:
    """``UsageError`` for a number outside what it can mean (the optimiser's and the loop's own checks would
    otherwise surface as tracebacks, some only after the first step)."""
    tc, dc = config.train, config.data
    rules = [
        ("train.lr", tc.lr, math.isfinite(tc.lr) and tc.lr > 0, "a number > 0"),
        ("train.lr_min", tc.lr_min, math.isfinite(tc.lr_min) and tc.lr_min >= 0, "a number >= 0"),
        ("train.betas", list(tc.betas), all(0 <= b < 1 for b in tc.betas), "two numbers in [0, 1)"),
        ("train.weight_decay", tc.weight_decay, tc.weight_decay >= 0, ">= 0"),
        ("train.grad_clip", tc.grad_clip, tc.grad_clip >= 0, ">= 0 (0: off)"),
        ("train.crop", tc.crop, tc.crop >= 1, ">= 1"),
        ("data.val_crop", dc.val_crop, dc.val_crop >= 1, ">= 1"),
        ("data.cache_short_side", dc.cache_short_side, dc.cache_short_side >= 1, ">= 1"),
        ("data.val_fraction", dc.val_fraction, 0 <= dc.val_fraction < 1, "in [0, 1)"),
        ("data.max_fog", dc.max_fog, dc.max_fog >= 0, ">= 0 (0: keep all)"),
        ("model.rff", config.model.rff, config.model.rff in RFF_MODES,
         "one of " + ", ".join(RFF_MODES)),
    ]
    rules += [(f"train.{key}", getattr(tc, key), getattr(tc, key) >= 1, ">= 1")
              for key in ("val_every", "checkpoint_every", "log_every")]
    rules += [(f"train.{key}", getattr(tc, key), getattr(tc, key) >= 0, ">= 0")
              for key in ("warmup_steps", "keep_every", "threads")]
    for key, value, ok, rule in rules:
        if not ok:
            raise UsageError(f"{key} must be {rule}, got {value!r}")
    _check_limits(config)


def _lr_factor(step: int, steps: int, warmup: int, schedule: str, floor: float) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then cosine from 1 down to ``floor`` (or constant)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Builds everything a run needs from a :class:`Config` and runs it.

    Args:
        config: the run's configuration.
        out: run folder (log, checkpoints); default ``config.train.out``.
        progress: show a tqdm progress bar.
    """

    def __init__(self, config: Config, *, out: str | Path | None = None, progress: bool = True):
        self.config = config
        tc, lc = config.train, config.loss
        self.out = Path(out or tc.out)
        self.progress = progress
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        self.device = pick_device(tc.device)
        if config.model.name not in kanet.MODEL_NAMES:
            raise UsageError(f"unknown model.name {config.model.name!r} (choose from {', '.join(kanet.MODEL_NAMES)})")
        for key, value, allowed in (("train.optimizer", tc.optimizer, ("adam", "adamw")),
                                    ("train.schedule", tc.schedule, ("cosine", "constant")),
                                    ("loss.reconstruction", lc.reconstruction, ("l1", "charbonnier"))):
            if value not in allowed:
                raise UsageError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        for key, value in (("train.steps", tc.steps), ("train.batch", tc.batch), ("train.clip_frames", tc.clip_frames)):
            if value < 1:
                raise UsageError(f"{key} must be >= 1, got {value}")
        _check_ranges(config)
        if not 1.0 <= tc.scale[0] <= tc.scale[1]:
            raise UsageError(f"train.scale must be [low, high] with 1 <= low <= high, got {list(tc.scale)}")
        if (tc.real_batch > 0) != bool(config.data.real_hazy):
            raise UsageError("train.real_batch > 0 and data.real_hazy go together")
        if config.model.output not in ("", "image", "coefficients"):
            raise UsageError(f"model.output must be image or coefficients, got {config.model.output!r}")
        torch.manual_seed(tc.seed)
        self.model = kanet.create_model(config.model.name, rff=config.model.rff, seed=tc.seed)
        if config.model.output and config.model.output != self.model.config.output:
            torch.manual_seed(tc.seed)
            self.model = kanet.KANet(dataclasses.replace(self.model.config, output=config.model.output),
                                     rff=config.model.rff, seed=tc.seed, name=config.model.name)
        if self.model.predicts_coefficients:  # start as the identity transform (an init with this head overrides it)
            torch.nn.init.zeros_(self.model.head.out.weight)
            torch.nn.init.zeros_(self.model.head.out.bias)
        if not self.model.predicts_coefficients and (tc.scale != (1.0, 1.0) or tc.real_batch):
            raise UsageError("train.scale and train.real_batch apply to coefficient models; this one predicts images")
        if config.model.init:
            load_weights_into(self.model, Path(config.model.init))
        self.model.to(self.device).train()
        multiple, smallest = self.model.size_multiple, self.model.min_size
        for key, side in (("train.crop", tc.crop), ("data.val_crop", config.data.val_crop)):
            if side % multiple:
                raise UsageError(f"{key} = {side} is not a multiple of {multiple} (the model's size multiple)")
            # a coefficient model sees validation crops at _val_side, never below its smallest input
            if side < smallest and (key == "train.crop" or not self.model.predicts_coefficients):
                raise UsageError(f"{key} = {side} is below {smallest}, the smallest input {config.model.name} takes")
        betas = tuple(tc.betas)
        opt_cls = torch.optim.Adam if tc.optimizer == "adam" else torch.optim.AdamW
        self.optimizer = opt_cls(self.model.parameters(), lr=tc.lr, betas=betas, weight_decay=tc.weight_decay)
        floor = tc.lr_min / tc.lr if tc.lr > 0 else 0.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _lr_factor(s, tc.steps, tc.warmup_steps, tc.schedule, floor))
        self.amp_dtype = (torch.float16 if self.device.type == "cuda" else torch.bfloat16) if tc.amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=tc.amp and self.device.type == "cuda")
        contrastive = None
        if lc.contrastive > 0:
            contrastive = ContrastiveLoss(load_vgg19_features(lc.vgg_weights or None), lc.contrastive_sigma)
            contrastive.to(self.device)
        self.data_generator = torch.Generator().manual_seed(tc.seed)
        self.haze_generator = torch.Generator().manual_seed(tc.seed + 1)
        reweighter = None
        if lc.reweight:
            reweighter = SampleReweighter(config.reweight, torch.Generator().manual_seed(tc.seed + 2))
        self.objective = Objective(lc, reweighter, contrastive)
        self.step = 0
        self.interrupted = False  # set (by a signal handler) to end the run after the step under way
        self.saving = False  # while a checkpoint is written
        self.validation_due = False  # the checkpointed step's validation was skipped by a stop: done on resume
        self._load_data()

    # --- data ---------------------------------------------------------------------------------------------------

    def _load_data(self) -> None:
        dc, tc = self.config.data, self.config.train
        self.window = tc.crop + 2 * clip_margin(tc.clip_frames, tc.crop, self.config.motion)
        train_files, val_files = split_files(list_images(dc.clean), dc.val_fraction)
        train_files = [f for f in train_files if not is_held_out(f.name)]  # whatever data.val_fraction
        if not train_files:
            raise UsageError(f"no training images left in {dc.clean} after holding out data.val_fraction")
        real_files = list_images(dc.real_hazy) if dc.real_hazy else []
        paired = [(key, list_images(folder)) for key, folder in (("data.paired_hazy", dc.paired_hazy),
                                                                 ("data.paired_clean", dc.paired_clean)) if folder]
        refuse_evaluation_photos({"data.clean": train_files, "data.real_hazy": real_files, **dict(paired)})
        kept, self.near_copies = without_near_copies({"data.clean": train_files, "data.real_hazy": real_files})
        train_files, real_files = kept["data.clean"], kept["data.real_hazy"]
        for note in self.near_copies:
            print(note, file=sys.stderr)
        depth = Path(dc.depth) if dc.depth else None
        min_side = max(self.window, dc.val_crop)
        self.cache = ImageCache.load(train_files, dc.cache_short_side, depth, min_side=min_side)
        self.real = [(to_tensor(read_rgb(f, dc.cache_short_side)) * 255).round().byte() for f in real_files]
        self.foggy: list[str] = []
        if dc.max_fog > 0:
            try:
                self.cache, self.foggy = self.cache.without_fog(dc.max_fog)
            except ImportError as exc:
                raise UsageError(f"data.max_fog: {exc}") from None
            if not len(self.cache):
                raise UsageError(f"no training images left in {dc.clean} with data.max_fog = {dc.max_fog}")
        self.paired = self.val_paired = None
        if dc.paired_hazy or dc.paired_clean:
            if not (dc.paired_hazy and dc.paired_clean):
                raise UsageError("data.paired_hazy and data.paired_clean must be given together")
            self.paired = PairedCache.load(Path(dc.paired_hazy), Path(dc.paired_clean), dc.cache_short_side,
                                           keep=lambda n: not is_validation(n, dc.val_fraction))
            if not len(self.paired):
                raise UsageError(f"no training pairs left in {dc.paired_hazy} after holding out data.val_fraction")
            small = [n for n, h in zip(self.paired.names, self.paired.hazy) if min(h.shape[-2:]) < tc.crop]
            if small:
                raise UsageError(f"paired image {small[0]} is smaller than train.crop = {tc.crop}")
            # hazy and clean stacked once so crops cut both together
            self.paired_stacks = [torch.cat([h, c]) for h, c in zip(self.paired.hazy, self.paired.clean)]
            held_out = PairedCache.load(Path(dc.paired_hazy), Path(dc.paired_clean), dc.cache_short_side,
                                        keep=lambda n: is_validation(n, dc.val_fraction))
            self.val_paired = self._paired_validation_set(held_out)
        if dc.val_limit:
            val_files = val_files[: dc.val_limit]
        self.val = self._validation_set(val_files, depth)

    def _validation_set(self, files: list[Path], depth: Path | None) -> dict[str, torch.Tensor] | None:
        """Fixed synthetic validation pairs: centre crops of the held-out files, hazed once with a fixed seed."""
        dc = self.config.data
        if not files:
            return None
        cache = ImageCache.load(files, dc.cache_short_side, depth, min_side=dc.val_crop)
        side = dc.val_crop
        crops = []
        for stack in cache.stacks:
            h, w = stack.shape[-2:]
            y, x = (h - side) // 2, (w - side) // 2
            crops.append(stack[:, y:y + side, x:x + side])
        data = torch.stack(crops).float() / 255
        generator = torch.Generator().manual_seed(self.config.train.seed + 1000)
        haze = dataclasses.replace(self.config.haze, clear_p=0.0)  # clear days would score as perfect: hazy ones only
        hazy = torch.cat([synthesize_haze(c[:, :3], generator, depth=c[:, 3:], config=haze).hazy
                          for c in data.split(8)])
        clean = data[:, :3]
        # the do-nothing baseline: how far the hazy inputs themselves are from the targets
        self.val_input = {"val_psnr_input": psnr(hazy, clean).mean().item(),
                          "val_ssim_input": ssim_map(hazy, clean, 11).flatten(1).mean(1).mean().item()}
        return {"hazy": hazy, "clean": clean}

    def _paired_validation_set(self, pairs: PairedCache) -> dict[str, torch.Tensor] | None:
        """Held-out real pairs: centre crops of one side (``data.val_crop`` or the largest that fits all)."""
        if not len(pairs):
            return None
        multiple = self.model.size_multiple
        fits = min(min(h.shape[-2:]) for h in pairs.hazy) // multiple * multiple
        side = min(self.config.data.val_crop, fits)
        if side < multiple:
            return None

        def centre(image: torch.Tensor) -> torch.Tensor:
            h, w = image.shape[-2:]
            return image[:, (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]

        return {"hazy": torch.stack([centre(h) for h in pairs.hazy]).float() / 255,
                "clean": torch.stack([centre(c) for c in pairs.clean]).float() / 255}

    def _batch(self) -> Clip:
        """Clips at full resolution (``train.scale`` x ``train.crop``), hazy frames quantised to 8 bits as a camera
        or file delivers them."""
        tc = self.config.train
        use_paired = self.paired is not None and self.config.data.paired_fraction > 0 and bool(
            torch.rand((), generator=self.data_generator) < self.config.data.paired_fraction)
        if use_paired:
            pairs = random_windows(self.paired_stacks, tc.batch, tc.crop, self.data_generator).to(self.device)
            empty = pairs.new_zeros(tc.batch, 0, 1, tc.crop, tc.crop)
            return Clip(pairs[:, None, :3], pairs[:, None, 3:], empty.expand(-1, -1, 2, -1, -1), empty,
                        empty.expand(-1, -1, 2, -1, -1), empty)
        side = self._frame_side()
        window = side + 2 * clip_margin(tc.clip_frames, side, self.config.motion)
        stacks = [s for s in self.cache.stacks if min(s.shape[-2:]) >= window]
        windows = random_windows(stacks, tc.batch, window, self.data_generator).to(self.device)
        clip = make_clips(windows[:, :3], windows[:, 3:], tc.clip_frames, side, self.haze_generator,
                          haze=self.config.haze, motion=self.config.motion)
        return dataclasses.replace(clip, hazy=clip.hazy.mul(255).round_().div_(255))

    def _frame_side(self) -> int:
        """Full-resolution frame side for the next batch: ``train.crop`` times a scale drawn from ``train.scale``,
        capped so that some training image still holds a window of it."""
        tc = self.config.train
        lo, hi = tc.scale
        side = round(tc.crop * (lo + (hi - lo) * float(torch.rand((), generator=self.data_generator))))
        largest = max(min(s.shape[-2:]) for s in self.cache.stacks)
        while side > tc.crop and side + 2 * clip_margin(tc.clip_frames, side, self.config.motion) > largest:
            side -= 8
        return max(side, tc.crop)

    def _dehaze(self, hazy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The model's output for ``hazy`` ``(N, 3, S, S)`` in [0, 1], at full size: ``(output, z, transform)``.

        A coefficient model sees the frames shrunk to ``train.crop`` (as the product shrinks them to its inference
        size) and its transform is applied to the full-resolution frames, so the loss scores what users get. The
        transform (gains, offsets at the network's resolution) comes back for the real-haze terms; ``None`` for
        image models.
        """
        if not self.model.predicts_coefficients:
            y, z = self.model(hazy * 2 - 1)
            return y, z, None
        side = self.config.train.crop if self.model.training else self._val_side
        small = F.interpolate(hazy, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        raw, z = self.model(small * 2 - 1)
        gain, offset = kanet.transform.split(raw.float())
        return kanet.transform.apply(hazy.float(), gain, offset), z, (gain, offset)

    def _real_terms(self, side: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The real-haze terms on ``train.real_batch`` windows of unlabelled real hazy photos, ``side`` px at full
        resolution (or none this step when no photo is that large)."""
        tc, lc = self.config.train, self.config.loss
        stacks = [s for s in self.real if min(s.shape[-2:]) >= side]
        if not stacks:
            return torch.zeros((), device=self.device), {}
        hazy = random_windows(stacks, tc.real_batch, side, self.data_generator).to(self.device)
        with self._autocast():
            _, _, (gain, offset) = self._dehaze(hazy)
        radius = max(1, round(side / 80))  # He et al.'s 15 px patches at 600 px
        fog = fog_left(gain, hazy, radius).mean()
        airlight = airlight_kept(hazy, gain, offset, radius).mean()
        return lc.fog_left * fog + lc.airlight * airlight, {"fog_left": fog.item(), "airlight": airlight.item()}

    def _window(self, output: torch.Tensor, clip: Clip, side: int) -> tuple[torch.Tensor, Clip]:
        """The same random ``side`` x ``side`` window of every frame of the outputs ``(B, T, 3, S, S)`` and the clip.
        Flows are displacements in pixels, so they hold in the window's coordinates too; points that leave it are
        masked by the temporal loss."""
        full = output.shape[-1]
        y, x = (int(torch.randint(full - side + 1, (1,), generator=self.data_generator)) for _ in range(2))

        def cut(t: torch.Tensor) -> torch.Tensor:
            return t[..., y:y + side, x:x + side]

        return cut(output), Clip(*(cut(getattr(clip, f.name)) for f in dataclasses.fields(clip)))

    @property
    def _val_side(self) -> int:
        """Side the network sees validation crops at: ``data.val_crop`` shrunk by the geometric mean of
        ``train.scale``."""
        lo, hi = self.config.train.scale
        m = self.model.size_multiple
        return max(self.model.min_size, round(self.config.data.val_crop / math.sqrt(lo * hi) / m) * m)

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns the loss terms."""
        tc = self.config.train
        clip = self._batch()
        b, t = clip.hazy.shape[:2]
        with self._autocast():
            y, z, _ = self._dehaze(clip.hazy.flatten(0, 1))
        output = y.float().view(b, t, *y.shape[1:])
        side = clip.hazy.shape[-1]  # the real photos' windows match the frames, not the scoring window below
        if 0 < tc.loss_crop < output.shape[-1]:
            output, clip = self._window(output, clip, tc.loss_crop)
        epoch = self.step * tc.batch // max(1, len(self.cache))
        loss, terms = self.objective(output, z.float(), clip, epoch)
        if tc.real_batch:
            real, real_terms = self._real_terms(side)
            loss = loss + real
            terms.update(real_terms, loss=loss.item())
        if not torch.isfinite(loss):
            shown = ", ".join(f"{key} {value:.4g}" for key, value in terms.items())
            raise FloatingPointError(f"the loss is {loss.item()} at step {self.step} ({shown}): a learning rate too "
                                     "high for this data, or a loss weight? the last checkpoint holds the run before")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if tc.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        terms["lr"] = self.optimizer.param_groups[0]["lr"]
        return terms

    @torch.no_grad()
    def _score(self, pairs: dict[str, torch.Tensor], batch: int) -> tuple[float, float]:
        psnrs, ssims = [], []
        for hazy, clean in zip(pairs["hazy"].split(batch), pairs["clean"].split(batch)):
            hazy, clean = hazy.to(self.device), clean.to(self.device)
            with self._autocast():
                y = self._dehaze(hazy)[0]
            y = y.float().clamp(0, 1)
            psnrs.append(psnr(y, clean))
            ssims.append(ssim_map(y, clean, 11).flatten(1).mean(1))
        return torch.cat(psnrs).mean().item(), torch.cat(ssims).mean().item()

    def validate(self, batch: int = 8) -> dict[str, float]:
        """PSNR (dB) and SSIM on the fixed synthetic validation pairs (``val_*``) and on held-out real pairs
        (``val_paired_*``) when there are any; outputs clamped to [0, 1]."""
        metrics: dict[str, float] = {}
        self.model.eval()
        if self.val is not None:
            metrics["val_psnr"], metrics["val_ssim"] = self._score(self.val, batch)
            metrics["val_images"] = len(self.val["hazy"])
        if self.val_paired is not None:
            metrics["val_paired_psnr"], metrics["val_paired_ssim"] = self._score(self.val_paired, batch)
            metrics["val_paired_images"] = len(self.val_paired["hazy"])
        self.model.train()
        return metrics

    # --- state --------------------------------------------------------------------------------------------------

    def state(self) -> dict:
        """Everything besides the weights that exact resume needs."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data_generator": self.data_generator.get_state(),
            "haze_generator": self.haze_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "reweighter": self.objective.reweighter.state_dict() if self.objective.reweighter else None,
            "validation_due": self.validation_due,
            "config": config_to_dict(self.config),
        }

    def resume(self, checkpoint: str | Path) -> None:
        """Restore weights and state from a checkpoint (run folder, ``.state.pt`` or ``.safetensors``)."""
        weights, state_file = resolve_checkpoint(checkpoint)
        state = load_state(state_file)
        load_weights_into(self.model, weights)
        self.model.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.data_generator.set_state(state["data_generator"])
        self.haze_generator.set_state(state["haze_generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.objective.reweighter is not None and state.get("reweighter"):
            self.objective.reweighter.load_state_dict(state["reweighter"])
        self.step = int(state["step"])
        self.validation_due = bool(state.get("validation_due", False))
        self._trim_log()

    def _trim_log(self) -> None:
        """Drop what the log says of steps after the one resumed from: they are done again."""
        log = self.out / "log.jsonl"
        if not log.is_file():
            return
        lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _logged_step(line) <= self.step]
        if len(kept) < len(lines):
            tmp = atomic_path(log)
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, log)

    def checkpoint(self) -> Path:
        self.saving = True  # (a second Ctrl-C lets it finish: ``train._stop_on_signals``)
        try:
            return save_checkpoint(self.out, self.step, self.model, self.state(),
                                   keep_every=self.config.train.keep_every)
        finally:
            self.saving = False

    # --- loop ---------------------------------------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def fit(self, until: int | None = None, minutes: float | None = None) -> dict[str, float]:
        """Train to ``config.train.steps`` (or ``until``), logging, validating and checkpointing on schedule;
        with ``minutes``, stop (validated and checkpointed) at the first step after that much time.

        Returns:
            the last validation metrics (empty without a validation set).
        """
        tc = self.config.train
        end = planned = tc.steps if until is None else min(tc.steps, until)
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = atomic_path(self.out / "config.json")
        tmp.write_text(json.dumps(config_to_dict(self.config), indent=1) + "\n")
        os.replace(tmp, self.out / "config.json")
        if self.step == 0:  # a fresh run: what a log says of an earlier one that left no checkpoint is not this run's
            (self.out / "log.jsonl").unlink(missing_ok=True)
        self._log({"event": "start" if self.step == 0 else "resume", "step": self.step, "time": time.time(),
                   "device": str(self.device), "model": self.config.model.name,
                   "train_images": len(self.cache), "dropped_foggy": self.foggy, "near_copies": self.near_copies,
                   "val_images": 0 if self.val is None else len(self.val["hazy"]),
                   "contrastive": self.config.loss.contrastive > 0, "threads": torch.get_num_threads(),
                   **(self.val_input if self.val is not None else {})})
        metrics: dict[str, float] = {}
        has_val = self.val is not None or self.val_paired is not None
        if has_val and (self.step == 0 or self.validation_due):
            metrics = self.validate()
            self._log({"step": self.step, **metrics})
            if self.validation_due and self.step >= end:  # no later checkpoint will say it is done
                self.validation_due = False
                self.checkpoint()
        self.validation_due = False
        bar = tqdm(total=end, initial=self.step, disable=not self.progress, dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 60.0, desc=self.config.model.name)
        sums: dict[str, float] = {}
        count, tick = 0, time.perf_counter()
        deadline = None if minutes is None else tick + 60 * minutes
        while self.step < end:
            terms = self.train_step()
            bar.update(1)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if self.interrupted or (deadline is not None and time.perf_counter() > deadline):
                end = self.step  # out of time, or asked to stop: this step is the last one
            if self.step % tc.log_every == 0 or self.step == end:
                now = time.perf_counter()
                record = {"step": self.step, **{k: v / count for k, v in sums.items()},
                          "sec_per_step": (now - tick) / count}
                self._log(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", **({"psnr": f"{metrics['val_psnr']:.2f}"}
                                                                if "val_psnr" in metrics else {}))
                sums, count, tick = {}, 0, now
            if has_val and (self.step % tc.val_every == 0 or self.step == end):
                if self.interrupted:  # stop now; the resumed run validates this step first where it was due
                    self.validation_due = self.step % tc.val_every == 0 or self.step == planned
                else:
                    metrics = self.validate()
                    self._log({"step": self.step, **metrics})
            if self.step % tc.checkpoint_every == 0 or self.step == end:
                self.checkpoint()
        bar.close()
        return metrics

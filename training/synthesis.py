"""Multi-degradation hazy imaging model: clean image in, realistic hazy image out.

All maps are per pixel :math:`p`, images are RGB in [0, 1], and :math:`F_m, F_A, F_s` are independent smooth random
fields of mean 0 and variance 1 (:mod:`training.fields`: 24 cosines of 0.5-4 cycles per image). One draw of the
parameters below is made per image; ranges are those of :class:`HazeConfig` (its defaults are quoted).

1. Illumination change (hazy days are dimmer, flatter and less saturated than the clean photo):

   .. math:: J'(p) = \\mathrm{sat}_s\\big(e \\, w \\odot J(p)^{\\gamma} \\, (1 + h F_s(p))\\big)

   exposure :math:`e \\in [0.7, 1.05]`, gamma :math:`\\gamma \\in [0.9, 1.15]`, white balance
   :math:`w = 1 + \\delta`, :math:`\\delta_c \\in [-0.03, 0.03]`, shading :math:`h \\in [0, 0.12]`, saturation
   factor :math:`s \\in [0.75, 1]` (blend towards the luminance).
2. Scattering with depth (Koschmieder) and non-homogeneous density:

   .. math::

       \\tau(p) = \\beta \\, \\big(n + (1 - n) D(p)^{g}\\big) \\, \\exp\\big(\\sigma_m F_m(p) - \\sigma_m^2/2\\big),
       \\qquad t(p) = e^{-\\tau(p)}

   :math:`D` is the given depth map (normalised to [0, 1]) or the pseudo-depth of :mod:`training.depth`;
   thickness at the farthest point :math:`\\beta \\in [0.3, 2.8]`; nearest pseudo-distance :math:`n \\in [0.05, 0.35]`
   (foregrounds get some haze too); depth shaping :math:`g \\in [0.7, 1.5]`; density variation
   :math:`\\sigma_m \\in [0, 0.45]` (log-normal, mean 1, so the average thickness is kept).
3. Coloured, spatially varying airlight:

   .. math::

       A(p) = a \\, c \\, \\big(1 + v (0.5 - y(p)) + \\sigma_A F_A(p)\\big), \\qquad
       c = \\frac{1 + k\\,(0.05, 0.005, -0.07)}{\\max_c(\\cdot)}

   brightness :math:`a \\in [0.72, 0.98]`; tint :math:`k` triangular on :math:`[-1.2, 1.2]` (negative: blue-grey mist,
   positive: yellow-grey smog or dust; mostly near-neutral); vertical gradient :math:`v \\in [-0.04, 0.12]` over
   the image height :math:`y \\in [0, 1]` (brighter towards the sky); variation :math:`\\sigma_A \\in [0, 0.04]`.
   Hazy image :math:`I = J' t + A (1 - t)`.
4. Blur: forward scattering softens distant detail, :math:`I \\leftarrow t I + (1 - t) (G_{\\sigma_s} * I)` with
   :math:`\\sigma_s \\in [0, 1.5]` px; camera blur :math:`G_{\\sigma_c} * I`, :math:`\\sigma_c \\in [0.3, 1.2]` px with
   probability 0.4.
5. Sensor noise (Poisson-Gaussian approximation), probability 0.7:
   :math:`I \\leftarrow I + \\sqrt{r^2 + q^2 I}\\,(0.8 n_0 + 0.6 n_c)` with :math:`n_0, n_c \\sim \\mathcal N(0, 1)`
   (:math:`n_0` shared by the channels: processed camera noise is mostly luma), read noise
   :math:`r \\in [0.001, 0.008]`, shot noise :math:`q \\in [0, 0.015]`.
6. JPEG compression, per-image quality, probability 0.7: quality in [35, 95]. On a CPU through libjpeg (OpenCV),
   the codec cameras and files use; on a GPU through kornia's batched codec, which stays on the device.

A share ``clear_p`` of clear days (default 0) skips steps 1-3: no haze and no illumination change, only the camera
(blur, noise, JPEG), so a model also learns to leave a haze-free picture as it is.

The target of training stays the clean :math:`J`. Everything is drawn from a :class:`torch.Generator` in a fixed
order, so a seed fixes the output; tensors follow the input's device and dtype (CPU or CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import gaussian_blur2d

from training.depth import pseudo_depth
from training.fields import RandomField, pixel_coords, sample_field

__all__ = ["HazeConfig", "HazeParams", "HazeResult", "sample_haze_params", "render_haze", "synthesize_haze"]

Range = tuple[float, float]


@dataclass(frozen=True)
class HazeConfig:
    """Parameter ranges of the hazy imaging model (see the module docstring for the formulas)."""

    exposure: Range = (0.7, 1.05)
    gamma: Range = (0.9, 1.15)
    white_balance: float = 0.03
    shading: Range = (0.0, 0.12)
    saturation: Range = (0.75, 1.0)
    thickness: Range = (0.3, 2.8)
    near: Range = (0.05, 0.35)
    depth_gamma: Range = (0.7, 1.5)
    density_sigma: Range = (0.0, 0.45)
    airlight: Range = (0.72, 0.98)
    tint: float = 1.2
    airlight_gradient: Range = (-0.04, 0.12)
    airlight_sigma: Range = (0.0, 0.04)
    scatter_blur: Range = (0.0, 1.5)
    camera_blur: Range = (0.3, 1.2)
    camera_blur_p: float = 0.4
    read_noise: Range = (0.001, 0.008)
    shot_noise: Range = (0.0, 0.015)
    noise_p: float = 0.7
    jpeg_quality: Range = (35.0, 95.0)
    jpeg_p: float = 0.7
    field_components: int = 24
    field_cycles: Range = (0.5, 4.0)
    clear_p: float = 0.0  # share of clear days: no haze and no illumination change (only the camera's blur,
    #                       noise and JPEG), so a model learns to leave a haze-free picture as it is


_TINT_AXIS = (0.05, 0.005, -0.07)


@dataclass(frozen=True)
class HazeParams:
    """One draw of the model's parameters for a batch: scalars have shape :math:`(B,)`, colours :math:`(B, 3)`."""

    exposure: torch.Tensor
    gamma: torch.Tensor
    white_balance: torch.Tensor
    shading: torch.Tensor
    saturation: torch.Tensor
    thickness: torch.Tensor
    near: torch.Tensor
    depth_gamma: torch.Tensor
    density_sigma: torch.Tensor
    airlight: torch.Tensor
    airlight_gradient: torch.Tensor
    airlight_sigma: torch.Tensor
    scatter_blur: torch.Tensor
    camera_blur: torch.Tensor
    read_noise: torch.Tensor
    shot_noise: torch.Tensor
    jpeg_quality: torch.Tensor
    jpeg: torch.Tensor
    density_field: RandomField
    airlight_field: RandomField
    shading_field: RandomField


@dataclass(frozen=True)
class HazeResult:
    """Output of the model: ``hazy`` :math:`(B, 3, H, W)` in [0, 1], ``transmission`` :math:`(B, 1, H, W)` in
    (0, 1], ``airlight`` :math:`(B, 3, H, W)` in [0, 1] and the ``depth`` :math:`(B, 1, H, W)` in [0, 1] used."""

    hazy: torch.Tensor
    transmission: torch.Tensor
    airlight: torch.Tensor
    depth: torch.Tensor


def sample_haze_params(batch: int, generator: torch.Generator, config: HazeConfig = HazeConfig(), *,
                       drift: float = 0.0) -> HazeParams:
    """Draw the parameters of ``batch`` hazy images (on the generator's device).

    Args:
        batch: number of images B.
        generator: randomness; the draw order is fixed, so equal seeds give equal parameters.
        config: parameter ranges.
        drift: largest drift speed of the density and airlight fields, in image widths per frame (for clips).
    """
    dev = generator.device

    def uniform(bounds: Range, *shape: int) -> torch.Tensor:
        lo, hi = bounds
        return lo + (hi - lo) * torch.rand(shape or (batch,), generator=generator, device=dev)

    def chance(p: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator, device=dev) < p

    wb = 1 + uniform((-config.white_balance, config.white_balance), batch, 3)
    tint = config.tint * (torch.rand(batch, generator=generator, device=dev)
                          + torch.rand(batch, generator=generator, device=dev) - 1)
    colour = 1 + tint[:, None] * torch.tensor(_TINT_AXIS, device=dev)
    colour = colour / colour.amax(1, keepdim=True)
    airlight = uniform(config.airlight)[:, None] * colour
    camera_blur = torch.where(chance(config.camera_blur_p), uniform(config.camera_blur), torch.zeros(batch, device=dev))
    noisy = chance(config.noise_p)
    read_noise = uniform(config.read_noise) * noisy
    shot_noise = uniform(config.shot_noise) * noisy
    jpeg = chance(config.jpeg_p)
    jpeg_quality = uniform(config.jpeg_quality).round()
    field = dict(components=config.field_components, min_cycles=config.field_cycles[0],
                 max_cycles=config.field_cycles[1])
    drawn = {name: uniform(getattr(config, name)) for name in (
        "exposure", "gamma", "shading", "saturation", "thickness", "near", "depth_gamma", "density_sigma",
        "airlight_gradient", "airlight_sigma", "scatter_blur")}
    fields_drawn = {name: sample_field(batch, generator, max_speed=drift, **field)
                    for name in ("density_field", "airlight_field", "shading_field")}
    if config.clear_p > 0:  # drawn last, and only when asked for: configurations without clear days keep theirs
        clear = chance(config.clear_p)
        for name, identity in (("exposure", 1.0), ("gamma", 1.0), ("shading", 0.0), ("saturation", 1.0),
                               ("thickness", 0.0)):
            drawn[name] = torch.where(clear, torch.full_like(drawn[name], identity), drawn[name])
        wb = torch.where(clear[:, None], torch.ones_like(wb), wb)
    return HazeParams(white_balance=wb, airlight=airlight, camera_blur=camera_blur, read_noise=read_noise,
                      shot_noise=shot_noise, jpeg_quality=jpeg_quality, jpeg=jpeg, **drawn, **fields_drawn)


def _blur(image: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Per-image Gaussian blur; ``sigma`` :math:`(B,)` in px, 0 leaves the image unchanged."""
    size = 2 * int(3 * max(max_sigma, 0.1) + 0.999) + 1
    sigma = sigma.clamp_min(1e-2).to(image.dtype)  # a 0.01 px Gaussian is a delta at the kernel's grid
    return gaussian_blur2d(image, (size, size), torch.stack([sigma, sigma], -1))


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """``image`` (3, H, W) in [0, 1] through a real JPEG encoder and decoder (libjpeg, 4:2:0) at ``quality``: the
    blocking and ringing that cameras and files carry (on a CPU, ten times faster than kornia's codec)."""
    rgb = image.detach().mul(255).round_().clamp_(0, 255).byte().permute(1, 2, 0).cpu().numpy()
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1).to(image.device, image.dtype) / 255


def _field(field: RandomField, coords: torch.Tensor, time: float) -> torch.Tensor:
    """Evaluate a field on a grid of at most 32 rows/columns and upsample: the fields hold at most a few cycles per
    image, so this is exact to well under 1e-2 and an order of magnitude cheaper than every pixel."""
    h, w = coords.shape[1:3]
    step = max(1, max(h, w) // 32)
    if step == 1:
        return field(coords, time)
    coarse = F.interpolate(coords.permute(0, 3, 1, 2), size=(-(-h // step) + 1, -(-w // step) + 1),
                           mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
    return F.interpolate(field(coarse, time), size=(h, w), mode="bilinear", align_corners=True)


def render_haze(clean: torch.Tensor, depth: torch.Tensor, params: HazeParams, generator: torch.Generator, *,
                coords: torch.Tensor | None = None, time: float = 0.0, vertical: torch.Tensor | None = None,
                config: HazeConfig = HazeConfig()) -> HazeResult:
    """Apply the hazy imaging model with given parameters.

    Args:
        clean: RGB, shape :math:`(B, 3, H, W)`, range [0, 1].
        depth: relative depth, shape :math:`(B, 1, H, W)`, range [0, 1], 1 = far.
        params: a draw from :func:`sample_haze_params` with the same B.
        generator: randomness of the sensor noise (the only per-call draw).
        coords: where to evaluate the random fields, shape :math:`(B|1, H, W, 2)`; default: this image's pixels.
            A clip passes each frame's points in the scene's coordinates so the haze moves with the scene.
        time: frame time for the drift of the fields.
        vertical: height in the scene for the airlight gradient, shape :math:`(B|1, 1, H, W)` in [0, 1] (0 = top);
            default: this image's rows.
        config: supplies the blur ranges' upper bounds (kernel sizes).

    Returns:
        :class:`HazeResult` with tensors of the input's device and dtype.
    """
    b, _, h, w = clean.shape
    dev, dt = clean.device, clean.dtype
    p = {f.name: getattr(params, f.name) for f in fields(params)}
    p = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in p.items()}

    def col(name: str) -> torch.Tensor:
        return p[name].to(dt).view(b, *([1] * 3)) if p[name].dim() == 1 else p[name].to(dt).view(b, -1, 1, 1)

    if coords is None:
        coords = pixel_coords(h, w, device=dev, dtype=dt)
    if vertical is None:
        vertical = ((torch.arange(h, device=dev, dtype=dt) + 0.5) / h).view(1, 1, h, 1)
    coords = coords.to(dev, dt)

    radiance = clean.clamp(0, 1) ** col("gamma") * col("exposure") * col("white_balance")
    radiance = radiance * (1 + col("shading") * _field(params.shading_field, coords, time))
    grey = rgb_to_grayscale(radiance.clamp(0, 1))
    radiance = (grey + col("saturation") * (radiance - grey)).clamp(0, 1)

    sigma_m = col("density_sigma")
    density = torch.exp(sigma_m * _field(params.density_field, coords, time) - sigma_m ** 2 / 2)
    distance = col("near") + (1 - col("near")) * depth.to(dev, dt).clamp(0, 1) ** col("depth_gamma")
    transmission = torch.exp(-col("thickness") * distance * density)

    variation = col("airlight_sigma") * _field(params.airlight_field, coords, time)
    shape = 1 + col("airlight_gradient") * (0.5 - vertical) + variation
    airlight = (col("airlight") * shape).clamp(0, 1)

    hazy = radiance * transmission + airlight * (1 - transmission)
    hazy = torch.lerp(hazy, _blur(hazy, p["scatter_blur"], config.scatter_blur[1]), 1 - transmission)
    hazy = _blur(hazy, p["camera_blur"], config.camera_blur[1])
    # Demosaicing and processing correlate noise across channels: mostly shared (luma) noise, some chroma.
    noise = torch.randn((b, 4, h, w), generator=generator, device=generator.device).to(dev, dt)
    noise = 0.8 * noise[:, :1] + 0.6 * noise[:, 1:]
    std = torch.sqrt(col("read_noise") ** 2 + col("shot_noise") ** 2 * hazy.clamp_min(0))
    hazy = (hazy + std * noise).clamp(0, 1)
    if hazy.device.type != "cpu" and bool(p["jpeg"].any()):
        coded = jpeg_codec_differentiable(hazy, p["jpeg_quality"].to(dt)).clamp(0, 1)
        hazy = torch.where(p["jpeg"].view(b, 1, 1, 1), coded, hazy)
    else:
        for i in torch.nonzero(p["jpeg"]).flatten().tolist():
            hazy[i] = _jpeg(hazy[i], int(p["jpeg_quality"][i]))
    return HazeResult(hazy, transmission, airlight.expand(b, 3, h, w), depth)


def synthesize_haze(clean: torch.Tensor, generator: torch.Generator, *, depth: torch.Tensor | None = None,
                    config: HazeConfig = HazeConfig()) -> HazeResult:
    """Make a batch of hazy images from clean ones.

    Args:
        clean: RGB, shape :math:`(B, 3, H, W)`, range [0, 1], any device.
        generator: randomness (CPU or the images' device); equal seeds give equal outputs on one device.
        depth: optional relative depth :math:`(B, 1, H, W)` in [0, 1] (1 = far); pseudo-depth when ``None``.
        config: parameter ranges.

    Returns:
        :class:`HazeResult`; ``hazy`` has the shape, device and dtype of ``clean``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> synthesize_haze(torch.rand(2, 3, 64, 64), g).hazy.shape
        torch.Size([2, 3, 64, 64])
    """
    if depth is None:
        depth = pseudo_depth(clean)
    params = sample_haze_params(clean.shape[0], generator, config)
    return render_haze(clean, depth, params, generator, config=config)

"""Temporal smoothing and the batched engine: same frames for any batch size, less flicker, no ghosts."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from streamdehaze.colour import YUVFormat, rgb_to_yuv, yuv_to_rgb
from streamdehaze.engine import Correction, Engine, Request
from streamdehaze.frames import frame_from_planes, planes_of
from streamdehaze.models.dcp import DarkChannelPrior
from streamdehaze.errors import UsageError
from streamdehaze.temporal import TemporalSmoother, phase_shifts, smoother

FMT = YUVFormat("bt709", False, 8, (2, 2))


def _scene(h: int = 96, w: int = 160, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 10, generator=g), size=(h, w), mode="bicubic")
    depth = torch.linspace(1, 0.2, h).view(1, 1, h, 1)
    t = torch.exp(-1.4 * depth)
    return (base.clamp(0, 1) * t + 0.85 * (1 - t)).clamp(0, 1)


def _dehaze(engine: Engine, frames: list[torch.Tensor], batch: int,
            temporal: TemporalSmoother | None = None) -> list[torch.Tensor]:
    """Frames [1,3,H,W] -> dehazed RGB, through the engine's YUV video path, ``batch`` frames a call."""
    out = []
    for i in range(0, len(frames), batch):
        y, u, v = (p.numpy() for p in rgb_to_yuv(torch.cat(frames[i:i + batch]), FMT))
        video = [frame_from_planes(y[k], u[k], v[k], "yuv420p") for k in range(len(y))]
        for frame in video:
            frame.colorspace = 1  # BT.709, as FMT
        for frame in engine.process_frames(video, FMT, "yuv420p", temporal):
            planes = (torch.from_numpy(p.copy())[None] for p in planes_of(frame))
            out.append(yuv_to_rgb(*planes, FMT))
    return out


def _flicker(frames: list[torch.Tensor]) -> float:
    """Mean absolute frame-to-frame change (the warping error of a static scene: zero flow)."""
    return float(np.mean([(b - a).abs().mean() for a, b in zip(frames, frames[1:])]))


def _flickering_sequence(n: int = 12) -> list[torch.Tensor]:
    """A static foggy road where a headlight blinks in a corner: per-frame DCP's airlight estimate jumps with
    it and the whole picture flickers, the classic failure temporal smoothing is for."""
    scene = _scene()
    frames = []
    for i in range(n):
        f = scene.clone()
        if i % 2:
            f[..., 76:94, 2:24] = 1.0
        frames.append(f)
    return frames


def _flicker_outside_light(frames: list[torch.Tensor]) -> float:
    return _flicker([f[..., :70, :] for f in frames])


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_batches_give_the_same_frames(batch):
    frames = _flickering_sequence(10)  # 10 frames: batch 3 and 8 end with a partial batch
    ref = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 1, TemporalSmoother(0.6))
    out = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, batch, TemporalSmoother(0.6))
    assert all(torch.equal(a, b) for a, b in zip(ref, out))


def test_temporal_off_is_per_frame():
    frames = _flickering_sequence(6)
    engine = Engine(DarkChannelPrior(), "cpu")
    together = _dehaze(engine, frames, 6)
    alone = [_dehaze(Engine(DarkChannelPrior(), "cpu"), [f], 1)[0] for f in frames]
    assert all(torch.equal(a, b) for a, b in zip(together, alone))


def test_ema_lowers_flicker():
    frames = _flickering_sequence()
    off = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4)
    ema = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4, TemporalSmoother(0.6))
    assert _flicker_outside_light(off) > 2 / 255  # the light really does make per-frame output flicker
    assert _flicker_outside_light(ema) < 0.7 * _flicker_outside_light(off)


def test_global_exposure_change_passes_through_as_per_frame():
    scene = _scene()
    frames = [(scene * g).clamp(0, 1) for g in (1.0, 1.06, 0.94, 1.06, 0.94)]
    off = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 1)
    ema = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 1, TemporalSmoother(0.9))
    assert _flicker(ema) < 1.1 * _flicker(off)  # smoothing never amplifies what is in the input


def test_ema_leaves_a_static_scene_unchanged():
    frames = [_scene()] * 6
    off = _dehaze(Engine(DarkChannelPrior(), "cpu", infer_size=64), frames, 3)
    ema = _dehaze(Engine(DarkChannelPrior(), "cpu", infer_size=64), frames, 3, TemporalSmoother(0.9))
    assert all((a - b).abs().max() <= 1.5 / 255 for a, b in zip(off, ema))


@pytest.mark.parametrize("device_motion", [False, True])
def test_moving_object_does_not_ghost(device_motion):
    scene = _scene()
    frames = []
    for i in range(8):  # a dark square crossing the frame
        f = scene.clone()
        f[..., 30:60, 10 + 15 * i:40 + 15 * i] = 0.15
        frames.append(f)
    off = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 2)
    ema = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 2, TemporalSmoother(0.9, device_motion=device_motion))
    for i in range(1, 8):  # where the square was one frame ago, ema must not leave a trail
        trail = (slice(30, 60), slice(10 + 15 * (i - 1), 25 + 15 * (i - 1)))
        assert (ema[i][..., trail[0], trail[1]] - off[i][..., trail[0], trail[1]]).abs().mean() < 3 / 255


def test_scene_cut_resets():
    a, b = _scene(seed=1), _scene(seed=2) * 0.5
    smoother_run = _dehaze(Engine(DarkChannelPrior(), "cpu"), [a, a, a, b], 1, TemporalSmoother(0.9))
    fresh = _dehaze(Engine(DarkChannelPrior(), "cpu"), [b], 1, TemporalSmoother(0.0))[0]
    assert torch.equal(smoother_run[-1], fresh)  # nothing of the old scene carried over


def test_guided_path_at_native_size_is_the_model_output():
    frames = [_scene(120, 200)]
    direct = _dehaze(Engine(DarkChannelPrior(), "cpu", infer_size=None), frames, 1)[0]
    guided = _dehaze(Engine(DarkChannelPrior(), "cpu", infer_size=None), frames, 1, TemporalSmoother(0.0))[0]
    diff = (direct - guided).abs()
    assert diff.mean() < 1.5 / 255 and diff.max() < 12 / 255


def _video(frames: list[torch.Tensor]) -> list:
    out = []
    for rgb in frames:
        y, u, v = (p[0].numpy() for p in rgb_to_yuv(rgb, FMT))
        out.append(frame_from_planes(y, u, v, "yuv420p"))
        out[-1].colorspace, out[-1].pts = 1, len(out)
    return out


def test_streams_sharing_engine_calls_keep_their_own_temporal_state():
    """Two streams whose frames go through the model together give what each gives alone: the smoother is the
    stream's, not the engine's."""
    one, two = _video(_flickering_sequence(6)), _video([_scene(seed=3) * g for g in (1.0, 0.8, 1.0, 0.8, 1.0, 0.8)])
    alone = [Engine(DarkChannelPrior(), "cpu").process_frames(video, FMT, "yuv420p", TemporalSmoother(0.6))
             for video in (one, two)]
    engine = Engine(DarkChannelPrior(), "cpu")
    smoothers = TemporalSmoother(0.6), TemporalSmoother(0.6)
    shared: list[list] = [[], []]
    for i in range(0, 6, 2):
        batches = engine.submit_many([Request(video[i:i + 2], FMT, "yuv420p", s)
                                      for video, s in zip((one, two), smoothers)])
        for out, batch in zip(shared, batches):
            out += batch.frames()
    for mine, theirs in zip(shared, alone):
        assert [f.pts for f in mine] == [f.pts for f in theirs]
        assert all(np.array_equal(a.to_ndarray(), b.to_ndarray()) for a, b in zip(mine, theirs))


def test_streams_sharing_an_engine_keep_their_own_strength_and_noise_floor():
    """Each stream of one engine call gets its own ``Correction`` (None: the engine's), as an engine with those
    settings gives it: smoothed or not, the noise floor on or off, the model's own output at part strength."""
    videos = [_video(_flickering_sequence(4)), _video([_scene(seed=3) * g for g in (1.0, 0.8, 1.0, 0.8)])] * 2
    streams = [(Correction(0.5), True), (Correction(1.0, 0), True), (Correction(0.3, 2.0), False), (None, True)]
    engine = Engine(DarkChannelPrior(), "cpu", infer_size=None, strength=0.8, noise_floor=1.0)
    alone = []
    for video, (correction, smooth) in zip(videos, streams):
        c = correction or engine.correction
        own = Engine(DarkChannelPrior(), "cpu", infer_size=None, strength=c.strength, noise_floor=c.noise_floor)
        alone.append(own.process_frames(video, FMT, "yuv420p", TemporalSmoother(0.6) if smooth else None))
    smoothers = [TemporalSmoother(0.6) if smooth else None for _, smooth in streams]
    shared: list[list] = [[] for _ in streams]
    for i in range(0, 4, 2):
        batches = engine.submit_many([Request(video[i:i + 2], FMT, "yuv420p", s, c)
                                      for video, s, (c, _) in zip(videos, smoothers, streams)])
        for out, batch in zip(shared, batches):
            out += batch.frames()
    for mine, theirs in zip(shared, alone):
        assert all(np.array_equal(a.to_ndarray(), b.to_ndarray()) for a, b in zip(mine, theirs))
    assert not np.array_equal(shared[0][-1].to_ndarray(), shared[2][-1].to_ndarray())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU")])])
def test_streams_calling_one_engine_from_their_own_threads_keep_their_own_state(device):
    """GStreamer's elements: each stream calls one shared engine from its own thread, a frame at a time, with its
    own smoother and correction. Four at once (more than run side by side: a call that finds two running waits, and
    goes through the model with the others waiting) give what each gives alone (on a GPU, within a level: batched
    kernels may round otherwise)."""
    videos = [_video([_scene(144, 256, seed) * g for g in (1.0, 0.8, 0.9, 1.0)]) for seed in range(4)]
    corrections = [Correction(1.0), Correction(0.5), Correction(0.8, 0), Correction(1.0, 2.0)]

    def run(engine: Engine, video: list, correction: Correction) -> list[np.ndarray]:
        state = TemporalSmoother(0.6)
        return [engine.process_frames([f], FMT, "yuv420p", state, correction)[0].to_ndarray() for f in video]

    alone = [run(Engine(DarkChannelPrior(), device, infer_size=None), v, c) for v, c in zip(videos, corrections)]
    engine, start, shared = Engine(DarkChannelPrior(), device, infer_size=None), threading.Barrier(4), [None] * 4

    def stream(i: int) -> None:
        start.wait()
        shared[i] = run(engine, videos[i], corrections[i])

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    worst = max(np.abs(a.astype(int) - b).max() for mine, theirs in zip(shared, alone) for a, b in zip(mine, theirs))
    assert worst <= (0 if device == "cpu" else 1), worst


def test_a_correction_is_checked():
    with pytest.raises(UsageError, match="strength must be from 0 to 1, not 2"):
        Correction(2.0)
    with pytest.raises(UsageError, match="noise floor must be from 0 to 255 levels"):
        Correction(1.0, 300)


def _textured_scene(width: int) -> torch.Tensor:
    """A foggy scene ``[1,3,96,width]`` with texture for a camera to pan across."""
    g = torch.Generator().manual_seed(5)
    wide = _scene(96, width)
    texture = torch.nn.functional.interpolate(torch.rand(1, 1, 24, width // 4, generator=g), size=wide.shape[-2:],
                                              mode="bicubic")
    return (wide + 0.15 * (texture - 0.5)).clamp(0, 1)


def _panning_sequence(n: int = 12, step: int = 3) -> list[torch.Tensor]:
    """A camera panning ``step`` pixels a frame across a textured foggy scene, a headlight blinking in it: the
    whole picture moves, so smoothing that stops where the picture moves would do nothing here."""
    w = 160
    wide = _textured_scene(w + n * step)
    frames = []
    for i in range(n):
        f = wide[..., i * step:i * step + w].clone()
        if i % 2:
            f[..., 76:94, 60 - i * step + 40:82 - i * step + 40] = 1.0  # the light moves with the scene
        frames.append(f)
    return frames


def _pan_flicker(frames: list[torch.Tensor], step: int = 3) -> float:
    """Mean absolute change from each frame to the next one moved back by the pan, above the light's rows."""
    return float(np.mean([(b[..., :70, :-step] - a[..., :70, step:]).abs().mean() for a, b in zip(frames, frames[1:])]))


@pytest.mark.parametrize("device_motion", [False, True])
def test_ema_follows_a_panning_camera(device_motion):
    """On the CPU by the optical flow; on a GPU (``device_motion``) by the global shift."""
    frames = _panning_sequence()
    off = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4)
    ema = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4, TemporalSmoother(0.8, device_motion=device_motion))
    assert _pan_flicker(off) > 2 / 255  # per frame, the light makes the moving picture flicker
    assert _pan_flicker(ema) < 0.7 * _pan_flicker(off)


def test_static_mode_does_not_follow_the_camera():
    """``--temporal static`` is the average without the flow: cheaper, for cameras that do not move, and on a pan
    it smooths only what the structure test lets through."""
    frames = _panning_sequence()
    off = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4)
    static = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4, smoother("static"))
    assert _pan_flicker(static) > 0.7 * _pan_flicker(off)
    fixed = _flickering_sequence()  # a camera that does not move: as good as the full smoother
    per_frame = _flicker_outside_light(_dehaze(Engine(DarkChannelPrior(), "cpu"), fixed, 4))
    assert _flicker_outside_light(_dehaze(Engine(DarkChannelPrior(), "cpu"), fixed, 4, smoother("static"))) < 0.7 * per_frame


def test_unknown_mode_is_a_usage_error():
    with pytest.raises(UsageError, match="choose off, ema, static"):
        smoother("strong")


class _CountingFlow:
    def __init__(self, flow) -> None:
        self.flow, self.calls = flow, 0

    def calc(self, *args):
        self.calls += 1
        return self.flow.calc(*args)


def test_a_fixed_camera_gives_what_static_gives_and_rarely_looks_for_motion():
    """A camera that does not move, a light blinking in it: the default warps nothing (the same frames as
    ``static``), and after 8 still frames it looks for motion on one frame in 8."""
    frames = _flickering_sequence(40)
    ema = smoother("ema")
    ema._flow = counting = _CountingFlow(ema._flow)
    out = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4, ema)
    static = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4, smoother("static"))
    assert all(torch.equal(a, b) for a, b in zip(out, static))
    assert counting.calls == 8 + (40 - 9) // 8  # frames 2-9 each, then every 8th


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    return (0.2126 * rgb[:, 0] + 0.7152 * rgb[:, 1] + 0.0722 * rgb[:, 2]).float()


@pytest.mark.parametrize("shift", [(3.0, 0.0), (-1.4, 0.6), (7.25, -4.5)])
def test_phase_shifts_find_a_translation(shift):
    """A pixel of the new frame was at p + shift in the previous one; to a tenth of a pixel, fractions included."""
    wide = _panning_sequence(12)[0]
    h, w = wide.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    where = torch.stack(((xs + shift[0] + 0.5) / w * 2 - 1, (ys + shift[1] + 0.5) / h * 2 - 1), -1)[None]
    moved = torch.nn.functional.grid_sample(wide, where, mode="bicubic", padding_mode="reflection", align_corners=False)
    found, sure = phase_shifts(_luma(wide), _luma(moved))
    assert bool(sure[0])
    assert torch.allclose(found[0], torch.tensor(shift), atol=0.1), found


def test_phase_shifts_are_unsure_between_unrelated_pictures():
    found, sure = phase_shifts(_luma(_panning_sequence(2)[0]), _luma(_scene(seed=9)))
    assert not bool(sure[0])


def _zooming_sequence(n: int = 12, zoom: float = 1.03) -> list[torch.Tensor]:
    """A camera zooming in (or driving ahead) ``zoom`` a frame on a textured foggy scene, a light blinking in it."""
    g = torch.Generator().manual_seed(7)
    scene = _scene(96, 160)
    texture = torch.nn.functional.interpolate(torch.rand(1, 1, 24, 40, generator=g), size=(96, 160), mode="bicubic")
    scene = (scene + 0.15 * (texture - 0.5)).clamp(0, 1)
    frames = []
    for i in range(n):
        theta = torch.tensor([[[zoom ** -i, 0.0, 0.0], [0.0, zoom ** -i, 0.0]]])
        grid = torch.nn.functional.affine_grid(theta, [1, 3, 96, 160], align_corners=False)
        f = torch.nn.functional.grid_sample(scene, grid, mode="bicubic", padding_mode="reflection", align_corners=False)
        if i % 2:
            f[..., 80:92, 70:90] = 1.0
        frames.append(f.clamp(0, 1))
    return frames


def _zoom_flicker(frames: list[torch.Tensor], zoom: float = 1.03) -> float:
    """Mean absolute change from each frame to the next, the zoom undone, above the light's rows."""
    theta = torch.tensor([[[1 / zoom, 0.0, 0.0], [0.0, 1 / zoom, 0.0]]])
    grid = torch.nn.functional.affine_grid(theta, [1, 3, 96, 160], align_corners=False)
    moved = [torch.nn.functional.grid_sample(f, grid, mode="bilinear", align_corners=False) for f in frames[:-1]]
    return float(np.mean([(b - a)[..., 8:70, 8:-8].abs().mean() for a, b in zip(moved, frames[1:])]))


@pytest.mark.parametrize("device_motion", [False, True])
def test_ema_follows_a_zooming_camera(device_motion):
    """A zoom moves every pixel its own way: the flow follows it on the CPU, the tiles' shifts on a GPU."""
    frames = _zooming_sequence()
    off = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4)
    ema = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4, TemporalSmoother(0.8, device_motion=device_motion))
    static = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4, smoother("static"))
    assert _zoom_flicker(off) > 2 / 255
    assert _zoom_flicker(ema) < 0.8 * _zoom_flicker(static)


def test_device_motion_on_a_fixed_camera_gives_what_static_gives():
    """The global shift of a camera that does not move is under a twentieth of a pixel: nothing is moved."""
    frames = _flickering_sequence(10)
    out = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4, TemporalSmoother(device_motion=True))
    static = _dehaze(Engine(DarkChannelPrior(), "cpu"), frames, 4, smoother("static"))
    assert all(torch.equal(a, b) for a, b in zip(out, static))


@pytest.mark.parametrize("mode", ["ema", "static", "ema on a GPU"])
def test_a_still_camera_averages_four_times_longer(mode):
    """Coefficients that swing about a steady value (the network's wobble on a still picture) keep (1 - w) / (1 + w)
    of the swing: 0.026 with w = 1 - (1 - 0.8) / 4 for a camera found still, where 0.8 would keep 0.11."""
    small, offsets = _scene(), torch.zeros(1, 3, 96, 160)
    average = TemporalSmoother(0.8, device_motion=True) if mode == "ema on a GPU" else smoother(mode, 0.8)
    means = []
    for k in range(40):
        gains, _ = average(small, torch.full((1, 2, 96, 160), 2.1 if k % 2 else 1.9), offsets)
        means.append(float(gains.mean()))
    assert abs(means[-1] - means[-2]) / 0.2 == pytest.approx(0.05 / 1.95, abs=0.005)


@pytest.mark.parametrize("device_motion", [False, True])
def test_a_panning_camera_is_not_taken_for_a_still_one(device_motion):
    """The longer average is for still cameras only: on a pan the same swing keeps 0.8's share, 0.11."""
    wide = _textured_scene(160 + 60)
    offsets = torch.zeros(1, 3, 96, 160)
    average, means = TemporalSmoother(0.8, device_motion=device_motion), []
    for k in range(20):
        frame = wide[..., 3 * k:3 * k + 160]
        gains, _ = average(frame, torch.full((1, 2, 96, 160), 2.1 if k % 2 else 1.9), offsets)
        means.append(float(gains.mean()))
    assert abs(means[-1] - means[-2]) / 0.2 > 0.07


@pytest.mark.parametrize("path", ["rgb", "video"])
def test_a_new_strength_shows_on_the_next_frame(path):
    """A strength slider (the GStreamer element's property) moved to 0 gives the next frame back as it came, not
    after the smoother's memory has faded; and back to 1, the frame the smoothing would have given anyway."""
    frames = [_scene(seed=0) for _ in range(8)]
    engine, temporal = Engine(DarkChannelPrior(), "cpu", infer_size=48), smoother("ema")

    def one(frame: torch.Tensor) -> torch.Tensor:
        return engine.process_rgb(frame, temporal) if path == "rgb" else _dehaze(engine, [frame], 1, temporal)[0]

    steady = [one(f) for f in frames[:6]][-1]
    engine.strength = 0.0
    given_back = one(frames[6])
    plain = frames[6] if path == "rgb" else _dehaze(Engine(DarkChannelPrior(), "cpu", strength=0.0), [frames[6]], 1)[0]
    assert (given_back - plain).abs().max() < 1e-5
    engine.strength = 1.0
    assert (one(frames[7]) - steady).abs().max() < 1e-5

"""The in-memory API returns what it was given (type, shape, dtype, device, channel order), refuses what it cannot
take with a clear error, and treats consecutive calls as the frames of one stream."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch

from streamdehaze import Dehazer, UsageError, dehazed


@pytest.fixture(scope="module")
def dehazer():
    return Dehazer("dcp", device="cpu", temporal="off")  # unrelated images


def test_numpy_bgr_frame_and_batch(dehazer, hazy_image):
    rgb = hazy_image(0, 80, 60)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    out = dehazer(bgr)
    assert out.shape == bgr.shape and out.dtype == np.uint8
    assert out.mean() < bgr.mean() - 10
    as_rgb = Dehazer("dcp", device="cpu", bgr=False, temporal="off")(rgb)
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


def test_dtype_contract(dehazer, hazy_image):
    bgr = np.ascontiguousarray(hazy_image(2, 64, 48)[..., ::-1])
    out8 = dehazer(bgr)
    out16 = dehazer(bgr.astype(np.uint16) * 257)
    assert out16.dtype == np.uint16 and np.abs(out16 / 257 - out8).max() <= 1
    for dtype in (np.float32, np.float64):
        outf = dehazer(bgr.astype(dtype) / 255)
        assert outf.dtype == dtype and outf.shape == bgr.shape and 0 <= outf.min() and outf.max() <= 1
        assert np.abs(outf * 255 - out8).max() <= 1
    for bad in (bgr.astype(np.int32), bgr.astype(bool), bgr.astype(np.float16)):
        with pytest.raises(TypeError, match="expected uint8, uint16, float32 or float64 images"):
            dehazer(bad)
    with pytest.raises(TypeError, match="expected a numpy array or a torch tensor, not list"):
        dehazer(bgr.tolist())
    with pytest.raises(TypeError, match="expected a uint8, uint16 or float tensor"):
        dehazer(torch.from_numpy(bgr).permute(2, 0, 1).int())
    for value in (np.nan, np.inf):
        broken = bgr.astype(np.float32) / 255
        broken[3, 4, 1] = value
        with pytest.raises(ValueError, match="NaN or infinite"):
            dehazer(broken)
        with pytest.raises(ValueError, match="NaN or infinite"):
            dehazer(torch.from_numpy(broken).permute(2, 0, 1))
    with pytest.raises(ValueError, match="empty input"):
        dehazer(np.zeros((0, 64, 48, 3), np.uint8))
    assert np.array_equal(Dehazer("dcp", device=torch.device("cpu"), temporal="off")(bgr), out8)


def test_floats_far_outside_0_to_1_are_refused_and_slight_overshoot_is_clipped(dehazer, hazy_image):
    # An image of 0-255 as float32 (cv2 arithmetic's) came out 98 % white, without a word.
    bgr = np.ascontiguousarray(hazy_image(2, 64, 48)[..., ::-1]).astype(np.float32)
    bgr[0, 0], bgr[0, 1] = 255.0, 0.0
    tensor = torch.from_numpy(bgr).permute(2, 0, 1)
    for image in (bgr, bgr.astype(np.float64), tensor, tensor.half()):
        with pytest.raises(ValueError, match=r"^float images hold values from 0 to 1; this one reaches 255\.0 "
                                             r"\(divide an image of 0-255 by 255\)$"):
            dehazer(image)
    with pytest.raises(ValueError, match=r"reaches 65535\.0 \(divide an image of 0-65535 by 65535\)$"):
        dehazer(bgr * 257)
    with pytest.raises(ValueError, match=r"reaches -0\.6 \(scale it to 0-1\)$"):
        dehazer(bgr / 255 - 0.6)
    overshoot = bgr / 255 * 1.1 - 0.05  # a bicubic resize's: -0.05 to 1.05
    for image in (overshoot, torch.from_numpy(overshoot).permute(2, 0, 1)):
        out = dehazer(image)
        assert out.shape == image.shape and 0 <= float(out.min()) and float(out.max()) <= 1


def test_big_endian_arrays_are_read_by_value(dehazer, hazy_image):
    # ">u2" was refused with "expected uint8, uint16, float32 or float64 images, not >u2"
    bgr = np.ascontiguousarray(hazy_image(4, 64, 48)[..., ::-1]).astype(np.uint16) * 257 + np.uint16(3)
    for native in (bgr, bgr.astype(np.float32) / 65535, bgr[None].astype(np.float64) / 65535):
        swapped = native.astype(native.dtype.newbyteorder(">"))
        out = dehazer(swapped)
        assert out.dtype == swapped.dtype and np.array_equal(out, dehazer(native))


def test_the_callers_frames_are_left_as_they_are(hazy_image, tmp_path):
    rgb = Dehazer("dcp", device="cpu", bgr=False, temporal="off")
    frames = np.stack([hazy_image(3, 64, 48)] * 2).astype(np.float32) / 255
    np.save(tmp_path / "frames.npy", frames)
    stored = np.load(tmp_path / "frames.npy", mmap_mode="r")  # read-only: writing to it would crash the process
    before = frames.copy()
    assert np.array_equal(rgb(stored), rgb(frames))
    assert np.array_equal(frames, before)


def _clip(seed: int, n: int = 6) -> list[np.ndarray]:
    """A static foggy scene with a light blinking in a corner: per-frame dcp's airlight estimate jumps with it and
    the whole picture flickers, what temporal smoothing is for."""
    rng = np.random.default_rng(seed)
    scene = rng.uniform(0, 1, (6, 8, 3)).repeat(12, 0).repeat(12, 1)
    depth = np.linspace(1, 0.2, 72)[:, None, None]
    t = np.exp(-1.4 * depth)
    hazy = ((scene * t + 0.85 * (1 - t)) * 255).astype(np.uint8)
    frames = [hazy.copy() for _ in range(n)]
    for f in frames[1::2]:
        f[56:70, 2:20] = 255
    return frames


def _flicker(frames: list[np.ndarray]) -> float:
    """Mean frame-to-frame change above the light."""
    return float(np.mean([np.abs(b[:50].astype(int) - a[:50]).mean() for a, b in zip(frames, frames[1:])]))


def test_calls_are_frames_of_one_stream():
    frames = _clip(0)
    stream = Dehazer("dcp", device="cpu")
    smoothed = [stream(f) for f in frames]
    apart = [Dehazer("dcp", device="cpu", temporal="off")(f) for f in frames]
    assert _flicker(apart) > 2 and _flicker(smoothed) < 0.7 * _flicker(apart)
    stream.reset()  # a cut: nothing of the earlier frames carries over
    assert np.array_equal(stream(frames[3]), Dehazer("dcp", device="cpu")(frames[3]))


def test_temporal_strength_weighs_the_past_as_the_command_line_does():
    # The CLI, process(), serve and batch took it; Dehazer raised TypeError.
    frames = _clip(0)
    light, heavy = Dehazer("dcp", device="cpu", temporal_strength=0.3), Dehazer("dcp", device="cpu",
                                                                               temporal_strength=0.95)
    assert heavy.temporal.strength == 0.95 and heavy.stream().temporal.strength == 0.95
    assert _flicker([heavy(f) for f in frames]) < _flicker([light(f) for f in frames])
    for bad, message in ((1.0, "must be less than 1: 1.0"), (-0.1, "must be at least 0: -0.1")):
        with pytest.raises(UsageError, match=f"temporal_strength: {message}"):
            Dehazer("dcp", device="cpu", temporal_strength=bad)


def test_two_streams_share_one_model_and_equal_two_dehazers():
    a, b = _clip(1), _clip(2)
    first = Dehazer("dcp", device="cpu")
    second = first.stream()
    assert second.engine.model is first.engine.model
    together = [(first(x), second(y)) for x, y in zip(a, b)]  # interleaved calls
    alone_a, alone_b = Dehazer("dcp", device="cpu"), Dehazer("dcp", device="cpu")
    for (got_a, got_b), x, y in zip(together, a, b):
        assert np.array_equal(got_a, alone_a(x)) and np.array_equal(got_b, alone_b(y))


def test_iterating_over_dehazed_frames(make_video, probe):
    from streamdehaze import dehazed, read_frames

    src = make_video(frames=9, width=96, height=64)
    records = list(dehazed(src, model="dcp", batch=4))
    originals = [frame for _, frame in read_frames(src)]
    assert [r.index for r in records] == list(range(9)) and {r.stream for r in records} == {""}
    assert [r.seconds for r in records] == [float(t) for t in probe(src)["times"]]
    for record, original in zip(records, originals):
        assert np.array_equal(record.original, original)  # the frame it was dehazed from, BGR like the image
        assert record.image.shape == original.shape and np.abs(record.image.astype(int) - original).mean() > 10


def test_an_untagged_hd_video_is_read_as_the_engine_reads_it(tmp_path):
    # Untagged HD is BT.709 (what players and the engine assume); read_frames and FrameRecord.original read it as
    # BT.601, 6-10 levels off this colour, so an overlay of original and dehazed showed a cast the engine never made
    import av

    from streamdehaze import dehazed, read_frames

    colour = np.array([40, 90, 200], np.uint8)  # BGR: a saturated orange
    src = tmp_path / "hd.mp4"
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.broadcast_to(colour, (720, 1280, 3)).copy(), format="bgr24")
        for packet in [*stream.encode(frame.reformat(format="yuv420p", dst_colorspace="ITU709")), *stream.encode()]:
            out.mux(packet)
    with av.open(str(src)) as container:
        assert int(container.streams.video[0].codec_context.colorspace) == 2  # unspecified
    [(_, read)] = list(read_frames(src))
    [record] = list(dehazed(src, model="dcp", strength=0.0, noise_floor=0, temporal="off"))
    for image in (read, record.original, record.image):
        assert np.abs(image[360, 640].astype(int) - colour).max() <= 4, image[360, 640]  # (BT.601: 12)


def test_a_torch_device_is_taken_as_the_readme_says(make_video):
    # Dehazer took one; process() and dehazed() said "device: must be a string"
    from streamdehaze import dehazed

    src = make_video(frames=3, width=96, height=64)
    by_name = [r.image for r in dehazed(src, model="dcp", device="cpu")]
    by_device = [r.image for r in dehazed(src, model="dcp", device=torch.device("cpu"))]
    assert len(by_device) == 3 and all(np.array_equal(a, b) for a, b in zip(by_name, by_device))


def test_leaving_the_loop_early_stops_the_run(make_video):
    import threading

    from streamdehaze import dehazed

    src = make_video(frames=40, width=96, height=64)
    for record in dehazed(src, model="dcp"):
        if record.index == 2:
            break
    assert not [t for t in threading.enumerate() if t.name == "dehazed"]


def test_a_run_is_freed_when_it_ends_without_waiting_for_the_garbage_collector(make_video, tmp_path):
    # Reference cycles (a stream and its writer, its statistics, the stop's traceback) kept a run's decoder, encoder
    # and frames until the next full collection: an application leaving the loop at each reconnection grew by
    # hundreds of MB
    import gc

    from streamdehaze import dehazed, process
    from streamdehaze.sources import VideoFileSource

    src = make_video(frames=40, width=96, height=64)

    def sources() -> int:
        return sum(type(o) is VideoFileSource for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        for record in dehazed(src, model="dcp"):
            if record.index == 2:
                break
        assert sources() == 0
        process(src, tmp_path / "out.mp4", model="dcp")
        assert sources() == 0
    finally:
        gc.enable()


def test_a_callback_draws_an_overlay_that_is_written(make_video, probe, tmp_path):
    from streamdehaze import process

    src = make_video(frames=5, width=96, height=64)
    plain, marked = tmp_path / "plain.mkv", tmp_path / "marked.mkv"
    process(src, plain, model="dcp", codec="ffv1")

    def draw(record):
        image = record.image.copy()
        image[10:30, 20:60] = (0, 0, 255)  # a red box, BGR
        return image

    process(src, marked, model="dcp", codec="ffv1", on_frame=draw)
    for a, b in zip(probe(plain)["rgb"], probe(marked)["rgb"]):
        box = b[12:28, 22:58].astype(int)
        assert np.abs(box - (255, 0, 0)).max() <= 12  # red in RGB, through 4:2:0 and back
        rest = np.abs(b[40:, :].astype(int) - a[40:, :])  # the dehazed frame, through one more RGB round trip
        assert rest.mean() < 1.5 and rest.max() <= 8, (rest.mean(), rest.max())


def test_records_in_rgb_when_asked(make_video, probe, tmp_path):
    """``bgr=False``: records and the images a callback returns are RGB, as FrameRecord says a run may ask (no
    option did)."""
    from streamdehaze import process

    src = make_video(frames=3, width=96, height=64)
    bgr = [r.image for r in dehazed(src, model="dcp")]
    rgb = [r for r in dehazed(src, model="dcp", bgr=False)]
    assert all(np.array_equal(a[..., ::-1], b.image) and np.array_equal(b.original[..., ::-1], r.original)
               for a, b, r in zip(bgr, rgb, dehazed(src, model="dcp")))

    def draw(record):
        image = record.image.copy()
        image[10:30, 20:60] = (255, 0, 0)  # a red box, RGB
        return image
    process(src, tmp_path / "marked.mkv", model="dcp", codec="ffv1", on_frame=draw, bgr=False)
    for frame in probe(tmp_path / "marked.mkv")["rgb"]:
        assert np.abs(frame[12:28, 22:58].astype(int) - (255, 0, 0)).max() <= 12


def test_a_callback_returning_something_else_is_told_what_to_return(make_video, tmp_path):
    from streamdehaze import process

    src = make_video(frames=2, width=96, height=64)
    with pytest.raises(UsageError, match=r"on_frame returned an array of shape \(10, 10, 3\).*return None, or an "
                                         r"image of the record's shape \(64, 96, 3\)"):
        process(src, tmp_path / "o.mp4", model="dcp", on_frame=lambda r: np.zeros((10, 10, 3), np.uint8))


@pytest.mark.timeout(120)
def test_a_callback_that_raises_keyboard_interrupt_ends_the_run_as_ctrl_c_does(make_video, probe, tmp_path):
    """A "stop" key in a viewer raises KeyboardInterrupt from on_frame: the run ends as interrupted, its frames so
    far kept as NAME.partial.EXT, as a Ctrl-C leaves them. process() looped for ever, 100 MB a second, deaf to
    Ctrl-C (the writer raised its stored KeyboardInterrupt again at every wait, taken each time for a new one)."""
    from streamdehaze import process

    src = make_video(frames=20)

    def stop(record):
        if record.index == 4:
            raise KeyboardInterrupt
    result = process(src, tmp_path / "o.mp4", model="dcp", on_frame=stop)
    assert result.interrupted and result.frames == 4
    assert probe(tmp_path / "o.partial.mp4")["times"] == probe(src)["times"][:4]
    assert not [t.name for t in threading.enumerate() if t.name.split()[0] in ("encode", "decode", "engine")]


def test_a_rotated_video_is_handed_over_upright(make_video, probe, tmp_path):
    """A phone's portrait video is stored sideways with a rotation tag: records and raw frames come upright, as
    players and OpenCV show them, and an overlay drawn on the upright record stays where it was drawn."""
    import cv2

    from streamdehaze import process, read_frames

    src = make_video(frames=3, width=96, height=64, rotation=-90)
    capture = cv2.VideoCapture(str(src))
    shown = [capture.read()[1] for _ in range(3)]  # OpenCV applies the tag
    raw = [image for _, image in read_frames(src)]
    assert [image.shape for image in raw] == [(96, 64, 3)] * 3
    for ours, theirs in zip(raw, shown):
        assert np.abs(ours.astype(int) - theirs).mean() < 1

    out, seen = tmp_path / "marked.mkv", []

    def draw(record):
        seen.append(record)
        image = record.image.copy()
        image[5:25, 10:30] = (0, 0, 255)  # a red box near the top left of the upright picture
        return image

    process(src, out, model="dcp", codec="ffv1", on_frame=draw)
    assert [(r.image.shape, r.original.shape) for r in seen] == [((96, 64, 3), (96, 64, 3))] * 3
    assert np.array_equal(seen[0].original, raw[0])
    written = probe(out)
    assert written["rotation"] == -90 and written["size"] == (96, 64)  # stored sideways, tag kept
    box = np.rot90(written["rgb"][0], -1)[7:23, 12:28].astype(int)  # as a player shows it
    assert np.abs(box - (255, 0, 0)).max() <= 12


def test_options_as_data_equal_keyword_options(make_video, probe, tmp_path):
    from streamdehaze import EncodeOptions, ModelOptions, StreamConfig, process

    src = make_video(frames=4)
    flat, data = tmp_path / "flat.mkv", tmp_path / "data.mkv"
    process(src, flat, model="dcp", infer_size=64, codec="ffv1", temporal="off")
    process(StreamConfig(str(src), str(data), model=ModelOptions(model="dcp", infer_size=64),
                         encode=EncodeOptions(codec="ffv1"), temporal="off"))
    a, b = probe(flat), probe(data)
    assert a["times"] == b["times"] and all(np.array_equal(x, y) for x, y in zip(a["rgb"], b["rgb"]))
    with pytest.raises(TypeError, match="takes the output and options from the config, not as output, max_frames"):
        process(StreamConfig(str(src), str(data)), tmp_path / "other.mkv", max_frames=2)
    with pytest.raises(TypeError, match="not as max_frames"):
        next(dehazed(StreamConfig(str(src), None), max_frames=2))
    with pytest.raises(TypeError, match=r"^dehazed\(\) takes no output: it yields the frames"):  # (it wrote it)
        next(dehazed(StreamConfig(str(src), str(tmp_path / "quiet.mkv"))))
    assert not (tmp_path / "quiet.mkv").exists()
    with pytest.raises(TypeError, match=r"^StreamConfig's model is a ModelOptions, not 'dcp': "):  # (not later,
        StreamConfig(str(src), str(data), model="dcp")  # "'str' object has no attribute 'model'")
    # (it was "x.jpg (image2) cannot hold libx264 video; encoders it takes: mpeg2video, mpeg4")
    with pytest.raises(UsageError, match=r"^the output must be a video file, not an image: .*x\.jpg \(photos: "):
        process(src, tmp_path / "x.jpg", model="dcp")


def test_options_are_checked_as_the_command_line_checks_them(make_video, hazy_image, tmp_path):
    from streamdehaze import process, read_frames

    src = make_video(frames=3)
    for option, words in [({"batch": -2}, "batch: must be at least 1: -2"),
                          ({"max_frames": 0}, "max_frames: must be at least 1: 0"),
                          ({"duration": 0}, "duration: must be more than 0: 0"),
                          ({"infer_size": 1}, "infer_size: must be at least 16: 1"),
                          ({"max_latency": -1.0}, "max_latency: must be more than 0: -1.0")]:
        with pytest.raises(UsageError, match=words):
            process(src, tmp_path / "o.mkv", model="dcp", **option)
    for option in ({"max_frames": 0}, {"duration": -1.0}):
        with pytest.raises(UsageError, match="must be"):
            next(read_frames(src, **option))
    with pytest.raises(UsageError, match="queue_frames must be at least 1"):
        next(dehazed(src, queue_frames=0))
    with pytest.raises(UsageError, match="is a folder"):
        next(read_frames(tmp_path))
    if not torch.cuda.is_available():  # a torch.device is checked as the name is
        with pytest.raises(UsageError, match="no CUDA GPU is available"):
            Dehazer("dcp", device=torch.device("cuda:3"))
    # What the command line takes, the API takes: "full" runs natively, as --infer-size full does.
    assert process(src, tmp_path / "full.mkv", model="dcp", infer_size="full", codec="ffv1").frames == 3
    rgb = hazy_image(0, 64, 48)
    assert np.array_equal(Dehazer("dcp", device="cpu", temporal="off", infer_size="full")(rgb),
                          Dehazer("dcp", device="cpu", temporal="off", infer_size=None)(rgb))


def test_the_model_and_device_are_named_as_the_keywords_they_are_given_as(make_video, tmp_path):
    """A program's author gave ``device="cuda"``, not ``--device cuda``: the message names what they wrote."""
    from streamdehaze import process

    src = make_video(frames=2)
    for run in (lambda **kw: Dehazer(**kw), lambda **kw: process(src, tmp_path / "o.mkv", **kw)):
        with pytest.raises(UsageError, match=r"^no weights for model=kanet: pass weights=FILE "):
            run(model="kanet")
        if not torch.cuda.is_available():
            with pytest.raises(UsageError, match=r"^device=cuda: no CUDA GPU is available \(use device=cpu or auto\)$"):
                run(model="dcp", device="cuda")
    with pytest.raises(UsageError, match=r"^weights does not apply to model=dcp \(it has no weights\)$"):
        Dehazer("dcp", weights=tmp_path / "w.safetensors")
    assert not (tmp_path / "o.mkv").exists()


def test_the_encoder_settings_are_named_as_keywords_before_the_input_opens(tmp_path):
    """``crf=99`` was "--crf 99 is out of range", naming the command line's flag; a missing input shows the check
    comes before anything opens."""
    from streamdehaze import process

    missing = tmp_path / "missing.mp4"
    for options, words in [({"crf": 99}, r"crf=99 is out of range for libx264: 0 \(best\) to 51 \(smallest\)"),
                           ({"preset": "fastest"}, r"unknown preset='fastest' for libx264; choose one of ultrafast, "),
                           ({"codec": "ffv1", "crf": 20}, r"crf does not apply to ffv1; encoders that take it: "),
                           ({"codec": "ffv1", "preset": "fast"}, r"preset does not apply to ffv1; ")]:
        with pytest.raises(UsageError, match=f"^{words}"):
            process(missing, tmp_path / "o.mkv", model="dcp", **options)
    assert list(tmp_path.iterdir()) == []


def test_options_given_as_data_are_checked_as_keywords_are(make_video, probe, tmp_path):
    """A ``StreamConfig`` made directly takes what the keywords take ("full", numbers as text) and refuses what
    they refuse, naming the option (a segment time of 0 once made the writer loop for ever)."""
    from streamdehaze import EncodeOptions, LiveOptions, ModelOptions, StreamConfig, process

    src = make_video(frames=3)
    for config, words in [(dict(encode=EncodeOptions(segment_time=0)), "segment_time: must be at least 0.1: 0"),
                          (dict(encode=EncodeOptions(segment_time=-1)), "segment_time: must be at least 0.1: -1"),
                          (dict(encode=EncodeOptions(segment_time=1e-300)),
                           "segment_time: must be at least 0.1: 1e-300"),
                          (dict(batch=-2), "batch: must be at least 1: -2"),
                          (dict(max_latency=-1), "max_latency: must be more than 0: -1"),
                          (dict(live=LiveOptions(timeout=-1)), "timeout: must be more than 0: -1"),
                          (dict(model=ModelOptions(model="dcp", infer_size=3)), "infer_size: must be at least 16: 3"),
                          (dict(model=ModelOptions(model="dcp", infer_size="x")), "infer_size: ")]:
        with pytest.raises(UsageError, match=words):
            process(StreamConfig(str(src), str(tmp_path / "seg.mp4"), **config))
    assert not list(tmp_path.glob("seg*"))
    out = tmp_path / "text.mp4"
    result = process(StreamConfig(str(src), str(out), model=ModelOptions(model="dcp", infer_size="full",
                                                                          strength="0.5", device="cpu:0"),
                                  encode=EncodeOptions(crf="20")))
    assert result.frames == probe(out)["count"] == 3


def test_dehazed_names_itself_for_options_it_does_not_take(make_video):
    src = make_video(frames=2)
    for option in ({"output": "x.mp4"}, {"on_frame": print}):
        with pytest.raises(TypeError, match=r"^dehazed\(\) takes no output or on_frame"):
            next(dehazed(src, **option))


def test_a_callback_that_cannot_be_called_is_named_before_anything_opens(tmp_path):
    # on_frame=5 failed in the writer after the input had opened and the model loaded (44 s): "'int' object is
    # not callable". A missing input would be the first thing found once anything opens: the callback comes first.
    from streamdehaze import process, serve

    missing = tmp_path / "missing.mp4"
    for name, value, words in [("on_frame", 5, "int"), ("on_start", "x", "str"), ("on_frames", [], "list")]:
        with pytest.raises(TypeError, match=rf"^{name} must be callable, not {words}$"):
            process(missing, tmp_path / "o.mp4", model="dcp", **{name: value})
    with pytest.raises(TypeError, match=r"^on_start must be callable, not str$"):
        next(dehazed(missing, model="dcp", on_start="x"))
    with pytest.raises(TypeError, match=r"^on_start must be callable, not int$"):
        serve([{"name": "x", "input": str(missing), "output": str(tmp_path / "x.mp4"), "model": "dcp"}], on_start=3)
    assert list(tmp_path.iterdir()) == []


def test_a_flag_that_is_not_a_bool_is_refused_by_name(tmp_path):
    # Dehazer(bgr="no") was taken as true: the channels swapped without a word.
    from streamdehaze import process, read_frames

    missing = tmp_path / "missing.mp4"
    for run in (lambda bgr: Dehazer("dcp", device="cpu", bgr=bgr), lambda bgr: next(read_frames(missing, bgr=bgr)),
                lambda bgr: process(missing, tmp_path / "o.mp4", model="dcp", bgr=bgr),
                lambda bgr: next(dehazed(missing, model="dcp", bgr=bgr))):
        for value, shown in (("no", "'no'"), (0, "0"), (None, "None")):
            with pytest.raises(TypeError, match=rf"^bgr must be True or False, not {shown}$"):
                run(value)
    assert list(tmp_path.iterdir()) == []


def test_dir_lists_the_public_names_that_load_on_first_use():
    # The package loads them lazily (PEP 562): dir(streamdehaze), and so completion, showed none of them.
    import streamdehaze

    listed = dir(streamdehaze)
    assert {"Dehazer", "process", "serve", "tuned", "StreamConfig", "UsageError", "__version__"} <= set(listed)
    assert set(streamdehaze.__all__) <= set(listed) and listed == sorted(listed)
    assert all(getattr(streamdehaze, name) is not None for name in listed)


def test_a_fleet_runs_once_and_leaves_nothing_running(make_video, tmp_path):
    """``serve(on_start=...)`` that raises, a second ``start()``, a ``reload()`` after ``close()``: an error, and
    no engine or stream thread left behind (a file stream stopped as it opened was left running)."""
    import threading

    from streamdehaze import Fleet, serve

    src = make_video(frames=4)
    streams = [{"name": "x", "input": str(src), "output": str(tmp_path / "x.mp4"), "model": "dcp"}]

    def engines() -> int:
        return sum(t.name == "engine" or t.name.startswith("stream ") for t in threading.enumerate())

    def fails(fleet: Fleet) -> None:
        raise ValueError("the application's own mistake")

    with pytest.raises(ValueError, match="the application's own mistake"):
        serve(streams, on_start=fails)
    assert engines() == 0
    fleet = Fleet(streams)
    fleet.start()
    with pytest.raises(RuntimeError, match="a Fleet starts once"):
        fleet.start()
    assert fleet.wait(60)
    assert [s.result.frames for s in fleet.close().streams] == [4]
    with pytest.raises(RuntimeError, match="only a running one reloads"):
        fleet.reload([dict(streams[0], name="y", output=str(tmp_path / "y.mp4"))])
    assert engines() == 0 and not (tmp_path / "y.mp4").exists()


def test_strength_from_the_api(make_video, probe, hazy_image, tmp_path):
    """``strength``: 0 gives the input back, 0.5 about half of the full correction, in process() and Dehazer."""
    from streamdehaze import process

    rgb = hazy_image(2, 80, 60)
    full, half, none = (Dehazer("dcp", device="cpu", bgr=False, strength=s)(rgb).astype(int) for s in (1, 0.5, 0))
    assert np.abs(full - rgb).mean() > 10 and np.abs(none - rgb).mean() < 1.0
    assert np.abs(half - (full + rgb) / 2).mean() < 1.0
    with pytest.raises(UsageError, match="^strength: must be at most 1: 2$"):  # (as process() and serve say it)
        Dehazer("dcp", strength=2)
    # As process() and a configuration take it (it was "'<=' not supported between ... 'float' and 'str'").
    assert np.array_equal(Dehazer("dcp", device="cpu", bgr=False, strength="0.5")(rgb).astype(int), half)
    src = make_video(frames=4)
    process(src, tmp_path / "none.mkv", model="dcp", strength=0.0, codec="ffv1")
    got, original = probe(tmp_path / "none.mkv"), probe(src)
    assert got["times"] == original["times"]
    assert max(np.abs(a.astype(int) - b).mean() for a, b in zip(got["rgb"], original["rgb"])) < 1.5


def test_one_stream_called_from_several_threads_at_once_takes_turns():
    """A web server sharing one ``Dehazer`` among its request threads: calls that met in its temporal state, with
    frames of two sizes, raised torch's "The size of tensor a (96) must match the size of tensor b (128)"."""
    dehaze = Dehazer()
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, size, np.uint8) for size in [(72, 128, 3), (64, 96, 3)] * 3]
    failures: list[BaseException] = []

    def calls(frame: np.ndarray) -> None:
        try:
            for _ in range(25):
                assert dehaze(frame).shape == frame.shape
        except BaseException as exc:
            failures.append(exc)
    threads = [threading.Thread(target=calls, args=(frame,)) for frame in frames]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def test_names_given_as_bytes_are_the_file_system_s(make_video, probe, tmp_path):
    """``process(b"in.mp4", ...)`` looked for a file called "b'in.mp4'" ("input not found")."""
    from streamdehaze import process
    src = make_video(frames=3)
    result = process(bytes(src), bytes(tmp_path / "out.mp4"), model="dcp")
    assert result.frames == 3 and probe(tmp_path / "out.mp4")["count"] == 3


def test_a_dehazer_sent_to_another_process_is_refused_in_one_line(dehazer):
    """Pickling one (a process pool's argument) failed on a lock deep inside, which named neither it nor a remedy."""
    import pickle

    with pytest.raises(TypeError, match="^a Dehazer cannot be pickled or sent to another process: make one in each"):
        pickle.dumps(dehazer)
    other = dehazer.stream()  # (made by copying it, as before)
    assert other.engine is dehazer.engine and other._turn is not dehazer._turn


def test_a_camera_switched_to_night_vision_comes_out_grey_at_once(hazy_image):
    """At dusk a camera drops its IR-cut filter: from one frame to the next its picture has no colour. The temporal
    smoother's memory of the colour frames tinted the first grey ones (up to 36 levels between channels with dcp)."""
    dehaze = Dehazer("dcp", device="cpu")  # temporal smoothing on, as for video
    colour = hazy_image(0, 160, 120)
    grey = np.repeat(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)[..., None], 3, axis=2)
    for _ in range(10):
        dehaze(colour)
    for _ in range(3):
        out = dehaze(grey).astype(int)
        assert (out.max(-1) - out.min(-1)).max() <= 1

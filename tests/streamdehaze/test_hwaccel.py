"""--hwaccel: NVDEC/NVENC where FFmpeg can open the GPU, software otherwise, the same frames and timestamps."""

from __future__ import annotations

import logging

import av
import pytest
import torch

from streamdehaze import hwaccel
from streamdehaze.errors import UsageError


def test_auto_keeps_every_frame_and_timestamp(make_video, probe, run_cli, tmp_path):
    src = make_video(frames=9, width=128, height=72, audio=True)
    out = tmp_path / "out.mp4"
    code, err = run_cli(src, out, "--model", "dcp", "--hwaccel", "auto", "--quiet")
    assert code == 0, err
    a, b = probe(src), probe(out)
    assert b["count"] == 9 and b["times"] == a["times"] and b["audio"] == a["audio"]


def test_required_cuda_without_a_gpu_is_a_usage_error(make_video, run_cli, tmp_path):
    if hwaccel.nvdec_available():
        pytest.skip("FFmpeg opens an NVIDIA GPU here")
    code, err = run_cli(make_video(), tmp_path / "out.mp4", "--model", "dcp", "--hwaccel", "cuda")
    assert code == 2 and err.strip().endswith("FFmpeg cannot open an NVIDIA GPU here (use --hwaccel auto or none)")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out.mp4").exists()


def test_software_runs_and_codecs_without_nvenc_stay_in_software():
    assert hwaccel.use_cuda("none", torch.device("cuda")) is None
    assert hwaccel.use_cuda("auto", torch.device("cpu")) is None
    assert hwaccel.encoder("libvpx-vp9", 18, "veryfast", False, 64, 64, "yuv420p") is None


def _has_nvenc(index: int = 0) -> bool:
    return "h264_nvenc" in av.codecs_available and hwaccel.nvenc_available("h264_nvenc", 320, 180, "yuv420p", index)


@pytest.mark.parametrize("codec, software", [("h264_nvenc", "libx264"), ("hevc_nvenc", "libx265")])
def test_an_nvenc_codec_without_nvenc_says_so_before_the_model_loads(codec, software, make_video, run_cli,
                                                                     monkeypatch, tmp_path):
    # It said "hw.mp4 (mp4) cannot be written with h264_nvenc: Operation not permitted": the container blamed.
    if codec not in av.codecs_available or hwaccel.nvenc_available(codec, 256, 144, "yuv420p"):
        pytest.skip(f"this FFmpeg has no {codec}, or it opens here")
    from streamdehaze import api

    monkeypatch.setattr(api, "create_model", lambda *a: pytest.fail("the model loaded"))
    code, err = run_cli(make_video(), tmp_path / "hw.mp4", "--model", "dcp", "--codec", codec)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith(f"--codec {codec} needs an NVIDIA GPU with NVENC, and none is usable here (A100, "
                                f"H100 and H200 have no NVENC); use --codec {software}"), err
    assert not (tmp_path / "hw.mp4").exists()


def test_without_nvenc_auto_says_so_and_cuda_refuses(caplog):
    """As on an A100, H100 or H200 (NVDEC, no NVENC), or any machine without NVENC: ``auto`` encodes in software
    with a warning, a required NVENC is a usage error."""
    if _has_nvenc():
        pytest.skip("NVENC opens here")
    with caplog.at_level(logging.WARNING, logger="streamdehaze"):
        assert hwaccel.encoder("libx264", 20, "veryfast", False, 320, 180, "yuv420p", hwaccel.Nvidia()) is None
    assert "h264_nvenc does not open for 320x180 yuv420p on this GPU: encoding with libx264" in caplog.text
    with pytest.raises(UsageError, match="--hwaccel cuda: h264_nvenc does not open for 320x180 yuv420p on this GPU"):
        hwaccel.encoder("libx264", 20, "veryfast", False, 320, 180, "yuv420p", hwaccel.Nvidia(required=True))


@pytest.mark.cuda
def test_nvdec_and_nvenc_on_a_gpu(make_video, probe, run_cli, tmp_path):
    if not (torch.cuda.is_available() and hwaccel.nvdec_available()):
        pytest.skip("no CUDA GPU that FFmpeg can open")
    src = make_video(frames=12, width=320, height=180)
    out = tmp_path / "out.mp4"
    if not _has_nvenc():  # an A100, H100 or H200: NVDEC without NVENC
        code, err = run_cli(src, out, "--model", "dcp", "--device", "cuda", "--hwaccel", "cuda")
        assert code == 2 and "h264_nvenc does not open on this GPU" in err
        code, err = run_cli(src, out, "--model", "dcp", "--device", "cuda", "--hwaccel", "auto")
        assert code == 0 and "encoding with libx264" in err and probe(out)["times"] == probe(src)["times"]
        return
    code, err = run_cli(src, out, "--model", "dcp", "--device", "cuda", "--hwaccel", "cuda", "--quiet")
    assert code == 0, err
    assert probe(out)["times"] == probe(src)["times"]
    name, options = hwaccel.encoder("libx264", 20, "veryfast", True, 320, 180, "yuv420p")
    assert name == "h264_nvenc" and options["cq"] == "20" and options["preset"] == "p2" and options["gpu"] == "0"


@pytest.mark.cuda
def test_a_stream_nvdec_cannot_decode_is_decoded_in_software_and_said(make_video, probe, run_cli, tmp_path):
    """NVDEC has no H.264 4:4:4: ``auto`` decodes it in software and says so; ``cuda`` refuses it."""
    if not (torch.cuda.is_available() and hwaccel.nvdec_available()):
        pytest.skip("no CUDA GPU that FFmpeg can open")
    src = make_video(frames=6, width=160, height=96, pix_fmt="yuv444p")
    out = tmp_path / "out.mkv"
    code, err = run_cli(src, out, "--model", "dcp", "--device", "cuda", "--hwaccel", "auto", "--codec", "ffv1")
    assert code == 0 and "decoding in software" in err, err
    assert probe(out)["times"] == probe(src)["times"]
    code, err = run_cli(src, out, "--model", "dcp", "--device", "cuda", "--hwaccel", "cuda", "--codec", "ffv1")
    assert code == 2 and "--hwaccel cuda: " in err and len(err.strip().splitlines()) == 1, err

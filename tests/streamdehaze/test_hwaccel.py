"""--hwaccel: NVDEC/NVENC where FFmpeg can open the GPU, software otherwise, the same frames and timestamps."""

from __future__ import annotations

import pytest
import torch

from streamdehaze import hwaccel


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
    assert hwaccel.use_cuda("none", torch.device("cuda")) is False
    assert hwaccel.use_cuda("auto", torch.device("cpu")) is False
    assert hwaccel.encoder("libvpx-vp9", 18, "veryfast", False, 64, 64, "yuv420p") is None


@pytest.mark.cuda
def test_nvdec_and_nvenc_on_a_gpu(make_video, probe, run_cli, tmp_path):
    if not (torch.cuda.is_available() and hwaccel.nvdec_available()):
        pytest.skip("no CUDA GPU that FFmpeg can open")
    src = make_video(frames=12, width=320, height=180)
    out = tmp_path / "out.mp4"
    code, err = run_cli(src, out, "--model", "dcp", "--device", "cuda", "--hwaccel", "cuda", "--quiet")
    assert code == 0, err
    assert probe(out)["times"] == probe(src)["times"]
    name, options = hwaccel.encoder("libx264", 20, "veryfast", True, 320, 180, "yuv420p")
    assert name == "h264_nvenc" and options["cq"] == "20" and options["preset"] == "p2"

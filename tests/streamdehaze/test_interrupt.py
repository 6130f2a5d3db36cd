"""Ctrl-C, SIGTERM and SIGHUP flush the encoder: the output is playable and holds the frames dehazed so far
(exit 130). At start-up they end the run at once: one line, 130, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupt_leaves_a_playable_file(make_video, probe, tmp_path, sig):
    src = make_video(frames=1500, width=320, height=240)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "streamdehaze", str(src), str(out), "--quiet"],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        partial = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
            if found and found[0].stat().st_size > 20_000:  # the encoder has written frames
                partial = found[0]
                break
            time.sleep(0.05)
        assert partial is not None and proc.poll() is None, "run ended before it could be interrupted"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    info = probe(out)  # opens and decodes: the trailer was written
    assert 0 < info["count"] < 1500
    assert info["times"] == probe(src)["times"][: info["count"]]
    assert not any(".partial-" in p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("sig, after", [(signal.SIGINT, 0.2), (signal.SIGINT, 0.5), (signal.SIGINT, 0.8),
                                        (signal.SIGINT, 1.2), (signal.SIGTERM, 0.6), (signal.SIGHUP, 1.5)])
def test_interrupt_during_start_up(make_video, tmp_path, sig, after):
    src = make_video(frames=200)
    proc = subprocess.Popen([sys.executable, "-m", "streamdehaze", src, tmp_path / "out.mp4", "--model", "dcp"],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(after)  # importing torch and PyAV, parsing, loading the model
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.startswith("streamdehaze: interrupted")

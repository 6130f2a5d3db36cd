"""Ctrl-C, SIGTERM and SIGHUP at start-up end the run at once: one line, 130, no traceback. (Later, they finish
the file: tests/streamdehaze/test_outputs.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import default_interrupts, unread_in_pipe


@pytest.mark.parametrize("sig, after", [(signal.SIGINT, 0.2), (signal.SIGINT, 0.5), (signal.SIGINT, 0.8),
                                        (signal.SIGINT, 1.2), (signal.SIGTERM, 0.6), (signal.SIGHUP, 1.5)])
def test_interrupt_during_start_up(make_video, tmp_path, sig, after):
    src = make_video(frames=200, width=640, height=360)  # seconds of work: the run cannot end before the signal
    proc = subprocess.Popen([sys.executable, "-m", "streamdehaze", src, tmp_path / "out.mp4", "--model", "dcp"],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_interrupts)
    time.sleep(after)  # importing torch and PyAV, parsing, loading the model
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.startswith("streamdehaze: interrupted")


def test_interrupt_while_standard_input_is_open_and_silent_at_start_up(make_video, tmp_path):
    """The feeder sent the first bytes and stalled without closing the pipe: FFmpeg, looking for the streams,
    waited on the pipe for ever, where no signal's handler runs."""
    src = make_video("in.ts", frames=60)
    with open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "streamdehaze", "-", str(tmp_path / "out.mp4"), "--model",
                                 "dcp"], stdin=subprocess.PIPE, stderr=err, preexec_fn=default_interrupts)
    try:
        proc.stdin.write(src.read_bytes()[:2000])  # too little to tell the streams
        proc.stdin.flush()  # and kept open
        deadline = time.monotonic() + 120
        while unread_in_pipe(proc.stdin.fileno()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # (taken: the input is being opened)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
    said = (tmp_path / "err").read_text()
    assert proc.returncode == 130 and said.startswith("streamdehaze: interrupted"), said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err", "in.ts"]  # (nothing written)


def test_a_sighup_to_serve_while_it_loads_is_a_reload_not_an_end(make_video, probe, tmp_path):
    """A service manager may reload ``serve`` right after starting it, while torch loads: the run goes on."""
    src = make_video(frames=6)
    config = tmp_path / "cams.toml"
    config.write_text(f'model = "dcp"\n[[stream]]\nname = "gate"\ninput = "{src}"\noutput = "{tmp_path}/gate.mp4"\n')
    proc = subprocess.Popen([sys.executable, "-m", "streamdehaze", "serve", config], stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_interrupts)
    time.sleep(0.5)  # importing torch and PyAV
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert probe(tmp_path / "gate.mp4")["count"] == 6 and "interrupted" not in err


def test_a_run_in_another_thread_is_stopped_by_its_event(long_video, probe, tmp_path):
    """Ctrl-C reaches only the main thread: ``process(stop=event)`` is how an application (an asyncio executor, a
    service's worker) stops a run from anywhere. As Ctrl-C does, it keeps the frames done so far."""
    from streamdehaze import process
    stop, results, written = threading.Event(), [], []
    worker = threading.Thread(target=lambda: results.append(process(
        long_video, tmp_path / "out.mp4", model="dcp", stop=stop, on_frames=written.append)))
    worker.start()
    deadline = time.monotonic() + 120
    while sum(written) < 20:  # (frames of each batch dehazed)
        assert time.monotonic() < deadline and worker.is_alive(), results
        time.sleep(0.05)
    stop.set()
    worker.join(60)
    assert not worker.is_alive()
    (result,) = results
    assert result.interrupted and 20 <= result.frames < 1500, result
    assert result.output == str(tmp_path / "out.partial.mp4") and probe(result.output)["count"] == result.frames


def test_a_camera_that_never_answers_is_dialled_until_the_event_is_set(tmp_path):
    from streamdehaze import process
    from tests.conftest import free_port
    stop, results = threading.Event(), []
    url = f"rtsp://127.0.0.1:{free_port()}/cam"  # (nothing listens: dialled again and again, for ever)
    worker = threading.Thread(target=lambda: results.append(process(url, tmp_path / "cam.mp4", model="dcp",
                                                                    stop=stop)))
    worker.start()
    time.sleep(1.5)
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    assert results[0].interrupted and results[0].frames == 0 and not any(tmp_path.iterdir())


def test_a_failure_while_a_signal_waits_ends_as_the_signal():
    """A SIGTERM to the process group (timeout(1), a service manager) killed torch.compile's compiler first: the
    run ended as an internal error with the compiler's 2,674 lines, not as the stop it was."""
    from streamdehaze.pipeline import deferred_signals

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(KeyboardInterrupt), deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # (the signal is recorded, not acted on, here)
            raise RuntimeError("CppCompileError: C++ compile error")
        with pytest.raises(RuntimeError), deferred_signals():  # (no signal: the failure is what it is)
            raise RuntimeError("CppCompileError: C++ compile error")
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_internal_error_is_one_line_however_long_its_message(run_cli, monkeypatch):
    import streamdehaze.command

    def fail(args: object) -> int:
        raise RuntimeError("C++ compile error\nCommand:\ng++ ...\nwarning: ...")
    monkeypatch.setattr(streamdehaze.command, "_run", fail)
    code, err = run_cli("in.mp4", "out.mp4")
    assert (code, err) == (1, "streamdehaze: internal error: RuntimeError: C++ compile error ... (3 more lines) "
                              "(set STREAMDEHAZE_DEBUG=1 for a traceback)\n")


def test_stopping_leaves_alone_a_handler_it_could_not_put_back(monkeypatch):
    """A handler set outside Python (an embedding C program's) reads as None: it was replaced by one that does
    nothing, which then stayed, and Ctrl-C and SIGTERM did nothing for the rest of the process."""
    import signal

    from streamdehaze.pipeline import stopping

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(signal, "getsignal", lambda sig: None)
    with stopping():
        pass
    monkeypatch.undo()
    assert {sig: signal.getsignal(sig) for sig in before} == before

"""A real Ray cluster on 127.0.0.1 for the cluster tests: ``ray start --head`` in a temporary folder, with its own
token, stopped (its process group, and the workers its raylet started) by the test module that started it."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    """``ray start --head`` with ``cpus`` logical CPUs; ``env`` is what a driver needs to reach it."""

    def __init__(self, cpus: int = 4) -> None:
        # Short: Ray's socket paths live under it (a Unix socket path has at most 107 bytes).
        self.temp = Path(tempfile.mkdtemp(prefix="sdray-", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Loopback only (Ray otherwise picks the machine's address and listens on every interface), and a token.
        self.env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
        ray_cli = Path(sys.executable).with_name("ray")
        self.proc = subprocess.Popen(
            [str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
             "--temp-dir", str(self.temp), "--num-cpus", str(cpus), "--include-dashboard", "false",
             "--disable-usage-stats"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        said = []
        while not any("Ray runtime started" in line for line in said):
            line = self.proc.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError(f"ray start failed: {''.join(said)[-2000:]}")
            said.append(line)

    def processes(self) -> list:
        """Every process of this cluster: its process group, and what those processes started (workers)."""
        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.pid) == self.proc.pid:
                    found.append(p)
                    found += p.children(recursive=True)
            except (ProcessLookupError, psutil.Error):
                continue
        return list({p.pid: p for p in found}.values())

    def workers(self, title: str = "ray::DehazeWorker") -> list:
        """Live worker processes whose title starts with ``title`` (``ray::DehazeWorker.run`` while busy)."""
        out = []
        for p in self.processes():
            try:
                if p.cmdline() and p.cmdline()[0].startswith(title):
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def stop(self) -> None:
        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_cluster():
    cluster = RayCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def run_batch(ray_cluster):
    """``run_batch(*args) -> (exit code, stderr)``: ``streamdehaze batch ARGS --ray CLUSTER`` in a subprocess."""
    def run(*args: object, wait: bool = True):
        cmd = [sys.executable, "-m", "streamdehaze", "batch", *map(str, args), "--ray", ray_cluster.address]
        proc = subprocess.Popen(cmd, env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if not wait:
            return proc
        _, err = proc.communicate(timeout=600)
        return proc.returncode, err
    return run

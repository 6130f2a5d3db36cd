"""Engines shared within a process: users that ask for equal ``ModelOptions`` (``engine_key``) get one engine, with
one loaded model, until the last of them releases it.

``serve`` (``Fleet``) takes its engines here, and so does every ``dehaze`` element of GStreamer pipelines: N cameras
in one pipeline, or N pipelines in one process, load a model once. An engine holds no state of any stream: each user
brings its own temporal smoother and ``Correction`` (strength, noise floor), and may call it from its own thread, the
model calls of threads calling at once being shared (``Engine``, ``SharedCalls``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace

import torch

from .config import ModelOptions
from .engine import Engine
from .models import create_model, default_model

log = logging.getLogger("streamdehaze")


def engine_key(options: ModelOptions, device: torch.device) -> ModelOptions:
    """``options`` as engines are shared by: ``auto`` resolved to the model it runs on ``device`` (already resolved:
    ``resolve_device``), and that device by name."""
    name = default_model(device) if options.model == "auto" and options.weights is None else options.model
    return replace(options, model=name, device=str(device))


@dataclass
class _Entry:
    users: int = 0
    engine: Engine | None = None
    loading: threading.Lock = field(default_factory=threading.Lock)  # held by the user loading the model


class SharedEngines:
    """Engines by key, each loaded by its first user and dropped when its last one releases it (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[ModelOptions, _Entry] = {}

    def acquire(self, key: ModelOptions, option: str = "--{} {}") -> Engine:
        """The engine for ``key`` (from ``engine_key``), its model loaded now if no one holds it; ``release(key)``
        when done with it. Users of the same key meanwhile wait for that load and get the same engine; users of
        other keys do not wait. A failed load raises (``option``: how its message names a setting, as in
        ``create_model``) and holds nothing; a user waiting for it then tries for itself."""
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            entry.users += 1
        try:
            with entry.loading:
                if entry.engine is None:
                    entry.engine = _load(key, option)
                    log.info("loaded model %s on %s (inference size %s)", _name(key), key.device, key.infer_size)
        except BaseException:
            self.release(key)
            raise
        return entry.engine

    def release(self, key: ModelOptions) -> None:
        """One user of ``key``'s engine is done with it; after the last, the engine (its model) is let go."""
        with self._lock:
            entry = self._entries[key]
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]
                if entry.engine is not None:
                    log.info("released model %s on %s", _name(key), key.device)

    def users(self) -> dict[ModelOptions, int]:
        """How many users hold each engine there is (for logs and tests; empty when none is held)."""
        with self._lock:
            return {key: entry.users for key, entry in self._entries.items()}


def _load(key: ModelOptions, option: str) -> Engine:
    device = torch.device(key.device)
    model = create_model(key.model, key.weights, device, option=option)
    return Engine(model, device, key.infer_size, compile=key.compile, strength=key.strength,
                  noise_floor=key.noise_floor)


def _name(key: ModelOptions) -> str:
    return key.model if key.weights is None else f"{key.model} ({key.weights})"


ENGINES = SharedEngines()  # the process's

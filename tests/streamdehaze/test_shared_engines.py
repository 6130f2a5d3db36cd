"""Engines shared within a process: one per key, loaded once, released by the last user."""

from __future__ import annotations

import gc
import logging
import threading
import weakref

import pytest
import torch

from streamdehaze.config import ModelOptions
from streamdehaze.errors import UsageError
from streamdehaze.shared_engines import SharedEngines, engine_key

CPU = torch.device("cpu")


def _loads(caplog) -> int:
    return sum(r.getMessage().startswith("loaded model") for r in caplog.records)


def test_one_engine_a_key_released_by_the_last_user(caplog):
    caplog.set_level(logging.INFO, logger="streamdehaze")
    engines, key = SharedEngines(), engine_key(ModelOptions("dcp"), CPU)
    first, second = engines.acquire(key), engines.acquire(key)
    other = engines.acquire(engine_key(ModelOptions("dcp", infer_size=64), CPU))
    assert first is second and other is not first and _loads(caplog) == 2
    assert sorted(engines.users().values()) == [1, 2]
    gone = weakref.ref(first)
    engines.release(key)
    assert engines.users()[key] == 1
    engines.release(key)
    del first, second
    gc.collect()
    assert key not in engines.users() and gone() is None


def test_auto_is_keyed_as_the_model_it_runs():
    """``auto`` and the model it picks for the device are one engine; the device is part of the key."""
    auto = engine_key(ModelOptions(), CPU)
    assert auto == engine_key(ModelOptions("kanet-t"), CPU) and auto.device == "cpu"
    assert engine_key(ModelOptions("dcp"), CPU) != engine_key(ModelOptions("dcp"), torch.device("cuda:0"))


def test_users_starting_at_once_load_the_model_once(caplog):
    caplog.set_level(logging.INFO, logger="streamdehaze")
    engines, key = SharedEngines(), engine_key(ModelOptions("kanet-t"), CPU)
    start, got = threading.Barrier(4), []

    def user() -> None:
        start.wait()
        got.append(engines.acquire(key))

    threads = [threading.Thread(target=user) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 4 and all(engine is got[0] for engine in got) and _loads(caplog) == 1
    assert engines.users() == {key: 4}


def test_a_failed_load_holds_nothing():
    engines = SharedEngines()
    with pytest.raises(UsageError, match="unknown model 'bogus'"):
        engines.acquire(engine_key(ModelOptions("bogus"), CPU))
    assert engines.users() == {}

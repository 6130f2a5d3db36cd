"""Constant tensors on the device that uses them, made once instead of copied from the host on every call.

A per-frame ``torch.tensor(...)`` or ``host_constant.to(cuda_tensor)`` is a host-to-device copy on the compute
stream: the host waits for it, so batches in flight stop overlapping, and CUDA graph capture fails. Constants are
built once per (key, device, dtype) and, on CUDA, per stream: a tensor made on one stream is only safe to read on
another after synchronising, and several engines (streams of cameras) each compute on their own CUDA stream.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

_MAX_ENTRIES = 512
_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_lock = threading.Lock()


def device_constant(key: Hashable, like: torch.Tensor, build: Callable[[torch.device, torch.dtype], torch.Tensor],
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """``build(device, dtype)``, made once for ``like``'s device (and its current CUDA stream) in ``dtype``
    (default: ``like``'s). Callers must not modify the result."""
    device, dtype = like.device, dtype or like.dtype
    stream = torch.cuda.current_stream(device).stream_id if device.type == "cuda" else None
    full = (key, device, dtype, stream)
    with _lock:
        hit = _cache.get(full)
        if hit is not None:
            _cache.move_to_end(full)
            return hit
    value = build(device, dtype)
    with _lock:
        _cache[full] = value
        # Evicted tensors are freed in the order of the stream that made them (the one they are used on).
        while len(_cache) > _MAX_ENTRIES:
            _cache.popitem(last=False)
    return value

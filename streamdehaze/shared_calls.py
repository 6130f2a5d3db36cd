"""Model calls shared by concurrent callers: several streams' threads calling one engine (``Dehazer.stream()``).

A call that arrives while the model is busy waits; when the model frees, every call waiting goes through it
together, those of one input shape concatenated into one batch. Nobody waits for company: a call that finds the
model free runs at once, alone. So one stream alone runs as before, and N threads calling at once get batches of
up to N without a timer. (The engine's own scheduler batches the streams it serves itself: ``pipeline.py``.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

Outputs = torch.Tensor | tuple[torch.Tensor, ...]


class _Pending:
    def __init__(self, fn: Callable[[torch.Tensor], Outputs], x: torch.Tensor) -> None:
        self.fn, self.x = fn, x
        self.key = (fn, tuple(x.shape[1:]), x.dtype, x.device)
        self.done = False
        self.result: Outputs | None = None
        self.error: BaseException | None = None


class SharedCalls:
    """``calls(fn, x)`` returns ``fn(x)``, computed together with the concurrent calls of the same ``fn`` on
    inputs of the same shape: ``fn`` must treat the batch dimension item by item, and return a tensor or tuple of
    tensors batched along it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[_Pending] = []
        self._busy = False

    def __call__(self, fn: Callable[[torch.Tensor], Outputs], x: torch.Tensor) -> Outputs:
        call = _Pending(fn, x)
        with self._cond:
            self._waiting.append(call)
            while self._busy and not call.done:
                self._cond.wait()
            if not call.done:  # the model is free: this thread runs every call waiting, its own among them
                self._busy = True
                taken, self._waiting = self._waiting, []
        if not call.done:
            try:
                _run(taken)
            except BaseException as exc:  # (KeyboardInterrupt) the others' calls end too, with it
                for other in taken:
                    if not other.done:
                        other.error, other.done = exc, True
                raise
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        if call.error is not None:
            raise call.error
        return call.result


def _run(calls: list[_Pending]) -> None:
    groups: dict[tuple, list[_Pending]] = {}
    for call in calls:
        groups.setdefault(call.key, []).append(call)
    for members in groups.values():
        try:
            x = torch.cat([c.x for c in members]) if len(members) > 1 else members[0].x
            out = members[0].fn(x)
            sizes = [c.x.shape[0] for c in members]
            parts = zip(*(t.split(sizes) for t in out)) if isinstance(out, tuple) else ((p,) for p in out.split(sizes))
            for call, part in zip(members, parts):
                call.result = tuple(part) if isinstance(out, tuple) else part[0]
        except Exception as exc:  # every call of this batch gets the error, in its own thread
            for call in members:
                call.error = exc
        for call in members:
            call.done = True

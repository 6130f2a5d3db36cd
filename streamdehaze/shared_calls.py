"""Model calls shared by concurrent callers: several streams' threads calling one engine (``Dehazer.stream()``).

Up to ``CALLS_AT_ONCE`` calls run at once; a call that arrives while they all run waits, and when one ends, every
call waiting goes through the model together, those of one input shape concatenated into one batch. Nobody waits
for company: a call that finds a free slot runs at once. So one stream alone runs as before, two run side by side
as two separate models would, and more share batches, without a timer. (The engine's own scheduler batches the
streams it serves itself: ``pipeline.py``.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

Outputs = torch.Tensor | tuple[torch.Tensor, ...]

# Two model calls side by side use two cores better than one call of twice the batch with two threads per operator
# (kanet-t at 256 px on this 2-core CPU: 33 frames/s against 18); more gained nothing there.
CALLS_AT_ONCE = 2


class _Pending:
    def __init__(self, fn: Callable[[torch.Tensor], Outputs], x: torch.Tensor) -> None:
        self.fn, self.x = fn, x
        self.key = (fn, tuple(x.shape[1:]), x.dtype, x.device)
        self.taken = False  # by a thread that runs it
        self.done = False
        self.result: Outputs | None = None
        self.error: BaseException | None = None


class SharedCalls:
    """``calls(fn, x)`` returns ``fn(x)``, computed together with the concurrent calls of the same ``fn`` on
    inputs of the same shape: ``fn`` must treat the batch dimension item by item, and return a tensor or tuple of
    tensors batched along it."""

    def __init__(self, at_once: int = CALLS_AT_ONCE) -> None:
        self.at_once = at_once
        self._cond = threading.Condition()
        self._waiting: list[_Pending] = []
        self._running = 0

    def __call__(self, fn: Callable[[torch.Tensor], Outputs], x: torch.Tensor) -> Outputs:
        call = _Pending(fn, x)
        with self._cond:
            self._waiting.append(call)
            while True:
                while not call.taken and self._running >= self.at_once:
                    self._cond.wait()
                mine = not call.taken
                if mine:  # a free slot: this thread runs every call waiting, its own among them
                    self._running += 1
                    taken, self._waiting = self._waiting, []
                    for other in taken:
                        other.taken = True
                    break
                while call.taken and not call.done:  # another thread took it: wait for its result
                    self._cond.wait()
                if call.done:
                    break
                # (handed back: that thread was interrupted) wait for a slot again
        if mine:
            try:
                _run(taken)
            finally:
                with self._cond:
                    self._running -= 1
                    # Calls left undone (Ctrl-C reached this thread: the interrupt is its own, not the other
                    # streams') go back to wait, each for its own thread to run it.
                    for other in taken:
                        if other is not call and not other.done:
                            other.taken = False
                            self._waiting.append(other)
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
            outs = out if isinstance(out, tuple) else (out,)
            for call, *parts in zip(members, *(t.split(sizes) for t in outs)):
                call.result = tuple(parts) if isinstance(out, tuple) else parts[0]
        except Exception as exc:  # every call of this batch gets the error, in its own thread
            for call in members:
                call.error = exc
        for call in members:
            call.done = True

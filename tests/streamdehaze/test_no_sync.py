"""The engine's per-batch device work never copies from the host nor waits for the device.

On CUDA either one stalls the compute stream and the host (batches in flight stop overlapping, CUDA graph capture
fails). The test needs no GPU: it runs the per-batch path (colour conversion, the model, the temporal smoother,
the transform's per-plane coefficients and their application) with every tensor on the ``meta`` device, where a
tensor has a shape but no data, and records each operation that takes a host tensor, makes one from Python data,
or reads a value back (``item()``, ``bool()``, ``.cpu()``: these also fail on meta tensors).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import kanet
from streamdehaze.colour import YUVFormat
from streamdehaze.engine import Engine, Request, _Group
from streamdehaze.models import create_model
from streamdehaze.models.dcp import DarkChannelPrior
from streamdehaze.models.kanet_model import CoefficientKANet, KANetModel
from streamdehaze.temporal import TemporalSmoother

# Functions that make a tensor from host data, and reads of a tensor's value on the host (a sync on CUDA).
FROM_HOST = {torch.tensor, torch.as_tensor, torch.asarray, torch.from_numpy}
READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.__bool__,
         torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__}
HOST_OPS = {torch.ops.aten.lift_fresh.default, torch.ops.aten._local_scalar_dense.default}


class HostTraffic(contextlib.ExitStack):
    """Records host-to-device traffic and syncs while active: ``found`` lists them."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        found = self.found

        class Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if func in FROM_HOST or func in READS:
                    found.append(getattr(func, "__qualname__", str(func)))
                return func(*args, **(kwargs or {}))

        class Operations(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                host = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.device.type == "cpu"]
                if host or func in HOST_OPS:
                    found.append(f"{func} with host tensors {[tuple(t.shape) for t in host]}")
                return func(*args, **(kwargs or {}))

        self._modes = Functions(), Operations()

    def __enter__(self) -> "HostTraffic":
        super().__enter__()
        for mode in self._modes:
            self.enter_context(mode)
        return self


def _on_meta(model: torch.nn.Module, infer_size: int | None) -> Engine:
    engine = Engine(model, "cpu", infer_size)
    engine.device, engine.model = torch.device("meta"), model.to("meta")
    return engine


def _groups(temporal: TemporalSmoother | None) -> list[_Group]:
    """Two streams of one frame size (sharing model calls) and a third of another layout and matrix."""
    hd, sd = YUVFormat("bt709"), YUVFormat("bt601", subsampling=(1, 1))
    return [_Group(0, [], hd, Request([], hd, "yuv420p", temporal)), _Group(1, [], hd, Request([], hd, "yuv420p", temporal)),
            _Group(2, [], sd, Request([], sd, "yuv444p", TemporalSmoother()))]


def _planes() -> list[torch.Tensor]:
    meta = dict(dtype=torch.uint8, device="meta")
    hd = [torch.empty(2, 360, 640, **meta), torch.empty(2, 180, 320, **meta), torch.empty(2, 180, 320, **meta)]
    sd = [torch.empty(1, 240, 320, **meta)] * 3
    return hd + hd + sd


@contextlib.contextmanager
def _no_autocast_on_meta():
    """KA_Net runs under autocast, which has no meta backend; autocast itself moves nothing between devices."""
    original = KANetModel._autocast
    KANetModel._autocast = lambda self, rgb: contextlib.nullcontext() if rgb.device.type == "meta" else original(self, rgb)
    try:
        yield
    finally:
        KANetModel._autocast = original


def _models():
    yield "dcp", DarkChannelPrior()
    yield "kanet-t shipped", create_model("kanet-t")
    coefficient = CoefficientKANet(kanet.create_model("kanet-t").eval(), "kanet-t")  # the coefficient head
    yield "kanet-t coefficients", coefficient


@pytest.mark.parametrize("temporal", [True, False])
@pytest.mark.parametrize("infer_size", [192, None])
def test_per_batch_path_neither_copies_from_the_host_nor_syncs(infer_size, temporal):
    with _no_autocast_on_meta(), torch.inference_mode():
        for name, model in _models():
            engine = _on_meta(model, infer_size)
            smoother = TemporalSmoother() if temporal else None
            engine._dehaze_groups(_groups(smoother), _planes())  # first batch: constants made on the device
            with HostTraffic() as traffic:
                outputs = engine._dehaze_groups(_groups(smoother), _planes())
            assert traffic.found == [], (name, traffic.found)
            assert [tuple(t.shape) for t in outputs[:3]] == [(2, 360, 640), (2, 180, 320), (2, 180, 320)]
            assert all(t.device.type == "meta" for t in outputs)


def _bad_constant(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1).to(x)  # a host constant moved per call


def _bad_scalar(x: torch.Tensor) -> torch.Tensor:
    return x / torch.tensor(2.0, device=x.device)  # made from Python data per call


def _bad_read(x: torch.Tensor) -> torch.Tensor:
    return x * 2 if bool(x.mean() > 0.5) else x  # a value read back: a sync


@pytest.mark.parametrize("bad", [_bad_constant, _bad_scalar, _bad_read])
def test_the_recorder_sees_what_it_is_for(bad):
    """Each kind of traffic the code review found, planted in a model, is recorded."""
    class Model(torch.nn.Module):
        def forward(self, x):
            return bad(x)

    with _no_autocast_on_meta(), torch.inference_mode():
        engine = _on_meta(Model(), 192)
        with HostTraffic() as traffic:
            with contextlib.suppress(RuntimeError, NotImplementedError):  # a read of a meta tensor raises
                engine._dehaze_groups(_groups(None), _planes())
    assert traffic.found

"""KA_Net (Feng et al., TPAMI 2024): one parametrised model class and the named configurations.

Named configurations (``create_model(name)``):

* ``kanet``       the paper's network (stage-3 width 320), 55,657,426 parameters;
* ``kanet-w256``  the older official release (stage-3 width 256), 52,758,290 parameters;
* ``kanet-s``     real-time: the paper's network at half width (GPU, or CPU at low resolution);
* ``kanet-t``     real-time CPU default: quarter width, one block per stage, light decoder (the video engine runs
  it at a short side of about 256).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .bottleneck import Bottleneck
from .decoder import Decoder
from .encoder import Encoder
from .head import Head


@dataclass(frozen=True)
class KANetConfig:
    """Architecture hyper-parameters. Defaults are the paper's network."""

    dims: tuple[int, int, int, int] = (64, 128, 320, 512)
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    heads: tuple[int, int, int, int] = (1, 2, 4, 4)
    sr_ratios: tuple[int, int, int, int] = (4, 2, 2, 1)
    mlp_ratio: float = 2.0
    intra_heads: tuple[int, int, int] = (1, 2, 2)
    intra_sr_ratios: tuple[int, int, int] = (4, 2, 2)
    dilations: tuple[int, ...] = (1, 3, 5)
    attn_reduction: int = 16
    rff_proj_dim: int | None = None  # None: dims[3] // 8
    decoder_depth: int = 3
    decoder_heads: int = 8
    decoder_mlp_ratio: float = 4.0
    decoder_queries: int = 48
    head_tail: tuple[int, int] = (16, 8)
    in_chans: int = 3
    drop_path_rate: float = 0.1
    decoder_drop_path_span: int = 16
    keep_unused: bool = False  # build the two modules the official forward ignores (checkpoint compatibility)
    output: str = "image"  # "image": the paper's tanh RGB; "coefficients": ours, a colour transform (transform.py)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> KANetConfig:
        raw = json.loads(text)
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(raw) - set(known)
        if unknown:
            raise ValueError(f"unknown KA_Net config fields: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


class KANet(nn.Module):
    """KA_Net: transformer encoder, RFF multi-receptive-field bottleneck, task-query decoder, upsampling head.

    ``forward(x)`` takes ``x`` ``[B, 3, H, W]`` in [-1, 1] with H and W multiples of ``size_multiple`` and returns
    ``(y, z)``: ``y`` ``[B, 3, H, W]`` the tanh output (read as a [0, 1] image), or with ``config.output ==
    "coefficients"`` ``[B, 5, H, W]`` raw transform coefficients (:mod:`kanet.transform`); ``z`` ``[B, dims[3]]``
    the pooled deepest encoder feature (used by training-time sample reweighting).
    """

    size_multiple = 16

    def __init__(self, config: KANetConfig | None = None, *, rff: str = "fixed", seed: int = 0,
                 name: str | None = None):
        super().__init__()
        cfg = config or KANetConfig()
        if cfg.output not in ("image", "coefficients"):
            raise ValueError(f"KANetConfig.output must be 'image' or 'coefficients', got {cfg.output!r}")
        self.config = cfg
        self.config_name = name
        self.rff_mode = rff
        self.rff_seed = seed
        d = cfg.dims[3]
        self.encoder = Encoder(cfg)
        self.bottleneck = Bottleneck(d, cfg.dilations, cfg.attn_reduction, cfg.rff_proj_dim, rff, seed)
        self.decoder = Decoder(d, cfg.decoder_depth, cfg.decoder_heads, cfg.decoder_mlp_ratio, cfg.decoder_queries,
                               cfg.drop_path_rate, cfg.decoder_drop_path_span)
        self.head = Head(cfg.dims, cfg.head_tail, cfg.in_chans, cfg.keep_unused,
                         coefficients=cfg.output == "coefficients")

    @property
    def predicts_coefficients(self) -> bool:
        return self.config.output == "coefficients"

    @property
    def min_size(self) -> int:
        """Smallest input side: every key/value reduction (kernel = stride = r) needs a grid of at least r."""
        cfg = self.config
        need = [4 * 2**s * (r - 1) + 1 for s, r in enumerate(cfg.sr_ratios)]
        need += [8 * 2**s * (r - 1) + 1 for s, r in enumerate(cfg.intra_sr_ratios)]
        m = self.size_multiple
        return max(m, -(-max(need) // m) * m)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.encoder(x)
        z = feats[3].mean((2, 3))
        y = self.head(feats, self.decoder(self.bottleneck(feats[3])), x)
        return y, z


# --- named configurations -------------------------------------------------------------------------------------

CONFIGS: dict[str, KANetConfig] = {
    # The paper's network: stage-3 width 320 (55,657,426 parameters).
    "kanet": KANetConfig(keep_unused=True),
    # The older official release: stage-3 width 256 (52,758,290 parameters).
    "kanet-w256": KANetConfig(dims=(64, 128, 256, 512), keep_unused=True),
    # Real-time 'small': the paper's network at half width (same depths, heads, ratios, decoder and head tail);
    # about 3x kanet-t's CPU time at 256x448. The real-time configurations predict transform coefficients
    # (transform.py) that the engine applies at full resolution.
    "kanet-s": KANetConfig(dims=(32, 64, 160, 256), output="coefficients"),
    # Real-time 'tiny', the CPU default. Stage-1 keys reduced 8x (not 4x): at 256x448 that attention was the
    # largest single cost.
    "kanet-t": KANetConfig(dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), heads=(1, 1, 1, 2), sr_ratios=(8, 4, 2, 1),
                           intra_heads=(1, 1, 1), decoder_depth=1, decoder_heads=2, decoder_mlp_ratio=2.0,
                           head_tail=(8, 8), output="coefficients"),
}


def kanet(**kwargs) -> KANet:
    """The paper's KA_Net (stage-3 width 320)."""
    return KANet(CONFIGS["kanet"], name="kanet", **kwargs)


def kanet_w256(**kwargs) -> KANet:
    """The older official KA_Net release (stage-3 width 256)."""
    return KANet(CONFIGS["kanet-w256"], name="kanet-w256", **kwargs)


def kanet_s(**kwargs) -> KANet:
    """Real-time small KA_Net."""
    return KANet(CONFIGS["kanet-s"], name="kanet-s", **kwargs)


def kanet_t(**kwargs) -> KANet:
    """Real-time tiny KA_Net (CPU default)."""
    return KANet(CONFIGS["kanet-t"], name="kanet-t", **kwargs)


_FACTORIES: dict[str, Callable[..., KANet]] = {
    "kanet": kanet,
    "kanet-w256": kanet_w256,
    "kanet-s": kanet_s,
    "kanet-t": kanet_t,
}
MODEL_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def create_model(name: str = "kanet", rff: str = "fixed", seed: int = 0) -> KANet:
    """Build a named configuration with freshly initialised weights (train mode, like any new nn.Module)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown KA_Net model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return _FACTORIES[name](rff=rff, seed=seed)

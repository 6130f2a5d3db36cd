"""KA_Net for image and video dehazing: model definitions, official-checkpoint conversion, inference helpers.

``kanet`` knows nothing of video or training; ``streamdehaze`` and ``training`` build on it.
"""

from .official import CheckpointError, load_official
from . import transform
from .inference import coefficients, dehaze
from .model import CONFIGS, MODEL_NAMES, KANet, KANetConfig, create_model
from .weights import WeightsError, load_weights, save_weights

__all__ = [
    "CONFIGS", "MODEL_NAMES", "CheckpointError", "KANet", "KANetConfig", "WeightsError", "coefficients",
    "create_model", "dehaze", "load_official", "load_weights", "save_weights", "transform",
]

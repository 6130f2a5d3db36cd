"""KA_Net for image and video dehazing: model definitions, official-checkpoint conversion, inference helpers."""

from .model import MODEL_NAMES, KANet, KANetConfig, create_model

__all__ = ["MODEL_NAMES", "KANet", "KANetConfig", "create_model"]

"""Build the network a :class:`ModelConfig` describes. The one place that
knows every backbone, so that the backbones need not know each other."""

from __future__ import annotations

from .base import FusionNet
from .config import ModelConfig
from .medfusion import MedFusionNet
from .networks import BrainAgeFusion, PreActResNetFusion

__all__ = ["build_model"]


def build_model(config: ModelConfig) -> FusionNet:
    """The network a config describes, freshly initialised."""
    config.validate()
    if config.backbone == "preact_resnet":
        return PreActResNetFusion(config)
    if config.backbone == "medfusion":
        return MedFusionNet(config)
    return BrainAgeFusion(config)

"""Base models and the adapter protocol the engine sees them through."""

from adjust.models.adapter import BaseModelInfo, DiffusionLMAdapter, MDLMAdapter, as_adapter
from adjust.models.layers import DecoderLayer, LayerConfig, RMSNorm
from adjust.models.mdlm import MaskedDiffusionLM, MDLMConfig

__all__ = [
    "BaseModelInfo",
    "DecoderLayer",
    "DiffusionLMAdapter",
    "LayerConfig",
    "MDLMAdapter",
    "MDLMConfig",
    "MaskedDiffusionLM",
    "RMSNorm",
    "as_adapter",
]

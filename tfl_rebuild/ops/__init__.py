"""Op converters. Each family module registers itself on import (explicit list, no scanning)."""

from . import activation, array, conv, elementwise, matmul, mediapipe, pooling, resize, shape  # noqa: F401
from .registry import REGISTRY, ConversionError, ConvertContext, LayerSpec, lookup, supported_ops

__all__ = ["REGISTRY", "ConvertContext", "ConversionError", "LayerSpec", "lookup", "supported_ops"]

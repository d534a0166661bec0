"""Op converters. Each family module registers itself on import (explicit list, no scanning)."""

from . import (  # noqa: F401
    activation,
    array,
    conv,
    conv3d,
    detection,
    elementwise,
    matmul,
    mediapipe,
    nms,
    normalization,
    pooling,
    resize,
    scatter,
    segment,
    sequence,
    shape,
    spectral,
)
from .registry import REGISTRY, ConversionError, ConvertContext, LayerSpec, lookup, supported_ops

__all__ = ["REGISTRY", "ConvertContext", "ConversionError", "LayerSpec", "lookup", "supported_ops"]

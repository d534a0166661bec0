"""Op converters. Each family module registers itself on import (explicit list, no scanning)."""

from tfl_rebuild.rebuild.ops import (  # noqa: F401
    activation,
    array,
    conv,
    conv3d,
    detection,
    elementwise,
    folding,
    graph,
    lifted,
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
from tfl_rebuild.rebuild.ops.registry import (
    REGISTRY,
    ConversionError,
    ConvertContext,
    LayerSpec,
    Trait,
    has_trait,
    lookup,
    refused_ops,
    supported_ops,
    traits,
)

__all__ = [
    "REGISTRY",
    "ConvertContext",
    "ConversionError",
    "LayerSpec",
    "Trait",
    "has_trait",
    "lookup",
    "refused_ops",
    "supported_ops",
    "traits",
]

"""Normalization ops: L2_NORMALIZATION, LOCAL_RESPONSE_NORMALIZATION."""

from __future__ import annotations

from tfl_rebuild.rebuild.ops.activation import with_activation
from tfl_rebuild.rebuild.ops.registry import ConvertContext, LayerSpec, Trait, converter
from tfl_rebuild.tflite.ir import Operator


@converter(
    "L2_NORMALIZATION",
    range(1, 3),
    traits=[Trait.BATCH_PRESERVING],
    note="over the last axis, as keras.layers.UnitNormalization",
)
def l2_normalization(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    # x / max(||x||, 1e-6) in TFLite; UnitNormalization's x * rsqrt(max(sum x^2, 1e-12)) is the same.
    spec = LayerSpec("UnitNormalization", {"axis": -1}, (op.inputs[0],), op.outputs)
    return with_activation(op, spec)


@converter("LOCAL_RESPONSE_NORMALIZATION", range(1, 2), traits=[Trait.BATCH_PRESERVING])
def local_response_normalization(op: Operator, ctx: ConvertContext) -> LayerSpec:
    o = op.options
    kwargs = {
        "radius": int(o.get("radius", 5)),
        "bias": float(o.get("bias", 1.0)),
        "alpha": float(o.get("alpha", 1.0)),
        "beta": float(o.get("beta", 0.5)),
    }
    return LayerSpec("LocalResponseNorm", kwargs, (op.inputs[0],), op.outputs, custom=True)

"""Pooling and reductions: AVERAGE_POOL_2D, MAX_POOL_2D, L2_POOL_2D, MEAN, SUM, REDUCE_*."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.activation import with_activation
from tfl_rebuild.rebuild.ops.registry import ConvertContext, LayerSpec, Trait, converter
from tfl_rebuild.tflite.ir import Operator


def _pool_kwargs(op: Operator) -> dict:
    o = op.options
    return {
        "pool_size": (o.get("filter_height", 1), o.get("filter_width", 1)),
        "strides": (o.get("stride_h", 1), o.get("stride_w", 1)),
        "padding": "same" if o.get("padding", "VALID") == "SAME" else "valid",
    }


def _pool(layer: str):
    def convert(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
        return with_activation(op, LayerSpec(layer, _pool_kwargs(op), (op.inputs[0],), op.outputs))

    return convert


converter("AVERAGE_POOL_2D", range(1, 5), traits=[Trait.BATCH_PRESERVING])(_pool("AveragePooling2D"))
converter("MAX_POOL_2D", range(1, 5), traits=[Trait.BATCH_PRESERVING])(_pool("MaxPooling2D"))


@converter(
    "L2_POOL_2D", range(1, 2), traits=[Trait.BATCH_PRESERVING], note="sqrt of AveragePooling2D of the squares"
)
def l2_pool_2d(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    # sqrt(sum(x^2) / n), n the window's elements inside the input: what a SAME average pool counts.
    square = LayerSpec("UnaryOp", {"op": "square"}, (op.inputs[0],), custom=True)
    pool = LayerSpec("AveragePooling2D", _pool_kwargs(op), (square,))
    root = LayerSpec("UnaryOp", {"op": "sqrt"}, (pool,), op.outputs, custom=True)
    return [square, pool, *with_activation(op, root)]


REDUCE = {
    "MEAN": "mean",
    "SUM": "sum",
    "REDUCE_MAX": "max",
    "REDUCE_MIN": "min",
    "REDUCE_PROD": "prod",
    "REDUCE_ANY": "any",
    "REDUCE_ALL": "all",
}


GLOBAL_POOLING = {"MEAN": "GlobalAveragePooling", "REDUCE_MAX": "GlobalMaxPooling"}


def reduce(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x = op.inputs[0]
    rank = ctx.rank(x)
    axes = sorted({int(a) % rank for a in np.asarray(ctx.const(op.inputs[1])).reshape(-1)})
    keep = bool(op.options.get("keep_dims", False))
    # keras.layers.Global{Average,Max}Pooling{1,2}D: over every axis but the batch and the channels.
    if op.opcode in GLOBAL_POOLING and rank in (3, 4) and axes == list(range(1, rank - 1)):
        return LayerSpec(f"{GLOBAL_POOLING[op.opcode]}{rank - 2}D", {"keepdims": keep}, (x,), op.outputs)
    return LayerSpec(
        "Reduce", {"op": REDUCE[op.opcode], "axis": axes, "keepdims": keep}, (x,), op.outputs, custom=True
    )


for _name in REDUCE:
    converter(_name, range(1, 5))(reduce)

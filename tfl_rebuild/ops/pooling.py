"""Pooling and reductions: AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, SUM, REDUCE_*."""

from __future__ import annotations

import numpy as np

from ..ir import Operator
from .activation import with_activation
from .registry import ConvertContext, LayerSpec, converter


def _pool(layer: str):
    def convert(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
        o = op.options
        spec = LayerSpec(layer, {
            "pool_size": (o.get("filter_height", 1), o.get("filter_width", 1)),
            "strides": (o.get("stride_h", 1), o.get("stride_w", 1)),
            "padding": "same" if o.get("padding", "VALID") == "SAME" else "valid",
        }, (op.inputs[0],), op.outputs)
        return with_activation(op, spec)

    return convert


converter("AVERAGE_POOL_2D", range(1, 5))(_pool("AveragePooling2D"))
converter("MAX_POOL_2D", range(1, 5))(_pool("MaxPooling2D"))

REDUCE = {"MEAN": "mean", "SUM": "sum", "REDUCE_MAX": "max", "REDUCE_MIN": "min", "REDUCE_PROD": "prod",
          "REDUCE_ANY": "any", "REDUCE_ALL": "all"}


def reduce(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x = op.inputs[0]
    rank = ctx.rank(x)
    axes = sorted({int(a) % rank for a in np.asarray(ctx.const(op.inputs[1])).reshape(-1)})
    keep = bool(op.options.get("keep_dims", False))
    if op.opcode == "MEAN" and rank == 4 and axes == [1, 2]:
        return LayerSpec("GlobalAveragePooling2D", {"keepdims": keep}, (x,), op.outputs)
    if op.opcode == "REDUCE_MAX" and rank == 4 and axes == [1, 2]:
        return LayerSpec("GlobalMaxPooling2D", {"keepdims": keep}, (x,), op.outputs)
    return LayerSpec("Reduce", {"op": REDUCE[op.opcode], "axis": axes, "keepdims": keep}, (x,), op.outputs,
                     custom=True)


for _name in REDUCE:
    converter(_name, range(1, 5))(reduce)

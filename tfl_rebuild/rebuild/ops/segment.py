"""Segment reductions: SEGMENT_SUM, UNSORTED_SEGMENT_SUM / MAX / MIN / PROD.

Rebuilt for constant segment ids (and a constant number of segments), so the output shape is
static and each segment's members are known: one gather of every segment's rows, padded with the
reduction's identity, then a reduction. Ids computed at run time are refused.
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext, LayerSpec, converter
from tfl_rebuild.tflite.ir import Operator

KIND = {
    "SEGMENT_SUM": "sum",
    "UNSORTED_SEGMENT_SUM": "sum",
    "UNSORTED_SEGMENT_MAX": "max",
    "UNSORTED_SEGMENT_MIN": "min",
    "UNSORTED_SEGMENT_PROD": "prod",
}


def segment_reduce(op: Operator, ctx: ConvertContext) -> LayerSpec:
    data, ids = op.inputs[:2]
    if not ctx.is_const(ids) or ctx.is_const(data):
        raise ConversionError(
            f"{op.opcode} op {op.index}: segment ids {ctx.tensor(ids).name!r} are computed at run "
            "time, so the output shape is not static; only constant segment ids are rebuilt"
        )
    values = np.asarray(ctx.const(ids)).astype(np.int64)
    shape = list(ctx.shape(data))
    if list(values.shape) != shape[: values.ndim] or values.ndim == 0:
        raise ConversionError(
            f"{op.opcode} op {op.index}: segment ids of shape {list(values.shape)} do not match data {shape}"
        )
    if op.opcode == "SEGMENT_SUM":
        if values.ndim != 1 or np.any(np.diff(values) < 0) or values.size and values[0] < 0:
            raise ConversionError(
                f"SEGMENT_SUM op {op.index}: segment ids must be sorted, non-negative and 1-D"
            )
        count = int(values.max()) + 1 if values.size else 0
    else:
        if len(op.inputs) < 3 or not ctx.is_const(op.inputs[2]):
            raise ConversionError(
                f"{op.opcode} op {op.index}: num_segments is computed at run time, so the output "
                "shape is not static"
            )
        count = int(np.asarray(ctx.const(op.inputs[2])).reshape(-1)[0])
    if count <= 0:
        raise ConversionError(f"{op.opcode} op {op.index}: {count} segments")
    # Ids past the segments (or negative: unsorted ops drop them) belong to no output row.
    return LayerSpec(
        "SegmentReduce",
        {
            "kind": KIND[op.opcode],
            "segment_ids": values.reshape(-1).tolist(),
            "num_segments": count,
            "id_rank": values.ndim,
        },
        (data,),
        op.outputs,
        custom=True,
    )


for _name in KIND:
    converter(_name, range(1, 2))(segment_reduce)

"""NON_MAX_SUPPRESSION_V4 / V5: greedy (and, for V5, soft) non-max suppression with a constant
max_output_size, whose outputs TFLite pads to that size (selected indices, and V5's scores, zero
past valid_outputs), so the rebuild has static shapes. A computed max_output_size or threshold is
refused, naming the inputs to cut the model at."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext, LayerSpec, converter
from tfl_rebuild.tflite.ir import Operator


def _refusal(op: Operator, ctx: ConvertContext, why: str) -> ConversionError:
    boxes, scores = (ctx.tensor(i) for i in op.inputs[:2])
    return ConversionError(
        f"{op.opcode} op {op.index}: {why}; rebuild the model up to its boxes {boxes.name!r} "
        f"{list(boxes.shape)} and scores {scores.name!r} {list(scores.shape)} and run the "
        "non-max suppression outside"
    )


def _scalar(op: Operator, ctx: ConvertContext, slot: int, name: str) -> float:
    t = op.inputs[slot]
    if not ctx.is_const(t):
        raise _refusal(op, ctx, f"its {name} {ctx.tensor(t).name!r} is computed at run time")
    return float(np.asarray(ctx.const(t)).reshape(-1)[0])


def non_max_suppression(op: Operator, ctx: ConvertContext) -> LayerSpec:
    v5 = op.opcode == "NON_MAX_SUPPRESSION_V5"
    boxes, scores = op.inputs[:2]
    if len(op.inputs) < (6 if v5 else 5) or len(op.outputs) != (3 if v5 else 2):
        raise ConversionError(
            f"{op.opcode} op {op.index}: {len(op.inputs)} inputs, {len(op.outputs)} outputs"
        )
    if ctx.is_const(boxes) or ctx.is_const(scores):
        raise _refusal(op, ctx, "constant boxes or scores are not supported")
    n = ctx.shape(boxes)[0] if ctx.rank(boxes) == 2 else -1
    if ctx.rank(boxes) != 2 or ctx.shape(boxes)[1] != 4 or list(ctx.shape(scores)) != [n] or n < 1:
        raise _refusal(op, ctx, "boxes must be [N, 4] and scores [N] with N static")
    if not ctx.is_const(op.inputs[2]):
        raise _refusal(
            op,
            ctx,
            f"its max_output_size {ctx.tensor(op.inputs[2]).name!r} is computed at run time, "
            "so the number of selected boxes is not static",
        )
    kwargs = {
        "max_output_size": int(np.asarray(ctx.const(op.inputs[2])).reshape(-1)[0]),
        "iou_threshold": _scalar(op, ctx, 3, "iou_threshold"),
        "score_threshold": _scalar(op, ctx, 4, "score_threshold"),
    }
    if kwargs["max_output_size"] < 0:
        raise ConversionError(f"{op.opcode} op {op.index}: max_output_size {kwargs['max_output_size']}")
    if v5:
        kwargs["soft_nms_sigma"] = _scalar(op, ctx, 5, "soft_nms_sigma")
        kwargs["with_scores"] = True
    return LayerSpec("NonMaxSuppression", kwargs, (boxes, scores), op.outputs, custom=True)


converter("NON_MAX_SUPPRESSION_V4", range(1, 2), note="padded outputs, constant max_output_size")(
    non_max_suppression
)
converter(
    "NON_MAX_SUPPRESSION_V5", range(1, 2), note="padded outputs, constant max_output_size; soft NMS too"
)(non_max_suppression)

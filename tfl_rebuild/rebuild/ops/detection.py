"""TFLite_Detection_PostProcess (SSD models): box decoding against anchors + non-max suppression.

The default "fast" path (one class per detection): every anchor keeps its best class, then one
greedy NMS over all anchors, as detection_postprocess.cc does. use_regular_nms: greedy NMS per
class (detections_per_class picks each), then the best max_detections picks by score. Several
classes per detection on the fast path are refused with what the op outputs and where to cut the
model instead (registry.detection_postprocess_error).
"""

from __future__ import annotations

from tfl_rebuild.rebuild.ops.registry import (
    DETECTION_POSTPROCESS,
    ConversionError,
    ConvertContext,
    LayerSpec,
    custom_converter,
)
from tfl_rebuild.rebuild.ops.registry import detection_postprocess_error as refusal
from tfl_rebuild.tflite.ir import Operator


def _options(op: Operator) -> dict:
    from flatbuffers import flexbuffers

    try:
        options = flexbuffers.Loads(bytes(op.custom_options)) if op.custom_options else {}
    except Exception:  # noqa: BLE001 - any decoding failure of the model's bytes is the model's fault
        options = None
    if not isinstance(options, dict):
        raise ConversionError(
            f"{DETECTION_POSTPROCESS} op {op.index}: custom options are not a flexbuffer map"
        )
    return options


@custom_converter(DETECTION_POSTPROCESS, note="fast and regular (per-class) NMS; one class per detection")
def detection_postprocess(op: Operator, ctx: ConvertContext) -> LayerSpec:
    o = _options(op)
    boxes, scores, anchors = (list(op.inputs) + [-1] * 3)[:3]
    if not o.get("use_regular_nms", False) and int(o.get("max_classes_per_detection", 1)) != 1:
        raise ConversionError(str(refusal(op, ctx.subgraph, "several classes per detection")))
    if not ctx.is_const(anchors) or ctx.is_const(boxes) or ctx.is_const(scores) or len(op.outputs) != 4:
        raise ConversionError(str(refusal(op, ctx.subgraph, "with computed anchors")))
    try:
        num_classes = int(o["num_classes"])
        kwargs = {
            "max_detections": int(o["max_detections"]),
            "num_classes": num_classes,
            "label_offset": ctx.shape(scores)[-1] - num_classes,
            "score_threshold": float(o.get("nms_score_threshold", 0.0)),
            "iou_threshold": float(o.get("nms_iou_threshold", 0.5)),
            "scales": [float(o.get(k, 1.0)) for k in ("y_scale", "x_scale", "h_scale", "w_scale")],
        }
        if o.get("use_regular_nms", False):
            kwargs["detections_per_class"] = int(o.get("detections_per_class", 100))
    except (KeyError, TypeError, ValueError):
        raise ConversionError(
            f"{DETECTION_POSTPROCESS} op {op.index}: num_classes / max_detections missing from its options"
        ) from None
    if kwargs["label_offset"] < 0 or kwargs["max_detections"] < 1 or ctx.shape(anchors)[-1] != 4:
        raise ConversionError(
            f"{DETECTION_POSTPROCESS} op {op.index}: {num_classes} classes do not fit "
            f"class predictions {list(ctx.shape(scores))}"
        )
    table = ctx.const(anchors).astype("float32")
    kwargs["constant_shape"] = list(table.shape)
    return LayerSpec(
        "DetectionPostProcess",
        kwargs,
        (boxes, scores),
        op.outputs,
        weights=(("constant", table),),
        custom=True,
    )

"""NON_MAX_SUPPRESSION_V4 / V5 with padded outputs, as TF 2.21 converts
tf.image.non_max_suppression_padded and NonMaxSuppressionV5 (pad_to_max_output_size): hard and
soft NMS, thresholds that keep some boxes and drop others; a computed max_output_size is refused."""

from __future__ import annotations

import pytest
import tensorflow as tf

N = 12  # boxes; inputs are uniform in [-1, 1), so corners come in any order and scores cross 0


def _v4(max_out, iou, score):
    def fn(boxes, scores):
        idx, valid = tf.image.non_max_suppression_padded(
            boxes, scores, max_out, iou, score, pad_to_max_output_size=True
        )
        return idx, valid

    return fn


def _v5(max_out, iou, score, sigma):
    def fn(boxes, scores):
        out = tf.raw_ops.NonMaxSuppressionV5(
            boxes=boxes,
            scores=scores,
            max_output_size=max_out,
            iou_threshold=iou,
            score_threshold=score,
            soft_nms_sigma=sigma,
            pad_to_max_output_size=True,
        )
        return out.selected_indices, out.selected_scores, out.valid_outputs

    return fn


V4 = {"iou-0.3-score-0": (8, 0.3, 0.0), "iou-0.6-score-0.4": (10, 0.6, 0.4), "fewer-slots": (3, 0.5, 0.6)}


@pytest.mark.parametrize("case", V4)
def test_non_max_suppression_v4(tfl, case):
    tfl.check(tfl.function(_v4(*V4[case]), [N, 4], [N]), "NON_MAX_SUPPRESSION_V4")


V5 = {"hard": (8, 0.4, 0.0, 0.0), "soft": (8, 1.0, 0.1, 0.5), "soft-and-hard": (10, 0.7, 0.2, 0.3)}


@pytest.mark.parametrize("case", V5)
def test_non_max_suppression_v5(tfl, case):
    tfl.check(tfl.function(_v5(*V5[case]), [N, 4], [N]), "NON_MAX_SUPPRESSION_V5")


def test_computed_max_output_size_refused(tfl):
    from tfl_rebuild.rebuild.ops import ConversionError, lookup
    from tfl_rebuild.rebuild.passes.pipeline import prepare
    from tfl_rebuild.tflite.reader import read_model

    def fn(boxes, scores, k):
        return tf.raw_ops.NonMaxSuppressionV4(
            boxes=boxes,
            scores=scores,
            max_output_size=k[0],
            iou_threshold=0.5,
            score_threshold=0.0,
            pad_to_max_output_size=True,
        )[0]

    model = read_model(str(tfl.function(fn, [N, 4], [N], ([1], tf.int32))))
    ctx, ops = prepare(model)
    op = next(o for o in ops if o.opcode == "NON_MAX_SUPPRESSION_V4")
    with pytest.raises(
        ConversionError,
        match=r"max_output_size .* is computed at run time, so the number of "
        r"selected boxes is not static; rebuild the model up to its boxes "
        r"'serving_default_boxes:0' \[12, 4\] and scores",
    ):
        lookup(op, model.main)(op, ctx)


@pytest.mark.parametrize("case", ["v4", "v5-soft"])
def test_core_ml(tfl, case):
    fn, op = (
        (_v4(*V4["iou-0.3-score-0"]), "NON_MAX_SUPPRESSION_V4")
        if case == "v4"
        else (_v5(*V5["soft-and-hard"]), "NON_MAX_SUPPRESSION_V5")
    )
    tfl.core_ml(tfl.function(fn, [N, 4], [N]), op)

"""SEGMENT_SUM and UNSORTED_SEGMENT_SUM / MAX / MIN / PROD with constant segment ids, as TF 2.21
converts tf.math.segment_sum / unsorted_segment_*; computed ids are refused in one line."""

from __future__ import annotations

import pytest
import tensorflow as tf

UNSORTED = {
    "UNSORTED_SEGMENT_SUM": tf.math.unsorted_segment_sum,
    "UNSORTED_SEGMENT_MAX": tf.math.unsorted_segment_max,
    "UNSORTED_SEGMENT_MIN": tf.math.unsorted_segment_min,
    "UNSORTED_SEGMENT_PROD": tf.math.unsorted_segment_prod,
}

CASES = {
    "rows": ([0, 2, 1, 2, 0], 3, [5, 3]),
    "empty-segment-and-dropped-id": ([0, 3, -1, 3, 0], 5, [5, 2]),
    "ids-over-two-axes": ([[0, 1, 1], [2, 0, 1]], 3, [2, 3, 4]),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("op", UNSORTED)
def test_unsorted_segment(tfl, op, case):
    ids, n, shape = CASES[case]
    fn = UNSORTED[op]
    # An empty segment of MAX / MIN holds -+FLT_MAX, which swamps the input-driven rows in the
    # sensitivity measure (relative to the largest magnitude); the other cases cover those rows.
    fills = case == "empty-segment-and-dropped-id" and op in ("UNSORTED_SEGMENT_MAX", "UNSORTED_SEGMENT_MIN")
    tfl.check(tfl.function(lambda x: fn(x * 2.0, ids, n), shape), op, input_sensitive=not fills)


@pytest.mark.parametrize("op", ["UNSORTED_SEGMENT_SUM", "UNSORTED_SEGMENT_MAX"])
def test_unsorted_segment_int(tfl, op):
    fn = UNSORTED[op]
    tfl.check(tfl.function(lambda x: fn(x, [1, 0, 1, 1], 2), ([4, 2], tf.int32)), op)


# (the kernel takes sorted ids that step by 0 or 1 only)
@pytest.mark.parametrize("ids", [[0, 0, 1, 2, 2], [0, 1, 1, 1, 1]], ids=["three-segments", "long-segment"])
def test_segment_sum(tfl, ids):
    tfl.check(tfl.function(lambda x: tf.math.segment_sum(x, ids), [5, 3]), "SEGMENT_SUM")


def test_segment_sum_computed_ids_refused(tfl):
    from tfl_rebuild.rebuild.ops import ConversionError, lookup
    from tfl_rebuild.rebuild.passes.pipeline import prepare
    from tfl_rebuild.tflite.reader import read_model

    path = tfl.function(lambda x, i: tf.math.unsorted_segment_sum(x, i, 3), [4, 2], ([4], tf.int32))
    model = read_model(str(path))
    ctx, ops = prepare(model)
    op = next(o for o in ops if o.opcode == "UNSORTED_SEGMENT_SUM")
    with pytest.raises(ConversionError, match=r"segment ids 'serving_default_i:0' are computed at run time"):
        lookup(op, model.main)(op, ctx)


@pytest.mark.parametrize("op", ["UNSORTED_SEGMENT_SUM", "UNSORTED_SEGMENT_MAX", "UNSORTED_SEGMENT_PROD"])
def test_core_ml(tfl, op):
    fn = UNSORTED[op]
    tfl.core_ml(tfl.function(lambda x: fn(x * 2.0, [0, 2, 1, 2, 0], 3), [5, 3]), op)


def test_segment_sum_core_ml(tfl):
    tfl.core_ml(tfl.function(lambda x: tf.math.segment_sum(x, [0, 0, 1, 2, 2]), [5, 3]), "SEGMENT_SUM")

"""ATAN2, and the integer bit ops RIGHT_SHIFT, BITWISE_XOR and BITCAST, as TF 2.21 converts
tf.math.atan2, tf.bitwise.right_shift / bitwise_xor and tf.bitcast."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

RNG = np.random.default_rng(5)
X = [2, 3, 4]
I32 = (X, tf.int32)


def _cast(x, scale=100.0):
    return tf.cast(x * scale, tf.int32)


ATAN2 = {
    # all four quadrants (inputs in [-1, 1)), and both operands computed
    "two-inputs": (lambda y, x: tf.math.atan2(y, x), [X, X]),
    "constant-x": (lambda y: tf.math.atan2(y, tf.constant(RNG.uniform(-1, 1, X).astype(np.float32))), [X]),
    "constant-y": (lambda x: tf.math.atan2(tf.constant(RNG.uniform(-1, 1, X).astype(np.float32)), x), [X]),
    "zeros-in-x": (lambda y, x: tf.math.atan2(y, tf.nn.relu(x) * tf.constant([1.0, 0.0, 1.0, 0.0])), [X, X]),
}


@pytest.mark.parametrize("case", ATAN2)
def test_atan2(tfl, case):
    fn, specs = ATAN2[case]
    tfl.check(tfl.function(fn, *specs), "ATAN2")


def test_atan2_converts_to_core_ml(tfl):
    # atan of the ratio, moved into its quadrant: coremltools has no Atan2
    tfl.core_ml(tfl.function(ATAN2["zeros-in-x"][0], X, X), "ATAN2")


RIGHT_SHIFT = {
    "constant-shifts": (lambda x: tf.bitwise.right_shift(_cast(x), tf.constant([0, 1, 3, 7], tf.int32)), [X]),
    "int-input-scalar-shift": (lambda x: tf.bitwise.right_shift(x, 2), [I32]),
    "negative-values-arithmetic": (lambda x: tf.bitwise.right_shift(_cast(x, 1000.0) - 500, 4), [X]),
}


@pytest.mark.parametrize("case", RIGHT_SHIFT)
def test_right_shift(tfl, case):
    fn, specs = RIGHT_SHIFT[case]
    tfl.check(tfl.function(fn, *specs), "RIGHT_SHIFT")


BITWISE_XOR = {
    "two-inputs": (lambda a, b: tf.bitwise.bitwise_xor(a, b), [I32, I32]),
    "constant": (lambda x: tf.bitwise.bitwise_xor(_cast(x), tf.constant([5, 255, -1, 0], tf.int32)), [X]),
}


@pytest.mark.parametrize("case", BITWISE_XOR)
def test_bitwise_xor(tfl, case):
    fn, specs = BITWISE_XOR[case]
    tfl.check(tfl.function(fn, *specs), "BITWISE_XOR")


BITCAST = {
    "float32-int32": (lambda x: tf.bitcast(x * 3.0, tf.int32), [X]),
    # (x + 128) * 2^16 above the bits of 0.5: floats in [0.5, 2), never NaN
    "int32-float32": (lambda x: tf.bitcast((x + 128) * 65536 + 0x3F000000, tf.float32) * 2.0, [I32]),
    "int32-int8-adds-axis": (lambda x: tf.bitcast(_cast(x, 1e5), tf.int8), [X]),
    "int8-int32-drops-axis": (lambda x: tf.bitcast(tf.cast(x, tf.int8), tf.int32), [([2, 3, 4], tf.int32)]),
}


@pytest.mark.parametrize("case", BITCAST)
def test_bitcast(tfl, case):
    fn, specs = BITCAST[case]
    tfl.check(tfl.function(fn, *specs), "BITCAST")

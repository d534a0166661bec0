"""Normalization ops: L2_NORMALIZATION, LOCAL_RESPONSE_NORMALIZATION."""

from __future__ import annotations

import pytest
import tensorflow as tf


@pytest.mark.parametrize("shape", [[1, 8], [1, 3, 4], [2, 4, 4, 6]], ids=["2d", "3d", "4d"])
def test_l2_normalization(tfl, shape):
    tfl.check(tfl.function(lambda x: tf.math.l2_normalize(x * 3.0, axis=-1), shape), "L2_NORMALIZATION")


# (radius, bias, alpha, beta)
LRN = {
    "default": (5, 1.0, 1.0, 0.5),
    "alexnet": (2, 2.0, 1e-4, 0.75),
    "radius-1": (1, 1.0, 0.5, 0.75),
    "wide-alpha": (3, 0.5, 2.0, 1.0),
}


@pytest.mark.parametrize("case", LRN)
def test_local_response_normalization(tfl, case):
    radius, bias, alpha, beta = LRN[case]
    fn = lambda x: tf.nn.local_response_normalization(x * 2.0, radius, bias, alpha, beta)  # noqa: E731
    tfl.check(tfl.function(fn, [1, 4, 4, 8]), "LOCAL_RESPONSE_NORMALIZATION")

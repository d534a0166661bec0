"""Lifted layers through Core ML: the rebuild of each lifted pattern converts with coremltools and
matches TFLite (the MIL check), as the faithful form did."""

from __future__ import annotations

import keras
import numpy as np
import pytest

W = keras.initializers.RandomNormal(stddev=1.0, seed=1)
B = keras.initializers.RandomNormal(stddev=0.5, seed=2)


def _model(layers, shape, dtype="float32"):
    x = keras.Input(shape, batch_size=1, dtype=dtype)
    y = x
    for layer in layers:
        y = layer(y) if not isinstance(layer, keras.layers.MultiHeadAttention) else layer(y, y)
    return keras.Model(x, keras.layers.Rescaling(2.0)(y))


CASES = {
    "layer-normalization": (lambda: [keras.layers.LayerNormalization(epsilon=1e-5)], (5, 8), "MEAN"),
    "separable-conv-2d": (
        lambda: [
            keras.layers.SeparableConv2D(
                4, 3, padding="same", depthwise_initializer=W, pointwise_initializer=W
            )
        ],
        (6, 6, 3),
        "DEPTHWISE_CONV_2D",
    ),
    "conv-1d-causal-pool": (
        lambda: [
            keras.layers.Conv1D(
                4, 3, padding="causal", activation="gelu", kernel_initializer=W, bias_initializer=B
            ),
            keras.layers.MaxPooling1D(2),
        ],
        (10, 3),
        "CONV_2D",
    ),
    "attention": (lambda: [keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)], (5, 8), "BATCH_MATMUL"),
    "global-pooling-1d": (lambda: [keras.layers.GlobalAveragePooling1D()], (5, 8), "MEAN"),
    "normalization": (
        lambda: [keras.layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.04, 0.09, 0.16])],
        (6, 6, 3),
        "SUB",
    ),
    "rescaling-per-channel": (
        lambda: [keras.layers.Rescaling([0.5, 2.0, 4.0], offset=[0.1, -0.2, 0.3])],
        (6, 6, 3),
        "MUL",
    ),
    "cropping-2d": (
        lambda: [keras.layers.Dense(3, kernel_initializer=W), keras.layers.Cropping2D(((1, 0), (2, 1)))],
        (6, 6, 3),
        "STRIDED_SLICE",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_lifted_layer_converts_to_core_ml(tfl, case):
    make, shape, op = CASES[case]
    np.random.seed(0)
    tfl.core_ml(tfl.keras(_model(make(), shape)), op)

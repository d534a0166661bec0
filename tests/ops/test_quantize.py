"""QUANTIZE and DEQUANTIZE (handled in passes.py, not by converters): full-int8 models, where
activations run through fake-quant layers, and fp16 weights behind DEQUANTIZE, folded to float32."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

W = keras.initializers.RandomNormal(stddev=0.5, seed=1)


def _convnet(concat: bool = False):
    x = keras.Input((6, 6, 2), batch_size=1)
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", kernel_initializer=W)(x)
    if concat:  # a branch with its own scale: int8 CONCATENATION rescales its inputs
        y = keras.layers.Concatenate()([y, keras.layers.Conv2D(2, 1, kernel_initializer=W)(x) * 3.0])
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(3, kernel_initializer=W)(y))


def _calibration() -> list:
    rng = np.random.default_rng(11)
    return [rng.uniform(-1, 1, (1, 6, 6, 2)).astype(np.float32) for _ in range(32)]


def test_int8_float_io(tfl):
    # Float input and output around int8 ops: QUANTIZE in, DEQUANTIZE out.
    path = tfl.keras(_convnet(), int8_inputs=_calibration())
    tfl.check(path, "QUANTIZE", max_lsb=2.0)
    tfl.check(path, "DEQUANTIZE", max_lsb=2.0)


def test_int8_concatenation(tfl):
    path = tfl.keras(_convnet(concat=True), int8_inputs=_calibration())
    tfl.check(path, "CONCATENATION", max_lsb=2.0)


def test_int8_int8_io(tfl):
    # int8 input and output tensors (verify() measures them in LSB; held here to a flat 2 LSB,
    # without verify's allowance for XNNPACK-vs-reference noise).
    conv = tf.lite.TFLiteConverter.from_keras_model(_convnet())
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x] for x in _calibration())
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path = tfl.crafted(conv.convert())
    report = tfl.check(path, "CONV_2D", max_lsb=2.0)
    assert report.kind == "full-int8" and all(o.lsb is not None for o in report.outputs)


def test_fp16_weights_dequantize(tfl):
    x = keras.Input((6, 6, 2), batch_size=1)
    y = keras.layers.Dense(3, kernel_initializer=W)(keras.layers.Conv2D(4, 3, kernel_initializer=W)(x))
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, y))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    tfl.check(tfl.crafted(conv.convert()), "DEQUANTIZE")


@pytest.mark.parametrize("op", ["QUANTIZE", "DEQUANTIZE"])
def test_not_converters(op):
    """They are graph rewrites: no converter may claim them."""
    from tfl_rebuild.ops import REGISTRY

    assert not any(key[0] == op for key in REGISTRY)

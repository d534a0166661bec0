"""Volumetric ops: CONV_3D, CONV_3D_TRANSPOSE (Keras Conv3D / Conv3DTranspose as TF 2.21 converts
them), and the MaxPool3D / AvgPool3D custom ops TF writes for keras MaxPooling3D / AveragePooling3D
with allow_custom_ops.

The stock runtime has no kernel for the pooling custom ops, so those models run with the numpy
reference in their place (segmented.py); the reference itself is checked against TensorFlow's own
max_pool3d / avg_pool3d kernels here. Each rebuild also converts to Core ML and passes the MIL check.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

RNG = np.random.default_rng(3)


def _model(layer, shape=(4, 5, 6, 2)) -> keras.Model:
    inp = keras.Input(shape, batch_size=1)
    model = keras.Model(inp, layer(inp))
    for v in model.weights:  # non-zero biases, so a dropped bias shows
        v.assign(RNG.uniform(-0.5, 0.5, size=v.shape).astype(np.float32))
    return model


CONV3D = {
    "k2-valid": lambda: keras.layers.Conv3D(3, 2),
    "k3-same-stride2": lambda: keras.layers.Conv3D(4, 3, strides=2, padding="same"),
    "k-2x3x1-strides-1x2x1": lambda: keras.layers.Conv3D(3, (2, 3, 1), strides=(1, 2, 1)),
    "relu": lambda: keras.layers.Conv3D(3, 2, padding="same", activation="relu"),
    "relu6": lambda: keras.layers.Conv3D(3, 2, activation="relu6"),
}


@pytest.mark.parametrize("case", CONV3D)
def test_conv_3d(tfl, case):
    tfl.check(tfl.keras(_model(CONV3D[case]())), "CONV_3D")


def _dilated_conv3d(padding: str) -> bytes:
    # TF 2.21 writes a dilated Conv3D as SPACE_TO_BATCH_ND with 3 block dims, which it cannot convert.
    from flatbuf import Op, T, build_model

    w = RNG.normal(size=(2, 2, 3, 2, 3)).astype(np.float32)  # [D, H, W, I, O]
    b = RNG.normal(size=(3,)).astype(np.float32)
    out = [1, 3, 3, 2, 3] if padding == "VALID" else [1, 4, 5, 6, 3]
    options = {
        "padding": padding,
        "stride_d": 1,
        "stride_h": 1,
        "stride_w": 1,
        "dilation_d_factor": 1,
        "dilation_h_factor": 2,
        "dilation_w_factor": 2,
        "fused_activation_function": "NONE",
    }
    return build_model(
        [T("x", [1, 4, 5, 6, 2]), T("w", list(w.shape), data=w), T("b", [3], data=b), T("y", out)],
        [Op("CONV_3D", [0, 1, 2], [3], options=options, options_type="Conv3DOptions")],
        inputs=[0],
        outputs=[3],
    )


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_conv_3d_dilated(tfl, padding):
    tfl.check(tfl.crafted(_dilated_conv3d(padding)), "CONV_3D")


CONV3D_TRANSPOSE = {
    "k2-stride2": lambda: keras.layers.Conv3DTranspose(3, 2, strides=2),
    "k3-same-stride2": lambda: keras.layers.Conv3DTranspose(2, 3, strides=2, padding="same"),
    "k3-valid-stride1": lambda: keras.layers.Conv3DTranspose(2, 3),
    "k3-stride2-output-padding": lambda: keras.layers.Conv3DTranspose(2, 3, strides=2, output_padding=1),
    "relu": lambda: keras.layers.Conv3DTranspose(3, 2, strides=(1, 2, 2), activation="relu"),
}


@pytest.mark.parametrize("case", CONV3D_TRANSPOSE)
def test_conv_3d_transpose(tfl, case):
    tfl.check(tfl.keras(_model(CONV3D_TRANSPOSE[case]())), "CONV_3D_TRANSPOSE")


def _custom_ops_model(tfl, model):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.allow_custom_ops = True  # MaxPool3D / AvgPool3D have no builtin TFLite op
    return tfl.crafted(conv.convert())


POOL3D = {
    "max-2": (lambda: keras.layers.MaxPooling3D(2), "MaxPool3D"),
    "max-3-stride2-same": (lambda: keras.layers.MaxPooling3D(3, strides=2, padding="same"), "MaxPool3D"),
    "max-2x3x2-strides-1x2x2": (lambda: keras.layers.MaxPooling3D((2, 3, 2), strides=(1, 2, 2)), "MaxPool3D"),
    "avg-2": (lambda: keras.layers.AveragePooling3D(2), "AvgPool3D"),
    "avg-3-stride2-same": (lambda: keras.layers.AveragePooling3D(3, strides=2, padding="same"), "AvgPool3D"),
    "avg-3-stride1-same": (lambda: keras.layers.AveragePooling3D(3, strides=1, padding="same"), "AvgPool3D"),
}


@pytest.mark.parametrize("case", POOL3D)
def test_pool_3d(tfl, case):
    layer, code = POOL3D[case]
    tfl.check(_custom_ops_model(tfl, _model(layer(), (5, 6, 7, 3))), code)


@pytest.mark.parametrize("case", POOL3D)
def test_pool_3d_reference_matches_tensorflow(case):
    # The numpy reference (what the custom op is checked against) against TF's own 3-D pool kernels.
    from tfl_rebuild.runtime.reference import pool3d
    from tfl_rebuild.tflite.custom_options import Pool3DOptions

    layer = POOL3D[case][0]()
    x = RNG.normal(size=(2, 5, 6, 7, 3)).astype(np.float32)
    pool, strides = tuple(layer.pool_size), tuple(layer.strides)
    opts = Pool3DOptions(layer.padding, strides, pool)
    fn = tf.nn.max_pool3d if isinstance(layer, keras.layers.MaxPooling3D) else tf.nn.avg_pool3d
    want = fn(x, (1, *pool, 1), (1, *strides, 1), layer.padding.upper()).numpy()
    got = pool3d(x, opts, "max" if fn is tf.nn.max_pool3d else "avg")
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_pool_3d_bad_options_refused(tmp_path):
    from flatbuf import Op, T, build_model
    from flatbuffers import flexbuffers

    from tfl_rebuild.rebuild.ops import ConversionError, lookup
    from tfl_rebuild.rebuild.passes.pipeline import prepare
    from tfl_rebuild.tflite.reader import read_model

    options = flexbuffers.Dumps(
        {"ksize": [1, 2, 2, 2], "strides": [1, 2, 2, 2, 1], "padding": "VALID", "data_format": "NDHWC"}
    )
    blob = build_model(
        [T("x", [1, 4, 4, 4, 2]), T("y", [1, 2, 2, 2, 2])],
        [Op("CUSTOM", [0], [1], custom_code="MaxPool3D", custom_options=bytes(options))],
        inputs=[0],
        outputs=[1],
    )
    path = tmp_path / "bad.tflite"
    path.write_bytes(blob)
    model = read_model(str(path))
    ctx, ops = prepare(model)
    with pytest.raises(ConversionError, match=r"MaxPool3D op 0: option 'ksize' is \[1, 2, 2, 2\]"):
        lookup(ops[0], model.main)(ops[0], ctx)


CORE_ML = {
    "conv3d": (lambda: _model(keras.layers.Conv3D(3, 2, padding="same", strides=(1, 2, 1))), "CONV_3D"),
    "conv3d-transpose": (
        lambda: _model(keras.layers.Conv3DTranspose(2, 3, strides=2, padding="same")),
        "CONV_3D_TRANSPOSE",
    ),
    "max-pool3d": (lambda: _model(keras.layers.MaxPooling3D(2, padding="same"), (5, 6, 7, 3)), "MaxPool3D"),
    "avg-pool3d": (
        lambda: _model(keras.layers.AveragePooling3D(3, strides=2, padding="same"), (5, 6, 7, 3)),
        "AvgPool3D",
    ),
}


@pytest.mark.parametrize("case", CORE_ML)
def test_core_ml(tfl, case):
    build, op = CORE_ML[case]
    tfl.core_ml(_custom_ops_model(tfl, build()) if op.endswith("Pool3D") else tfl.keras(build()), op)

"""Convolutions and dense layers: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED."""

from __future__ import annotations

import keras
import numpy as np
import pytest

# Weights with unit variance: sums over a few taps reach past 6, so fused RELU6 clips.
W = keras.initializers.RandomNormal(stddev=1.0, seed=1)
B = keras.initializers.RandomNormal(stddev=0.5, seed=2)


def _model(layer, shape):
    x = keras.Input(shape, batch_size=1)
    return keras.Model(x, layer(x))


CONV = {
    "3x3-same": {"kernel_size": 3, "padding": "same"},
    "3x3-valid": {"kernel_size": 3, "padding": "valid"},
    "1x1": {"kernel_size": 1},
    "3x2-valid": {"kernel_size": (3, 2)},
    "3x3-s2-same": {"kernel_size": 3, "strides": 2, "padding": "same"},
    "3x3-s2-valid": {"kernel_size": 3, "strides": 2},
    "2x2-s2x1-same": {"kernel_size": 2, "strides": (2, 1), "padding": "same"},
    "3x3-d2-same": {"kernel_size": 3, "dilation_rate": 2, "padding": "same"},
    "3x3-d2-valid": {"kernel_size": 3, "dilation_rate": 2},
    "relu": {"kernel_size": 3, "padding": "same", "activation": "relu"},
    "relu6": {"kernel_size": 3, "padding": "same", "activation": "relu6"},
    "no-bias": {"kernel_size": 3, "use_bias": False},
    "groups-2": {"kernel_size": 3, "groups": 2, "padding": "same"},
}


@pytest.mark.parametrize("case", CONV)
def test_conv_2d(tfl, case):
    layer = keras.layers.Conv2D(4, kernel_initializer=W, bias_initializer=B, **CONV[case])
    tfl.check(tfl.keras(_model(layer, (9, 8, 4))), "CONV_2D")


@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_conv_2d_converts_to_core_ml(tfl, groups):
    """Keras runs a grouped Conv2D through a jit_compile'd tf.function on TensorFlow; coremltools
    could not convert the StatefulPartitionedCall the trace kept for it (RegNet, ResNeXt)."""
    layer = keras.layers.Conv2D(8, 3, padding="same", groups=groups, kernel_initializer=W, bias_initializer=B)
    tfl.core_ml(tfl.keras(_model(layer, (9, 8, 8))), "CONV_2D")


DEPTHWISE = {
    "3x3-same": {"kernel_size": 3, "padding": "same"},
    "3x3-valid": {"kernel_size": 3},
    "m2-same": {"kernel_size": 3, "padding": "same", "depth_multiplier": 2},
    "m2-s2-valid": {"kernel_size": 3, "strides": 2, "depth_multiplier": 2},
    "3x3-s2-same": {"kernel_size": 3, "strides": 2, "padding": "same"},
    "3x3-d2-same": {"kernel_size": 3, "dilation_rate": 2, "padding": "same"},
    "m2-d2-valid": {"kernel_size": 3, "dilation_rate": 2, "depth_multiplier": 2},
    "relu": {"kernel_size": 3, "padding": "same", "activation": "relu"},
    "relu6": {"kernel_size": 3, "padding": "same", "activation": "relu6"},
    "no-bias": {"kernel_size": 3, "use_bias": False},
}


@pytest.mark.parametrize("case", DEPTHWISE)
def test_depthwise_conv_2d(tfl, case):
    layer = keras.layers.DepthwiseConv2D(depthwise_initializer=W, bias_initializer=B, **DEPTHWISE[case])
    tfl.check(tfl.keras(_model(layer, (9, 8, 3))), "DEPTHWISE_CONV_2D")


TRANSPOSE = {
    "3x3-s1-same": {"kernel_size": 3, "padding": "same"},
    "3x3-s1-valid": {"kernel_size": 3},
    "3x3-s2-same": {"kernel_size": 3, "strides": 2, "padding": "same"},
    "3x3-s2-valid": {"kernel_size": 3, "strides": 2},
    "2x2-s2-valid": {"kernel_size": 2, "strides": 2},
    "4x4-s2-same": {"kernel_size": 4, "strides": 2, "padding": "same"},
    "3x2-s2x1-same": {"kernel_size": (3, 2), "strides": (2, 1), "padding": "same"},
    "no-bias": {"kernel_size": 3, "strides": 2, "padding": "same", "use_bias": False},
    "output-padding": {"kernel_size": 3, "strides": 2, "padding": "valid", "output_padding": 1},
    "relu": {"kernel_size": 3, "strides": 2, "padding": "same", "activation": "relu"},
}


@pytest.mark.parametrize("case", TRANSPOSE)
def test_transpose_conv(tfl, case):
    layer = keras.layers.Conv2DTranspose(3, kernel_initializer=W, bias_initializer=B, **TRANSPOSE[case])
    tfl.check(tfl.keras(_model(layer, (4, 5, 2))), "TRANSPOSE_CONV")


DENSE = {
    "2d": ((6,), {}),
    "2d-relu": ((6,), {"activation": "relu"}),
    "2d-relu6": ((6,), {"activation": "relu6"}),
    "2d-no-bias": ((6,), {"use_bias": False}),
    "3d-keep_num_dims": ((3, 6), {}),
    "4d-keep_num_dims-relu6": ((2, 3, 6), {"activation": "relu6"}),
}


@pytest.mark.parametrize("case", DENSE)
def test_fully_connected(tfl, case):
    shape, kwargs = DENSE[case]
    layer = keras.layers.Dense(5, kernel_initializer=W, bias_initializer=B, **kwargs)
    tfl.check(tfl.keras(_model(layer, shape)), "FULLY_CONNECTED")


def test_fully_connected_after_flatten(tfl):
    x = keras.Input((2, 3, 4), batch_size=1)
    y = keras.layers.Dense(5, kernel_initializer=W, bias_initializer=B)(keras.layers.Flatten()(x))
    tfl.check(tfl.keras(keras.Model(x, y)), "FULLY_CONNECTED")


@pytest.mark.parametrize(
    "in_shape, keep",
    [([1, 2, 3, 4], False), ([2, 3, 4], True)],
    ids=["4d-flattened-rows", "3d-keep_num_dims"],
)
def test_fully_connected_crafted(tfl, in_shape, keep):
    # keep_num_dims=False on a rank-4 input (TFLite folds the leading axes into rows): the
    # converter writes a RESHAPE instead, so this one is crafted.
    from flatbuf import Op, T, build_model

    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    rows = int(np.prod(in_shape[:-1]))
    out = [*in_shape[:-1], 5] if keep else [rows, 5]
    blob = build_model(
        [T("x", in_shape), T("w", [5, 4], data=w), T("b", [5], data=b), T("y", out)],
        [
            Op(
                "FULLY_CONNECTED",
                [0, 1, 2],
                [3],
                options={"fused_activation_function": "NONE", "keep_num_dims": keep},
            )
        ],
        inputs=[0],
        outputs=[3],
    )
    tfl.check(tfl.crafted(blob), "FULLY_CONNECTED")


# --- int16 activations, int8 weights (16x8) --------------------------------------------------------

INT16 = {
    "CONV_2D": lambda: keras.layers.Conv2D(6, 3, padding="same", kernel_initializer=W, bias_initializer=B),
    "DEPTHWISE_CONV_2D": lambda: keras.layers.DepthwiseConv2D(
        3, padding="same", depthwise_initializer=W, bias_initializer=B
    ),
    "TRANSPOSE_CONV": lambda: keras.layers.Conv2DTranspose(
        6, 3, strides=2, padding="same", kernel_initializer=W, bias_initializer=B
    ),
    "FULLY_CONNECTED": lambda: keras.layers.Dense(6, kernel_initializer=W, bias_initializer=B),
}


def _int16x8(model) -> bytes:
    import tensorflow as tf

    rng = np.random.default_rng(5)
    samples = [rng.uniform(-1, 1, (1, *model.input_shape[1:])).astype(np.float32) for _ in range(16)]
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x] for x in samples)
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    conv.inference_input_type = conv.inference_output_type = tf.int16
    return conv.convert()


@pytest.mark.parametrize("op", INT16)
def test_int16x8_rounds_where_tflite_does(tfl, op):
    """TFLite's 16x8 convolutions rescale with a 15-bit multiplier: without folding it into the
    weights, 2-15% of a layer's outputs land one int16 step away from the runtime's
    (FULLY_CONNECTED rescales at full precision: it must stay as it is)."""
    from tfl_rebuild.commands.pipeline import write_generated
    from tfl_rebuild.rebuild.loader import load_module
    from tfl_rebuild.runtime.interpreter import make_interpreter, random_inputs, run
    from tfl_rebuild.verify.measure import to_float

    shape = (12,) if op == "FULLY_CONNECTED" else (6, 6, 4)
    path = tfl.crafted(_int16x8(_model(INT16[op](), shape)))
    # One step, plus float32's rounding of grid values near int16 full scale (~1e-3 of a step).
    report = tfl.check(path, op, max_lsb=1.01)
    assert report.kind == "int16x8"
    model, py, weights = write_generated(str(path), str(tfl.tmp_path / "gen16"))
    keras_model = load_module(py).build_model(str(weights))
    interp = make_interpreter(model_content=bytes(model._storage))
    out = model.main.tensors[model.main.outputs[0]]
    steps = []
    for seed in range(4):
        x = random_inputs(interp, seed)
        ref = run(interp, x)[0].astype(np.float64)
        got = np.asarray(keras_model(to_float(model.main.tensors[model.main.inputs[0]], x[0])), np.float64)
        steps.append(np.abs(got.reshape(ref.shape) / out.quantization.scale[0] - ref).round().ravel())
    steps = np.concatenate(steps)
    assert steps.max() <= 1 and np.mean(steps > 0) < 0.01, (
        f"{np.mean(steps > 0):.1%} of outputs off by a step"
    )


def _dynamic_range(model) -> bytes:
    """Dynamic-range quantization: int8 weights, float activations (hybrid kernels)."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return conv.convert()


@pytest.mark.parametrize("op", ["CONV_2D", "FULLY_CONNECTED"])
def test_hybrid_layer_is_judged_with_its_input_quantized_as_the_kernel_does(tfl, op):
    """A hybrid kernel quantizes its float input to int8 on the fly. One wide input channel (x40,
    as after MobileNetV3's hard-swish and pooling) that the weights barely use makes that step
    coarse for every other channel: the float rebuild of the layer was 3% off the runtime (layer
    bar 2%) although its weights are right. Fed its input quantized as the kernel does it
    (asymmetric per row here), the rebuilt layer matches the runtime within 1e-6."""
    shape = (1, 1, 256) if op == "CONV_2D" else (256,)
    x = keras.Input(shape, batch_size=1)
    if op == "CONV_2D":  # the converter keeps this MUL apart from the conv
        gain = np.ones(256, np.float32)
        gain[0] = 40.0
        layer, y = keras.layers.Conv2D(16, 1, kernel_initializer=W, bias_initializer=B), x * gain
    else:  # a constant MUL would be folded into the FULLY_CONNECTED weights
        layer, y = (
            keras.layers.Dense(16, kernel_initializer=W, bias_initializer=B),
            keras.layers.Concatenate()([x, x[:, :1] * 40.0]),
        )
    out = layer(y)
    kernel, bias = layer.get_weights()
    kernel[..., 0, :] *= 0.01 if op == "CONV_2D" else 1.0
    kernel[-1, :] *= 0.01 if op == "FULLY_CONNECTED" else 1.0
    layer.set_weights([kernel, bias])
    report = tfl.check(tfl.crafted(_dynamic_range(keras.Model(x, out))), op)
    assert report.kind == "dynamic-range"
    layer_error = next(r for r in report.layers if r.op == op)
    assert layer_error.max_rel < 1e-5, layer_error.text()

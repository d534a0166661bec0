"""Activations: RELU, RELU6, RELU_N1_TO_1, LEAKY_RELU, PRELU, ELU, HARD_SWISH, LOGISTIC, TANH, GELU,
SOFTMAX, LOG_SOFTMAX, and the crafted-only RELU_0_TO_1 and SOFTMAX with beta != 1."""

from __future__ import annotations

import pytest
import tensorflow as tf

X = [1, 3, 5]


def wide(x):
    """Values well past 6 and +-1 (so RELU6 and RELU_N1_TO_1 clip), from a SUM: an activation
    after a MUL or ADD would fuse into it and vanish as an op."""
    return tf.reduce_sum(x * 4.0, axis=1)


CASES = [
    pytest.param("RELU", tf.nn.relu, id="relu"),
    pytest.param("RELU6", lambda x: tf.nn.relu6(wide(x)), id="relu6"),
    pytest.param("RELU_N1_TO_1", lambda x: tf.clip_by_value(wide(x), -1.0, 1.0), id="relu_n1_to_1"),
    pytest.param("LEAKY_RELU", lambda x: tf.nn.leaky_relu(x, 0.1), id="leaky_relu-0.1"),
    pytest.param("LEAKY_RELU", lambda x: tf.nn.leaky_relu(x, 0.75), id="leaky_relu-0.75"),
    pytest.param("ELU", tf.nn.elu, id="elu"),
    pytest.param("HARD_SWISH", lambda x: (y := wide(x)) * tf.nn.relu6(y + 3.0) / 6.0, id="hard_swish"),
    pytest.param("LOGISTIC", tf.sigmoid, id="logistic"),
    pytest.param("TANH", tf.tanh, id="tanh"),
    pytest.param("GELU", lambda x: tf.nn.gelu(wide(x), approximate=False), id="gelu-exact"),
    pytest.param("GELU", lambda x: tf.nn.gelu(wide(x), approximate=True), id="gelu-tanh"),
    pytest.param("SOFTMAX", tf.nn.softmax, id="softmax"),
    pytest.param("SOFTMAX", lambda x: tf.nn.softmax(tf.reshape(x, [3, 5])), id="softmax-2d"),
    pytest.param("LOG_SOFTMAX", tf.nn.log_softmax, id="log_softmax"),
]


@pytest.mark.parametrize("op, fn", CASES)
def test_activation(tfl, op, fn):
    tfl.check(tfl.function(fn, X), op)


@pytest.mark.parametrize("shared_axes", [None, [1], [1, 2]], ids=["per-element", "shared-1", "shared-1-2"])
def test_prelu(tfl, shared_axes):
    import keras

    x = keras.Input((3, 4, 2), batch_size=1)
    alpha = keras.initializers.RandomUniform(0.1, 0.9, seed=1)
    y = keras.layers.PReLU(alpha_initializer=alpha, shared_axes=shared_axes)(x)
    tfl.check(tfl.keras(keras.Model(x, y)), "PRELU")


def _single_op(op: str, options: dict, options_type: str | None, shape=(1, 6)) -> bytes:
    from flatbuf import Op, T, build_model

    return build_model(
        [T("x", list(shape)), T("y", list(shape))],
        [Op(op, [0], [1], options=options, options_type=options_type)],
        inputs=[0],
        outputs=[1],
    )


def test_relu_0_to_1(tfl):
    # The converter never emits RELU_0_TO_1 (clip(x, 0, 1) becomes MINIMUM + RELU): crafted.
    tfl.check(tfl.crafted(_single_op("RELU_0_TO_1", {}, None)), "RELU_0_TO_1")


@pytest.mark.parametrize("beta", [0.5, 2.0], ids=["beta-0.5", "beta-2"])
def test_softmax_beta(tfl, beta):
    # The converter keeps a scaling MUL instead of setting beta: crafted.
    tfl.check(tfl.crafted(_single_op("SOFTMAX", {"beta": beta}, "SoftmaxOptions")), "SOFTMAX")


@pytest.mark.parametrize("order", ["x-first", "sigmoid-first"])
def test_silu_pattern_is_one_layer(tfl, order):
    # SiLU reaches TFLite as LOGISTIC then MUL by the same input (onnx2tf, Keras swish): one
    # Activation("silu") layer reads better than Activation("sigmoid") + Multiply, 54 times in a YOLO.
    fn = (lambda x: x * tf.sigmoid(x)) if order == "x-first" else (lambda x: tf.sigmoid(x) * x)
    path = tfl.function(lambda x: fn(x * 3.0), [1, 4, 3])
    tfl.check(path, "LOGISTIC")
    source = next((tfl.tmp_path / "gen").glob("*.py")).read_text()
    assert 'activation="silu"' in source and "Multiply" not in source and '"sigmoid"' not in source, source


def test_gated_sigmoid_stays(tfl):
    # x * sigmoid(y) with y != x is a gate, not SiLU.
    tfl.check(tfl.function(lambda x: x * tf.sigmoid(x * 2.0 - 1.0), [1, 4, 3]), "LOGISTIC")

"""Lifting (passes/lift.py, ops/lifted.py and the lifting converters): the converter's decompositions
of LayerNormalization, SeparableConv2D, Conv1D, Flatten and global pooling come back as the Keras
layer, with its attributes and weights; a pattern that only partly matches keeps the faithful form.

Each case checks the generated source for the layer and verifies the rebuild against TFLite, end to
end and layer-local (the lifted layer is mapped to the tensor at the end of the matched chain).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

W = keras.initializers.RandomNormal(stddev=1.0, seed=1)
B = keras.initializers.RandomNormal(stddev=0.5, seed=2)


def _model(layer, shape):
    x = keras.Input(shape, batch_size=1)
    return keras.Model(x, layer(x))


def _source(tfl) -> str:
    """The generated module's source with every space and newline taken out."""
    (path,) = (tfl.tmp_path / "gen").glob("*.py")  # the stem "model" is made "model_"
    return "".join(path.read_text(encoding="utf-8").split())  # without whitespace: layout-free


def _random(*shape, low=0.5, high=1.5):
    return np.random.default_rng(3).uniform(low, high, shape).astype(np.float32)


# kwargs, input shape, expected text in the call
LAYER_NORM = {
    "last-axis-eps1e-5": ({"epsilon": 1e-5}, (5, 8), "epsilon=1e-05"),
    "default": ({}, (5, 8), "keras.layers.LayerNormalization(name="),
    "axes-1-2": ({"axis": [1, 2]}, (5, 8), "axis=[1,2]"),
    "4d-last": ({"epsilon": 1e-6}, (3, 4, 6), "epsilon=1e-06"),
    "no-center": ({"center": False}, (5, 8), "center=False"),
    "no-scale": ({"scale": False}, (5, 8), "scale=False"),
    "neither": ({"center": False, "scale": False}, (5, 8), "center=False,scale=False"),
}


@pytest.mark.parametrize("case", LAYER_NORM)
def test_layer_normalization(tfl, case):
    kwargs, shape, text = LAYER_NORM[case]
    layer = keras.layers.LayerNormalization(**kwargs)
    model = _model(layer, shape)
    # Trained-looking gamma and beta (the initial ones and zeros hide a swapped weight).
    layer.set_weights(
        [_random(*w.shape, low=-1.0) if "beta" in w.path else _random(*w.shape) for w in layer.weights]
    )
    tfl.check(tfl.keras(model), "MEAN")
    source = _source(tfl)
    assert "keras.layers.LayerNormalization(" in source and text in source, source
    assert "RSQRT" not in source and "Reduce(" not in source, source


@pytest.mark.parametrize("axis, text", [(-1, "UnitNormalization(name="), (1, "UnitNormalization(axis=1,")])
def test_unit_normalization(tfl, axis, text):
    """Keras 3 writes UnitNormalization as SQUARE, SUM, RSQRT, MINIMUM(1e12), MUL: the layer again."""
    x = keras.Input((4, 6), batch_size=1)
    h = keras.layers.Dense(5, kernel_initializer="random_normal")(x)
    tfl.check(
        tfl.keras(keras.Model(x, keras.layers.Dense(3)(keras.layers.UnitNormalization(axis)(h)))), "RSQRT"
    )
    source = _source(tfl)
    assert f"keras.layers.{text}" in source and "Reduce(" not in source and "rsqrt" not in source, source


def test_normalize_with_another_epsilon_stays_faithful(tfl):
    """keras.ops.normalize's default epsilon is 1e-7, not UnitNormalization's 1e-12: not the layer."""
    tfl.check(tfl.function(lambda x: keras.ops.normalize(x * 2.0, axis=-1, order=2), [1, 4, 6]), "RSQRT")
    assert "UnitNormalization" not in _source(tfl)


GROUP_NORM = {
    "groups-4": ({"groups": 4}, (6, 6, 8), "GroupNormalization(groups=4,name="),
    "instance": ({"groups": 8, "epsilon": 1e-5}, (6, 6, 8), "GroupNormalization(groups=8,epsilon=1e-05,"),
    "no-scale": ({"groups": 2, "scale": False}, (5, 5, 6), "GroupNormalization(groups=2,name="),
    "no-center": ({"groups": 2, "center": False}, (5, 5, 6), "GroupNormalization(groups=2,name="),
    "sequence": ({"groups": 3}, (7, 9), "GroupNormalization(groups=3,name="),
}


@pytest.mark.parametrize("case", GROUP_NORM)
def test_group_normalization(tfl, case):
    """Keras 3's grouped moments between two reshapes, read by their numbers, are the layer again;
    gamma and beta the converter dropped come back as Keras' ones and zeros."""
    kwargs, shape, text = GROUP_NORM[case]
    layer = keras.layers.GroupNormalization(**kwargs)
    x = keras.Input(shape)
    conv = keras.layers.Conv2D if len(shape) == 3 else keras.layers.Conv1D
    h = conv(shape[-1], 3, padding="same", kernel_initializer=W, bias_initializer=B)(x)
    model = keras.Model(x, keras.layers.Activation("swish")(layer(h)))
    layer.set_weights([_random(*w.shape, low=-1.0) for w in layer.weights])
    report = tfl.check(tfl.keras(model), "RSQRT")
    assert report.batch is not None and report.batch.ok, report.batch
    source = _source(tfl)
    assert f"keras.layers.{text}" in source and "Reduce(" not in source and "rsqrt" not in source, source


def test_batch_normalization_after_a_concatenate(tfl):
    """No conv absorbs a BatchNormalization after a Concatenate (DenseNet): the converter folds it
    to MUL + ADD (a ReLU fused), named ".../batchnorm/mul_1" and "add_1": the layer again."""
    x = keras.Input((6, 6, 4))
    h = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=W, bias_initializer=B)(x)
    bn = keras.layers.BatchNormalization()
    y = keras.layers.ReLU()(bn(keras.layers.Concatenate()([x, h])))
    model = keras.Model(x, keras.layers.Conv2D(3, 1, kernel_initializer=W)(y))
    bn.set_weights([_random(8), _random(8, low=-1.0), _random(8, low=-1.0), _random(8)])
    report = tfl.check(tfl.keras(model), "MUL")
    assert report.batch is not None and report.batch.ok, report.batch
    source = _source(tfl)
    assert 'keras.layers.BatchNormalization(epsilon=0.0,name="batch_normalization' in source, source
    assert 'keras.layers.ReLU(name="re_lu' in source and "BinaryOp" not in source, source


def test_per_channel_arithmetic_not_named_batch_norm_stays_faithful(tfl):
    tfl.check(
        tfl.function(lambda x: x * tf.constant([1.5, 2.0, 0.5]) + tf.constant([0.1, 0.2, 0.3]), [1, 4, 3]),
        "MUL",
    )
    assert "BatchNormalization" not in _source(tfl)


def _ln_parts(x, gamma, beta):
    """keras.layers.LayerNormalization's arithmetic, written out (as TF 2.21 lowers it)."""
    mean = tf.reduce_mean(x, -1, keepdims=True)
    var = tf.reduce_mean(tf.math.squared_difference(x, mean), -1, keepdims=True)
    inv = tf.math.rsqrt(var + 1e-3) * gamma
    return x * inv + (-mean * inv + beta), mean


@pytest.mark.parametrize("shape,axis", [((5, 4), 1), ((3, 4, 6), 1), ((3, 4, 6), 2)])
def test_softmax_on_another_axis(tfl, shape, axis):
    """TFLite's SOFTMAX works along the last axis: Softmax(axis=1) comes as TRANSPOSE, SOFTMAX,
    TRANSPOSE, and goes back to one Softmax(axis=1) layer, free batch and all."""
    x = keras.Input(shape)
    tfl.check(tfl.keras(keras.Model(x, keras.layers.Softmax(axis=axis)(x * 2.0))), "TRANSPOSE")
    source = _source(tfl)
    assert f"keras.layers.Softmax(axis={axis}" in source and "Permute" not in source, source


def test_softmax_between_transposes_read_elsewhere_stays_faithful(tfl):
    """The first transpose's result is also an output: nothing is lifted."""

    def f(x):
        t = tf.transpose(x, [0, 2, 1])
        return tf.transpose(tf.nn.softmax(t), [0, 2, 1]), t

    tfl.check(tfl.function(f, [1, 5, 4]), "SOFTMAX")
    assert "axis=1" not in _source(tfl)


def test_layer_normalization_written_out(tfl):
    gamma, beta = _random(8), _random(8, low=-1.0)
    tfl.check(tfl.function(lambda x: _ln_parts(x * 2.0, gamma, beta)[0], [1, 5, 8]), "RSQRT")
    source = _source(tfl)
    assert "keras.layers.LayerNormalization(" in source and "epsilon" not in source, source


def test_layer_normalization_partial_stays_faithful(tfl):
    """The mean is also a model output: the ops computing it must stay, so nothing is lifted."""
    gamma, beta = _random(8), _random(8, low=-1.0)
    tfl.check(tfl.function(lambda x: _ln_parts(x * 2.0, gamma, beta), [1, 5, 8]), "RSQRT")
    source = _source(tfl)
    assert "LayerNormalization" not in source and "rsqrt" in source.lower(), source


SEPARABLE = {
    "3x3-same-relu": ({"kernel_size": 3, "padding": "same", "activation": "relu"}, 'activation="relu"'),
    "m2-s2-valid": ({"kernel_size": 3, "strides": 2, "depth_multiplier": 2}, "depth_multiplier=2"),
    "d2-same": ({"kernel_size": 3, "dilation_rate": 2, "padding": "same"}, "dilation_rate=(2,2)"),
    "no-bias": ({"kernel_size": 3, "use_bias": False}, "use_bias=False"),
    "3x2-relu6": ({"kernel_size": (3, 2), "activation": "relu6"}, "kernel_size=(3,2)"),
}


@pytest.mark.parametrize("case", SEPARABLE)
def test_separable_conv_2d(tfl, case):
    kwargs, text = SEPARABLE[case]
    layer = keras.layers.SeparableConv2D(
        5, depthwise_initializer=W, pointwise_initializer=W, bias_initializer=B, **kwargs
    )
    tfl.check(tfl.keras(_model(layer, (9, 8, 3))), "DEPTHWISE_CONV_2D")
    source = _source(tfl)
    assert "keras.layers.SeparableConv2D(" in source and text in source, source
    assert "DepthwiseConv2D" not in source, source


def test_separable_conv_2d_dilated_free_batch(tfl):
    """A free batch makes TensorFlow write the dilated depthwise as SPACE_TO_BATCH_ND, conv,
    BATCH_TO_SPACE_ND: fused into one dilated conv before the lift, it is one SeparableConv2D,
    named after its layer (not 'separable_conv2d_batch_to_space_nd')."""
    x = keras.Input((12, 12, 3))
    layer = keras.layers.SeparableConv2D(
        5,
        3,
        dilation_rate=2,
        padding="same",
        depthwise_initializer=W,
        pointwise_initializer=W,
        bias_initializer=B,
        name="sep",
    )
    tfl.check(tfl.keras(keras.Model(x, layer(x))), "SPACE_TO_BATCH_ND")
    source = _source(tfl)
    assert "keras.layers.SeparableConv2D(" in source and "dilation_rate=(2,2)" in source, source
    assert 'name="sep"' in source and "DepthwiseConv2D" not in source, source


@pytest.mark.parametrize("between", ["relu", "depthwise-bias"])
def test_separable_partial_stays_faithful(tfl, between):
    """An activation or a bias between the depthwise and the 1x1 conv: two layers, as written."""
    x = keras.Input((9, 8, 3), batch_size=1)
    use_bias = between == "depthwise-bias"
    h = keras.layers.DepthwiseConv2D(3, use_bias=use_bias, depthwise_initializer=W, bias_initializer=B)(x)
    if between == "relu":
        h = keras.layers.ReLU()(h)
    y = keras.layers.Conv2D(4, 1, kernel_initializer=W, bias_initializer=B)(h)
    tfl.check(tfl.keras(keras.Model(x, y)), "DEPTHWISE_CONV_2D")
    source = _source(tfl)
    assert "SeparableConv2D" not in source and "keras.layers.DepthwiseConv2D(" in source, source


CONV_1D = {
    "k3-valid": ({"kernel_size": 3}, "kernel_size=3"),
    "k3-s2-same": ({"kernel_size": 3, "strides": 2, "padding": "same"}, "strides=2"),
    "k3-d2-valid": ({"kernel_size": 3, "dilation_rate": 2}, "dilation_rate=2"),
    "causal": ({"kernel_size": 3, "padding": "causal"}, 'padding="causal"'),
    "causal-d2-relu": (
        {"kernel_size": 2, "padding": "causal", "dilation_rate": 2, "activation": "relu"},
        'padding="causal"',
    ),
    "no-bias": ({"kernel_size": 4, "use_bias": False}, "use_bias=False"),
    "groups-2": ({"kernel_size": 3, "groups": 2, "padding": "same"}, "groups=2"),
}


@pytest.mark.parametrize("case", CONV_1D)
def test_conv_1d(tfl, case):
    kwargs, text = CONV_1D[case]
    layer = keras.layers.Conv1D(4, kernel_initializer=W, bias_initializer=B, **kwargs)
    tfl.check(tfl.keras(_model(layer, (12, 4))), "CONV_2D")
    source = _source(tfl)
    assert "keras.layers.Conv1D(" in source and text in source, source
    assert "Conv2D" not in source and "Reshape" not in source, source


STACK_1D = {
    "conv-maxpool-conv": lambda: [
        keras.layers.Conv1D(6, 3, activation="relu", kernel_initializer=W, bias_initializer=B),
        keras.layers.MaxPooling1D(2),
        keras.layers.Conv1D(
            4, 3, padding="causal", dilation_rate=2, kernel_initializer=W, bias_initializer=B
        ),
    ],
    "conv-avgpool-same-flatten": lambda: [
        keras.layers.Conv1D(4, 3, padding="same", kernel_initializer=W, bias_initializer=B),
        keras.layers.AveragePooling1D(3, strides=2, padding="same"),
        keras.layers.Flatten(),
    ],
}


@pytest.mark.parametrize("case", STACK_1D)
def test_1d_stack(tfl, case):
    """Between consecutive 1-D layers the converter drops the reshapes: a region of 4-D tensors."""
    x = keras.Input((12, 4), batch_size=1)
    y = x
    for layer in STACK_1D[case]():
        y = layer(y)
    tfl.check(tfl.keras(keras.Model(x, y)), "CONV_2D")
    source = _source(tfl)
    assert "keras.layers.Conv1D(" in source and "Pooling1D(" in source, source
    assert "2D(" not in source and "Reshape(" not in source, source


@pytest.mark.parametrize("padding", ["causal", "same", "valid"])
def test_conv_1d_dilated_free_batch(tfl, padding):
    """A free batch makes TensorFlow write a dilated Conv1D as [PAD,] SPACE_TO_BATCH_ND, the conv on
    its [B, 1, L, C] view, BATCH_TO_SPACE_ND: one Conv1D(dilation_rate=2) again, its ReLU with it."""
    x = keras.Input((16, 3))
    layer = keras.layers.Conv1D(
        4, 3, padding=padding, dilation_rate=2, activation="relu", kernel_initializer=W, bias_initializer=B
    )
    tfl.check(tfl.keras(keras.Model(x, layer(x))), "SPACE_TO_BATCH_ND")
    source = _source(tfl)
    assert "keras.layers.Conv1D(" in source and "dilation_rate=2" in source, source
    assert f'padding="{padding}"' in source or padding == "valid", source
    assert 'activation="relu"' in source and "SpaceToBatch" not in source and "ReLU(" not in source, source


def test_conv_1d_partial_stays_faithful(tfl):
    """The 4-d input of the convolution is read elsewhere too: the reshape must stay."""
    k = tf.constant(np.random.default_rng(1).normal(size=(1, 3, 4, 4)).astype(np.float32))

    def fn(x):
        x4 = tf.expand_dims(x, 1)
        y = tf.nn.conv2d(x4, k, 1, "VALID")
        return tf.squeeze(y, 1), x4 * 2.0

    tfl.check(tfl.function(fn, [1, 12, 4]), "CONV_2D")
    source = _source(tfl)
    assert "Conv1D" not in source and "keras.layers.Conv2D(" in source, source


@pytest.mark.parametrize("shape", [(3, 4, 2), (6, 5)], ids=["4d", "3d"])
def test_flatten(tfl, shape):
    tfl.check(tfl.keras(_model(keras.layers.Flatten(), shape)), "RESHAPE")
    assert "keras.layers.Flatten(" in _source(tfl)


def test_reshape_not_flat_stays_reshape(tfl):
    tfl.check(tfl.keras(_model(keras.layers.Reshape((4, 6)), (3, 4, 2))), "RESHAPE")
    source = _source(tfl)
    assert "Flatten" not in source and "keras.layers.Reshape(" in source, source


GLOBAL_POOLING = {
    "average-1d": (keras.layers.GlobalAveragePooling1D, (5, 8), "MEAN"),
    "max-1d": (keras.layers.GlobalMaxPooling1D, (5, 8), "REDUCE_MAX"),
    "average-2d": (keras.layers.GlobalAveragePooling2D, (4, 5, 3), "MEAN"),
    "max-2d": (keras.layers.GlobalMaxPooling2D, (4, 5, 3), "REDUCE_MAX"),
}


@pytest.mark.parametrize("keepdims", [False, True], ids=["drop", "keepdims"])
@pytest.mark.parametrize("case", GLOBAL_POOLING)
def test_global_pooling(tfl, case, keepdims):
    cls, shape, op = GLOBAL_POOLING[case]
    tfl.check(tfl.keras(_model(cls(keepdims=keepdims), shape)), op)
    source = _source(tfl)
    assert f"keras.layers.{cls.__name__}(" in source, source
    assert ("keepdims=True" in source) == keepdims, source


def test_mean_over_channels_stays_reduce(tfl):
    tfl.check(tfl.function(lambda x: tf.reduce_mean(x, [2]), [1, 5, 8]), "MEAN")
    assert "GlobalAveragePooling" not in _source(tfl)


ACTIVATION = {
    "dense-gelu": (lambda: keras.layers.Dense(6, activation="gelu", kernel_initializer=W), (8,), "GELU"),
    "dense-sigmoid": (
        lambda: keras.layers.Dense(6, activation="sigmoid", kernel_initializer=W),
        (8,),
        "LOGISTIC",
    ),
    "dense-softmax": (
        lambda: keras.layers.Dense(6, activation="softmax", kernel_initializer=W),
        (8,),
        "SOFTMAX",
    ),
    "conv-sigmoid": (
        lambda: keras.layers.Conv2D(4, 3, activation="sigmoid", kernel_initializer=W, bias_initializer=B),
        (6, 6, 3),
        "LOGISTIC",
    ),
    "conv1d-gelu": (
        lambda: keras.layers.Conv1D(4, 3, activation="gelu", kernel_initializer=W, bias_initializer=B),
        (10, 3),
        "GELU",
    ),
}


def _followed(layers, shape):
    """The layers, then a Rescaling: inside a model the activation's tensor has its layer's scope
    in its name (a model output's name, "Identity", has none, and nothing is fused then)."""
    x = keras.Input(shape, batch_size=1)
    y = x
    for layer in layers:
        y = layer(y)
    return keras.Model(x, keras.layers.Rescaling(2.0)(y))


@pytest.mark.parametrize("case", ACTIVATION)
def test_activation_into_layer(tfl, case):
    make, shape, op = ACTIVATION[case]
    layer = make()
    tfl.check(tfl.keras(_followed([layer], shape)), op)
    source = _source(tfl)
    name = keras.activations.serialize(layer.activation)
    assert f'activation="{name}"' in source and "keras.layers.Activation(" not in source, source


def test_activation_layer_stays_apart(tfl):
    """Dense then Activation("sigmoid"): the names say two layers, and two layers it stays."""
    layers = [keras.layers.Dense(6, kernel_initializer=W), keras.layers.Activation("sigmoid")]
    tfl.check(tfl.keras(_followed(layers, (8,))), "LOGISTIC")
    source = _source(tfl)
    assert 'keras.layers.Activation(activation="sigmoid"' in source, source
    assert source.count('activation="sigmoid"') == 1, source


def test_approximate_gelu_stays_apart(tfl):
    """Keras' "gelu" by name is exact: the tanh approximation keeps its own layer."""
    layer = keras.layers.Dense(6, activation=lambda x: keras.activations.gelu(x, approximate=True))
    tfl.check(tfl.keras(_followed([layer], (8,))), "GELU")
    source = _source(tfl)
    assert "activation=" not in source.replace("Activation(", "") and 'op="gelu_tanh"' in source, source


@pytest.mark.parametrize("shape", [(7,), (3, 4)], ids=["1d-ids", "2d-ids"])
def test_embedding(tfl, shape):
    x = keras.Input(shape, batch_size=1, dtype="int32")
    layer = keras.layers.Embedding(20, 6, embeddings_initializer=W)
    tfl.check(tfl.keras(keras.Model(x, layer(x))), "GATHER")
    source = _source(tfl)
    assert "keras.layers.Embedding(input_dim=20,output_dim=6," in source and "Select(" not in source, source


def test_gather_of_rows_by_constant_ids_stays_gather(tfl):
    table = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    tfl.check(tfl.function(lambda x: tf.gather(x * 2.0 + table, [3, 1, 0]), [5, 4]), "GATHER")
    assert "Embedding" not in _source(tfl)


def test_squeeze_excite_multiply(tfl):
    """The converter drops the Reshape((1, 1, C)) of a squeeze-excite gate: MUL [1, H, W, C] by
    [1, C] is what Keras' Multiply computes (it expands the gate at axis 1)."""
    x = keras.Input((5, 5, 6), batch_size=1)
    h = keras.layers.Conv2D(6, 3, padding="same", kernel_initializer=W, bias_initializer=B)(x)
    s = keras.layers.GlobalAveragePooling2D()(h)
    s = keras.layers.Dense(6, activation="sigmoid", kernel_initializer=W)(s)
    y = keras.layers.Multiply()([h, keras.layers.Reshape((1, 1, 6))(s)])
    tfl.check(tfl.keras(keras.Model(x, keras.layers.Rescaling(2.0)(y))), "MUL")
    source = _source(tfl)
    assert "keras.layers.Multiply(" in source and 'BinaryOp(op="multiply",name' not in source, source


def test_batch_broadcast_multiply_stays_binary_op(tfl):
    """[2, 3] * [3]: numpy pads in front, a merge layer would need the same batch: no Multiply."""
    tfl.check(tfl.function(lambda a, b: a * b, [2, 3], [3]), "MUL")
    assert "Multiply" not in _source(tfl)


def _attention_model(layer, shapes, **call):
    inputs = [keras.Input(s, batch_size=1) for s in shapes]
    q, v = inputs[0], inputs[min(1, len(inputs) - 1)]
    key = {"key": inputs[2]} if len(inputs) > 2 else {}  # query, value, key: three inputs
    y = layer(q, v, **key, **call)
    model = keras.Model(inputs, keras.layers.Rescaling(2.0)(y))
    rng = np.random.default_rng(4)
    layer.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.weights])
    return model


ATTENTION = {
    "self-2x8": ({"num_heads": 2, "key_dim": 8}, [(6, 16)], "key_dim=8"),
    "cross-value-dim": ({"num_heads": 3, "key_dim": 4, "value_dim": 5}, [(6, 12), (7, 10)], "value_dim=5"),
    "output-shape": ({"num_heads": 2, "key_dim": 4, "output_shape": 6}, [(5, 8)], "output_shape=6"),
    "query-value-key": ({"num_heads": 2, "key_dim": 3}, [(4, 6), (5, 7), (5, 9)], "key_dim=3"),
    "no-bias": ({"num_heads": 1, "key_dim": 8, "use_bias": False}, [(5, 8)], "use_bias=False"),
}


@pytest.mark.parametrize("case", ATTENTION)
def test_multi_head_attention(tfl, case):
    kwargs, shapes, text = ATTENTION[case]
    tfl.check(tfl.keras(_attention_model(keras.layers.MultiHeadAttention(**kwargs), shapes)), "BATCH_MATMUL")
    source = _source(tfl)
    assert "keras.layers.MultiHeadAttention(" in source and text in source, source
    assert "MatMul(" not in source and "Softmax(" not in source, source
    # named as the attention's scope, not after its query projection's kernel
    assert 'name="multi_head_attention' in source, source


def test_causal_attention_lifts_with_use_causal_mask(tfl):
    """use_causal_mask=True converts to SELECT_V2(a constant lower-triangular mask, the scores,
    -0.7 x float32's max) before the softmax: the layer comes back, called with the flag."""
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    tfl.check(tfl.keras(_attention_model(layer, [(5, 8)], use_causal_mask=True)), "SELECT_V2")
    source = _source(tfl)
    assert "keras.layers.MultiHeadAttention(" in source and "use_causal_mask=True)" in source, source
    assert 'name="multi_head_attention' in source, source
    assert "Select(" not in source and "MatMul(" not in source, source


def test_attention_masked_at_run_time_stays_faithful(tfl):
    """A mask that is an input, not the constant causal one: the faithful SELECT_V2 stays."""

    class ToBool(keras.layers.Layer):
        def call(self, t):
            return keras.ops.greater(t, 0.0)

    x, mask = keras.Input((5, 8), batch_size=1), keras.Input((5, 5), batch_size=1)
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    y = layer(x, x, attention_mask=ToBool()(mask))
    rng = np.random.default_rng(4)
    layer.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.weights])
    tfl.check(tfl.keras(keras.Model([x, mask], keras.layers.Rescaling(2.0)(y))), "SELECT_V2")
    assert "MultiHeadAttention" not in _source(tfl)


def _dynamic_range(tfl, model):
    """Dynamic-range quantization: int8 weights (over 1024 elements), activations float."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return tfl._write(conv.convert())


@pytest.mark.parametrize("case", ["conv1d", "separable", "attention"])
def test_hybrid_kernels_stay_faithful(tfl, case):
    """A hybrid kernel quantizes its input at run time, and verification rounds that input tensor
    as it does: a lifted layer would hide the tensor inside it, so nothing is lifted."""
    if case == "conv1d":
        model = _model(keras.layers.Conv1D(48, 3, kernel_initializer=W, bias_initializer=B), (12, 32))
        op, lifted = "CONV_2D", "Conv1D("
    elif case == "separable":
        layer = keras.layers.SeparableConv2D(48, 3, depthwise_initializer=W, pointwise_initializer=W)
        model, op, lifted = _model(layer, (6, 6, 32)), "DEPTHWISE_CONV_2D", "SeparableConv2D("
    else:
        model = _attention_model(keras.layers.MultiHeadAttention(num_heads=2, key_dim=32), [(5, 64)])
        op, lifted = "BATCH_MATMUL", "MultiHeadAttention("
    tfl.check(_dynamic_range(tfl, model), op)
    assert lifted not in _source(tfl)


def test_dense_reads_the_reshape_layer_the_converter_skipped(tfl):
    """Reshape((16, 4)) then Dense: the converter reshapes the conv's [B, 4, 4, 4] straight to the
    Dense's [16, 4] rows; the Dense reads the Reshape layer the model computes anyway (not a pair of
    BatchReshape layers)."""
    x = keras.Input((4, 4, 3))
    h = keras.layers.Conv2D(4, 1, kernel_initializer=W, bias_initializer=B)(x)
    seq = keras.layers.Reshape((16, 4))(h)
    w = keras.layers.Dense(1, kernel_initializer=W, bias_initializer=B)(seq)
    tfl.check(tfl.keras(keras.Model(x, keras.layers.Multiply()([seq, w]))), "FULLY_CONNECTED")
    source = _source(tfl)
    assert "BatchReshape" not in source and "keras.layers.Reshape(" in source, source

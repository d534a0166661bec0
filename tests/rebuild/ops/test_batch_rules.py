"""Ops and the batch axis (ops/batch.py, passes/batch_axis.py): each case converts a tiny graph,
checks the reason the batch stays fixed (or that it is free), and verifies the rebuild, which
runs it at batch 3 too when the batch is free."""

from __future__ import annotations

import re

import pytest

from tfl_rebuild.rebuild.passes.batch_axis import fixed_batch_reason
from tfl_rebuild.rebuild.passes.pipeline import prepare
from tfl_rebuild.runtime.views import make_view
from tfl_rebuild.tflite.reader import read_model

tf = pytest.importorskip("tensorflow")


def _reason(path) -> str | None:
    """As the rebuild sees the file: dynamic dims fixed (the view), then the passes."""
    ctx, ops = prepare(make_view(read_model(str(path))).model)
    return fixed_batch_reason(ctx, ops)


def test_a_transpose_that_moves_the_batch_keeps_it_fixed(tfl):
    path = tfl.function(lambda x: tf.transpose(x, [2, 0, 1]) * 2.0, [1, 3, 4])
    assert _reason(path).startswith("TRANSPOSE ")  # its output leads with 4, not the batch
    report = tfl.check(path, "TRANSPOSE")
    assert report.batch is None  # a fixed batch has no batch check, and says so in its header


@pytest.mark.parametrize(
    "fn, op, free",
    [
        (lambda x: tf.transpose(x, [0, 2, 1]) * 2.0, "TRANSPOSE", True),
        (lambda x: tf.reduce_mean(x, axis=[1]), "MEAN", True),
        (lambda x: tf.reduce_sum(x, axis=[0, 2]), "SUM", False),
        (lambda x: tf.pad(x, [[0, 0], [1, 2], [0, 1]]), "PAD", True),
        (lambda x: tf.pad(x, [[1, 0], [1, 2], [0, 1]]), "PAD", False),
        (lambda x: x[:, 1:3, ::2] * 2.0, "STRIDED_SLICE", True),
        (lambda x: x[0] * 2.0, "STRIDED_SLICE", False),
        (lambda x: tf.reshape(x, [1, 12]) + 1.0, "RESHAPE", True),
        (lambda x: tf.reshape(x, [3, 4]) + 1.0, "RESHAPE", False),
        (lambda x: tf.reshape(tf.reshape(x, [3, 4]) * 2.0, [1, 12]), "RESHAPE", True),
        (lambda x: tf.reshape(x, [3, 4]) + tf.constant([[1.0], [2.0], [3.0]]), "RESHAPE", False),
        (lambda x: tf.concat([x, x * 2.0], axis=2), "CONCATENATION", True),
        (lambda x: tf.concat([x, x * 2.0], axis=0), "CONCATENATION", False),
        (lambda x: tf.tile(x, [1, 2, 1]), "TILE", True),
        (lambda x: x * tf.reduce_mean(x, axis=[1]), "MUL", True),
        (lambda x: x + tf.reduce_mean(x, axis=[1]), "ADD", False),
        (lambda x: tf.gather(x, [2, 0], axis=1), "GATHER", True),
        (lambda x: tf.matmul(x, tf.transpose(x, [0, 2, 1])), "BATCH_MATMUL", True),
        (lambda x: x[:, 1:3, :] * 2.0, "STRIDED_SLICE", True),
        (lambda x: tf.cumsum(x, axis=1), "CUMSUM", True),
        (lambda x: tf.reverse(x, [2]) * 2.0, "REVERSE_V2", True),
        (lambda x: tf.reverse(x, [0]) * 2.0, "REVERSE_V2", False),
        (lambda x: tf.argmax(x, axis=2), "ARG_MAX", True),
        (lambda x: tf.one_hot(tf.cast(tf.abs(x) * 3.0, tf.int32), 4), "ONE_HOT", True),
        (lambda x: tf.one_hot(tf.cast(tf.abs(x) * 3.0, tf.int32), 4, axis=0), "ONE_HOT", False),
        (lambda x: tf.reduce_prod(tf.split(x, [1, 3], axis=2)[1], axis=2), "SPLIT_V", True),
        (lambda x: tf.stack([x, x * 2.0], axis=1), "PACK", True),
        (lambda x: tf.unstack(x, axis=1)[1] * 2.0, "UNPACK", True),
        (lambda x: tf.math.top_k(x, k=2).values, "TOPK_V2", True),
    ],
    ids=[
        "transpose-keeps-batch",
        "mean-not-batch",
        "sum-over-batch",
        "pad-not-batch",
        "pad-batch",
        "slice-not-batch",
        "slice-picks-row",
        "reshape-keeps-batch",
        "reshape-folds-batch",
        "reshape-folds-and-unfolds",
        "constant-along-folded-rows",
        "concat-channels",
        "concat-batch",
        "tile-not-batch",
        "mul-by-a-gate",
        "add-broadcast",
        "gather-axis-1",
        "batch-matmul",
        "cropping",
        "cumsum-not-batch",
        "reverse-not-batch",
        "reverse-batch",
        "argmax-last",
        "one-hot-last",
        "one-hot-first",
        "split-not-batch",
        "pack-not-batch",
        "unpack-not-batch",
        "top-k",
    ],
)
def test_batch_rules(tfl, fn, op, free):
    path = tfl.function(fn, [1, 3, 4])
    reason = _reason(path)
    assert (reason is None) == free, reason
    report = tfl.check(path, op)
    assert (report.batch is not None) == free
    if free:
        assert report.batch.ok, report.batch.text()


def test_free_batch_keras_original_keeps_its_layers_and_any_batch(tfl):
    """A Keras model without batch_size converts with SHAPE-computed reshape targets and Dense on
    rank 3 as RESHAPE, FULLY_CONNECTED, RESHAPE: the rebuild lifts MultiHeadAttention all the same
    (identity reshapes dropped) and takes any batch (rows folded by the reshapes traced)."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 16))
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)
    y = keras.layers.Dense(24, activation="relu")(keras.layers.Add()([x, h]))
    path = tfl.keras(keras.Model(x, keras.layers.Dense(4)(y)))
    main = read_model(str(path)).main
    assert main.tensors[main.inputs[0]].shape_signature[0] == -1  # the converter kept the free batch
    assert _reason(path) is None
    report = tfl.check(path, "BATCH_MATMUL")
    assert report.batch is not None and report.batch.ok, report.batch
    source = next((tfl.tmp_path / "gen").glob("*.py")).read_text()
    assert "keras.layers.MultiHeadAttention(" in source and "batch_size" not in source
    # its scaled scores' fused name ".../multi_head_attention_1/Mul;...", not the query kernel's
    assert 'name="multi_head_attention"' in source, source


def test_free_batch_dense_on_a_sequence_is_one_dense(tfl):
    """Dense on [batch, 8, 16] without batch_size converts to RESHAPE, FULLY_CONNECTED, RESHAPE:
    the rebuild is the one Dense again (passes.lift), and takes any batch."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 16))
    y = keras.layers.Dense(24, bias_initializer="random_normal")(x)
    path = tfl.keras(keras.Model(x, keras.layers.Activation("tanh")(y)))
    report = tfl.check(path, "FULLY_CONNECTED")
    assert report.batch is not None and report.batch.ok, report.batch
    source = next((tfl.tmp_path / "gen").glob("*.py")).read_text()
    assert source.count("keras.layers.Dense(") == 1 and "BatchReshape" not in source, source


@pytest.mark.parametrize("head", [False, True])
def test_free_batch_dense_with_an_activation_on_4d_is_one_dense(tfl, head):
    """Dense(activation="tanh") on [batch, 5, 6, 7] converts to RESHAPE, FULLY_CONNECTED, RESHAPE,
    ADD, TANH (a zero bias: RESHAPE, FULLY_CONNECTED, TANH, RESHAPE): the rebuild is the one Dense
    with its bias and activation, and takes any batch."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    x = keras.Input((5, 6, 7))
    bias = "random_normal" if head else "zeros"
    h = keras.layers.Dense(4, activation="tanh", bias_initializer=bias)(x)
    path = tfl.keras(keras.Model(x, keras.layers.Dense(3, bias_initializer=bias)(h) if head else h))
    report = tfl.check(path, "FULLY_CONNECTED")
    assert report.batch is not None and report.batch.ok, report.batch
    source = "".join(next((tfl.tmp_path / "gen").glob("*.py")).read_text().split())
    assert re.search(r'keras\.layers\.Dense\(units=4,(use_bias=False,)?activation="tanh",', source), source
    assert source.count("keras.layers.Dense(") == 1 + head, source
    assert not any(s in source for s in ("BatchReshape", "BinaryOp", "Activation(")), source

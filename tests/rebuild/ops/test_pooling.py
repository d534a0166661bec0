"""Pooling and reductions: AVERAGE_POOL_2D, MAX_POOL_2D (sizes, strides, padding, fused activation)
and MEAN, SUM, REDUCE_MAX, REDUCE_MIN, REDUCE_PROD, REDUCE_ANY, REDUCE_ALL (axes, keep_dims)."""

from __future__ import annotations

import pytest
import tensorflow as tf

X = [1, 7, 6, 3]
POOL = {"AVERAGE_POOL_2D": tf.nn.avg_pool2d, "MAX_POOL_2D": tf.nn.max_pool2d}


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize(
    "size, strides",
    [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((3, 2), (2, 1))],
    ids=["2x2-s2", "3x3-s1", "3x2-s2x1"],
)
@pytest.mark.parametrize("op", POOL)
def test_pool(tfl, op, size, strides, padding):
    tfl.check(tfl.function(lambda x: POOL[op](x, size, strides, padding), X), op)


ACTIVATIONS = {
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "relu_n1_to_1": lambda x: tf.clip_by_value(x, -1.0, 1.0),
}


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("op", POOL)
def test_pool_fused_activation(tfl, op, act):
    # x * 8 before the pool, so the fused activation clips.
    path = tfl.function(lambda x: ACTIVATIONS[act](POOL[op](x * 8.0, 2, 1, "SAME")), X)
    from tfl_rebuild.tflite.reader import read_model

    fused = [
        o.options.get("fused_activation_function")
        for o in read_model(str(path)).main.operators
        if o.opcode == op
    ]
    assert act.upper() in fused, f"{act} did not fuse into {op}: {fused}"
    tfl.check(path, op)


REDUCE = {
    "MEAN": tf.reduce_mean,
    "SUM": tf.reduce_sum,
    "REDUCE_MAX": tf.reduce_max,
    "REDUCE_MIN": tf.reduce_min,
    "REDUCE_PROD": lambda x, *a, **k: tf.reduce_prod(x * 2.0, *a, **k),  # products of [-2, 2)
}
AXES = {"spatial": [1, 2], "last": [-1], "middle": [2], "three": [1, 2, 3], "batch-and-h": [0, 1]}


@pytest.mark.parametrize("keep_dims", [False, True], ids=["drop", "keep_dims"])
@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("op", REDUCE)
def test_reduce(tfl, op, axes, keep_dims):
    tfl.check(tfl.function(lambda x: REDUCE[op](x, AXES[axes], keepdims=keep_dims), [2, 3, 4, 3]), op)


LOGIC = {"REDUCE_ANY": tf.reduce_any, "REDUCE_ALL": tf.reduce_all}


@pytest.mark.parametrize("keep_dims", [False, True], ids=["drop", "keep_dims"])
@pytest.mark.parametrize("op", LOGIC)
def test_reduce_logic(tfl, op, keep_dims):
    # Thresholds that make both answers common over 3 values.
    cut = 0.5 if op == "REDUCE_ANY" else -0.5
    tfl.check(tfl.function(lambda x: LOGIC[op](x > cut, [2], keepdims=keep_dims), [1, 4, 3]), op)


# L2_POOL_2D: TF 2.21 writes sqrt(avg_pool(x^2)) as three ops, so the op is crafted.
L2_POOL = {
    "2x2-valid": ("VALID", (2, 2), (2, 2), "NONE"),
    "3x3-same-stride1": ("SAME", (1, 1), (3, 3), "NONE"),
    "3x2-same-stride2-relu6": ("SAME", (2, 2), (3, 2), "RELU6"),
}


def _l2_pool_model(padding, stride, size, activation) -> bytes:
    from flatbuf import Op, T, build_model

    def out(n, s, k):
        return -(-n // s) if padding == "SAME" else (n - k) // s + 1

    shape = [1, out(7, stride[0], size[0]), out(8, stride[1], size[1]), 3]
    options = {
        "padding": padding,
        "stride_h": stride[0],
        "stride_w": stride[1],
        "filter_height": size[0],
        "filter_width": size[1],
        "fused_activation_function": activation,
    }
    return build_model(
        [T("x", [1, 7, 8, 3]), T("y", shape)],
        [Op("L2_POOL_2D", [0], [1], options=options, options_type="Pool2DOptions")],
        inputs=[0],
        outputs=[1],
    )


@pytest.mark.parametrize("case", L2_POOL)
def test_l2_pool_2d(tfl, case):
    tfl.check(tfl.crafted(_l2_pool_model(*L2_POOL[case])), "L2_POOL_2D")


def test_l2_pool_2d_core_ml(tfl):
    tfl.core_ml(tfl.crafted(_l2_pool_model(*L2_POOL["3x2-same-stride2-relu6"])), "L2_POOL_2D")

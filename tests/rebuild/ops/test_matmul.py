"""Products of computed tensors: BATCH_MATMUL (adj_x / adj_y, broadcast batch axes, a constant
operand) and FULLY_CONNECTED with run-time weights."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

RNG = np.random.default_rng(7)
C3 = RNG.normal(size=(2, 4, 5)).astype(np.float32)

BATCH_MATMUL = {
    "plain": (lambda a, b: tf.matmul(a, b), [[2, 3, 4], [2, 4, 5]]),
    "adj_x": (lambda a, b: tf.matmul(a, b, adjoint_a=True), [[2, 4, 3], [2, 4, 5]]),
    "adj_y": (lambda a, b: tf.matmul(a, b, adjoint_b=True), [[2, 3, 4], [2, 5, 4]]),
    "adj_x-adj_y": (lambda a, b: tf.matmul(a, b, adjoint_a=True, adjoint_b=True), [[2, 4, 3], [2, 5, 4]]),
    "broadcast-batch": (lambda a, b: tf.matmul(a, b), [[2, 3, 4], [1, 4, 5]]),
    "rank-4": (lambda a, b: tf.matmul(a, b), [[1, 2, 3, 4], [1, 2, 4, 2]]),
    "2d-computed": (lambda a, b: tf.matmul(a, b), [[3, 4], [4, 5]]),
    "constant-y": (lambda a: tf.matmul(a, C3), [[2, 3, 4]]),
    "constant-x": (lambda b: tf.matmul(C3, b, adjoint_a=True), [[2, 4, 3]]),
}


@pytest.mark.parametrize("case", BATCH_MATMUL)
def test_batch_matmul(tfl, case):
    fn, specs = BATCH_MATMUL[case]
    tfl.check(tfl.function(fn, *specs), "BATCH_MATMUL")


B = RNG.normal(size=5).astype(np.float32)
FC = {
    "2d": (lambda a, w: tf.matmul(a, w, transpose_b=True), [[3, 4], [5, 4]]),
    "2d-bias": (lambda a, w: tf.matmul(a, w, transpose_b=True) + B, [[3, 4], [5, 4]]),
    "2d-bias-relu": (lambda a, w: tf.nn.relu(tf.matmul(a, w, transpose_b=True) + B), [[3, 4], [5, 4]]),
}


@pytest.mark.parametrize("case", FC)
def test_fully_connected_runtime_weights(tfl, case):
    fn, specs = FC[case]
    tfl.check(tfl.function(fn, *specs), "FULLY_CONNECTED")


@pytest.mark.parametrize(
    "in_shape, keep",
    [([1, 2, 3, 4], False), ([2, 3, 4], True)],
    ids=["4d-flattened-rows", "3d-keep_num_dims"],
)
def test_fully_connected_runtime_weights_crafted(tfl, in_shape, keep):
    # Weights as a second model input, on ranks the converter writes RESHAPEs for.
    from flatbuf import Op, T, build_model

    rows = int(np.prod(in_shape[:-1]))
    out = [*in_shape[:-1], 5] if keep else [rows, 5]
    blob = build_model(
        [T("x", in_shape), T("w", [5, 4]), T("b", [5], data=B), T("y", out)],
        [
            Op(
                "FULLY_CONNECTED",
                [0, 1, 2],
                [3],
                options={"fused_activation_function": "RELU_N1_TO_1", "keep_num_dims": keep},
            )
        ],
        inputs=[0, 1],
        outputs=[3],
    )
    tfl.check(tfl.crafted(blob), "FULLY_CONNECTED")

"""SCATTER_ND, DYNAMIC_UPDATE_SLICE, MATRIX_DIAG, MATRIX_SET_DIAG and REVERSE_SEQUENCE, as TF 2.21
converts tf.scatter_nd / tf.tensor_scatter_nd_update, XLA's dynamic_update_slice (what
keras.ops.slice_update traces to), tf.linalg.diag / set_diag and tf.reverse_sequence."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.compiler.tf2xla.python.xla import dynamic_update_slice

RNG = np.random.default_rng(9)


def _index(x, n):
    # indices computed from the input: in [0, n), and changing with it
    return tf.cast(tf.floor((x + 1.0) * (n / 2.0)), tf.int32)


SCATTER_ND = {
    "rows-constant-indices": (lambda u: tf.scatter_nd([[0], [3], [1]], u, [5, 3]), [[3, 3]]),
    "elements-repeated-indices-sum": (
        lambda u: tf.scatter_nd([[0, 1], [2, 2], [0, 1], [1, 0]], u, [3, 4]),
        [[4]],
    ),
    "computed-indices": (lambda x, u: tf.scatter_nd(_index(x, 6)[:, None], u, [6, 2]), [[3], [3, 2]]),
    "indices-from-an-int-input": (
        lambda i, u: tf.scatter_nd(i[:, None], u, [6, 2]),
        [([3], tf.int32), [3, 2]],
    ),
    "computed-indices-constant-updates": (
        lambda x: tf.scatter_nd(
            tf.stack([_index(x[:, 0], 4), _index(x[:, 1], 3)], 1),
            tf.constant([1.5, -2.0, 3.25], tf.float32),
            [4, 3],
        ),
        [[3, 2]],
    ),
    # tensor_scatter_nd_update: SCATTER_ND of the constant mask (folded) and of the updates
    "tensor-scatter-nd-update": (
        lambda x, u: tf.tensor_scatter_nd_update(x, [[0], [2]], u),
        [[4, 3], [2, 3]],
    ),
}


@pytest.mark.parametrize("case", SCATTER_ND)
def test_scatter_nd(tfl, case):
    fn, specs = SCATTER_ND[case]
    tfl.check(tfl.function(fn, *specs), "SCATTER_ND")


DUS = {
    "constant-start": (lambda x, u: dynamic_update_slice(x, u, tf.constant([1, 2])), [[4, 5], [2, 2]]),
    "constant-start-clamped": (
        lambda x, u: dynamic_update_slice(x, u, tf.constant([3, -2])),
        [[4, 5], [2, 2]],
    ),
    "computed-start": (
        lambda x, u, s: dynamic_update_slice(x, u * 2.0, _index(s, 5) - 1),
        [[4, 5], [2, 3], [2]],
    ),
    "kv-cache-rank4": (
        lambda c, u, s: dynamic_update_slice(c, u, tf.stack([0, _index(s, 8)[0], 0, 0])),
        [[1, 8, 2, 4], [1, 1, 2, 4], [1]],
    ),
    "constant-operand": (
        lambda u, s: dynamic_update_slice(
            tf.constant(RNG.normal(size=(6, 3)).astype(np.float32)), u, tf.stack([_index(s, 5)[0], 0])
        ),
        [[2, 3], [1]],
    ),
    "int64-start": (lambda x, u: dynamic_update_slice(x, u, tf.constant([0, 1], tf.int64)), [[3, 4], [3, 2]]),
}


@pytest.mark.parametrize("case", DUS)
def test_dynamic_update_slice(tfl, case):
    fn, specs = DUS[case]
    tfl.check(tfl.function(fn, *specs), "DYNAMIC_UPDATE_SLICE")


@pytest.mark.parametrize("shape", [[4], [2, 3]], ids=["vector", "batched"])
def test_matrix_diag(tfl, shape):
    tfl.check(tfl.function(lambda x: tf.linalg.diag(x * 2.0), shape), "MATRIX_DIAG")


SET_DIAG = {
    "square": (lambda x, d: tf.linalg.set_diag(x, d), [[2, 4, 4], [2, 4]]),
    "tall": (lambda x, d: tf.linalg.set_diag(x, d), [[5, 3], [3]]),
    "wide": (lambda x, d: tf.linalg.set_diag(x, d), [[2, 3, 5], [2, 3]]),
    "constant-diagonal": (
        lambda x: tf.linalg.set_diag(x, tf.constant([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]])),
        [[2, 3, 3]],
    ),
}


@pytest.mark.parametrize("case", SET_DIAG)
def test_matrix_set_diag(tfl, case):
    fn, specs = SET_DIAG[case]
    tfl.check(tfl.function(fn, *specs), "MATRIX_SET_DIAG")


REVERSE_SEQUENCE = {
    "batch0-seq1": (lambda x: tf.reverse_sequence(x, [1, 4, 2], seq_axis=1, batch_axis=0), [[3, 4, 2]]),
    "seq0-batch1": (lambda x: tf.reverse_sequence(x, [3, 0, 5, 2], seq_axis=0, batch_axis=1), [[5, 4, 2]]),
    "batch2-seq1-rank4": (lambda x: tf.reverse_sequence(x, [2, 3], seq_axis=1, batch_axis=2), [[2, 3, 2, 4]]),
    "computed-lengths": (
        lambda x, n: tf.reverse_sequence(x, _index(n, 5), seq_axis=1, batch_axis=0),
        [[3, 4, 2], [3]],
    ),
}


@pytest.mark.parametrize("case", REVERSE_SEQUENCE)
def test_reverse_sequence(tfl, case):
    fn, specs = REVERSE_SEQUENCE[case]
    tfl.check(tfl.function(fn, *specs), "REVERSE_SEQUENCE")


CORE_ML = {
    "scatter-nd": (SCATTER_ND["computed-indices"], "SCATTER_ND"),
    "tensor-scatter-nd-update": (SCATTER_ND["tensor-scatter-nd-update"], "SCATTER_ND"),
    "dynamic-update-slice": (DUS["computed-start"], "DYNAMIC_UPDATE_SLICE"),
    "matrix-diag": ((lambda x: tf.linalg.diag(x * 2.0), [[2, 3]]), "MATRIX_DIAG"),
    "matrix-set-diag": (SET_DIAG["wide"], "MATRIX_SET_DIAG"),
    "reverse-sequence": (REVERSE_SEQUENCE["computed-lengths"], "REVERSE_SEQUENCE"),
}


@pytest.mark.parametrize("case", CORE_ML)
def test_core_ml(tfl, case):
    (fn, specs), op = CORE_ML[case]
    tfl.core_ml(tfl.function(fn, *specs), op)


SPARSE_TO_DENSE = {
    "constant-indices": (
        lambda v: tf.raw_ops.SparseToDense(
            sparse_indices=[[0, 1], [2, 3], [1, 0]],
            output_shape=[3, 4],
            sparse_values=v * 2.0,
            default_value=0.5,
        ),
        [[3]],
    ),
    "vector-scalar-value": (
        lambda x: (
            tf.raw_ops.SparseToDense(
                sparse_indices=_index(x, 6),
                output_shape=[6],
                sparse_values=1.0,
                default_value=0.0,
                validate_indices=False,
            )
            * tf.reduce_sum(x)
        ),
        [[2]],
    ),
    "computed-indices-and-values": (
        lambda x, v: tf.raw_ops.SparseToDense(
            sparse_indices=tf.stack([tf.range(2), _index(x, 4)], 1),
            output_shape=[2, 4],
            sparse_values=v,
            default_value=-1.0,
        ),
        [[2], [2]],
    ),
}


@pytest.mark.parametrize("case", SPARSE_TO_DENSE)
def test_sparse_to_dense(tfl, case):
    fn, specs = SPARSE_TO_DENSE[case]
    tfl.check(tfl.function(fn, *specs), "SPARSE_TO_DENSE")


def test_sparse_to_dense_core_ml(tfl):
    fn, specs = SPARSE_TO_DENSE["computed-indices-and-values"]
    tfl.core_ml(tfl.function(fn, *specs), "SPARSE_TO_DENSE")


def test_constant_sparse_to_dense_folds(tfl):
    """All inputs constant (the converter folds these itself, so the model is crafted): passes fold
    the op to its dense value (a repeated index keeps the last value, as the kernel) and the ADD reads it."""
    from flatbuf import Op, T, build_model

    tensors = [
        T("x", [3, 4]),
        T("indices", [3, 2], "int32", data=np.array([[0, 1], [2, 3], [0, 1]], np.int32)),
        T("shape", [2], "int32", data=np.array([3, 4], np.int32)),
        T("values", [3], data=np.array([1.5, -2.0, 4.0], np.float32)),
        T("default", [], data=np.array(0.25, np.float32)),
        T("dense", [3, 4]),
        T("y", [3, 4]),
    ]
    ops = [
        Op("SPARSE_TO_DENSE", [1, 2, 3, 4], [5], options_type="SparseToDenseOptions"),
        Op("ADD", [0, 5], [6], options={"fused_activation_function": "NONE"}),
    ]
    path = tfl.tmp_path / "sparse_to_dense.tflite"
    path.write_bytes(build_model(tensors, ops, inputs=[0], outputs=[6]))
    tfl.check(path, "SPARSE_TO_DENSE")

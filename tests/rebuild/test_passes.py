"""rebuild/passes: constant and static-shape folding, and the dilated-convolution fusion.

Dynamic-shape exports leave SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE chains behind; where every
shape involved is static they must fold away, so the generated code reads as plain layers (and
still matches TFLite). Where a shape is truly dynamic they must stay.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from flatbuf import Op, T, build_model

from tfl_rebuild.rebuild.passes.pipeline import prepare
from tfl_rebuild.tflite.reader import read_model


@pytest.fixture
def tfl(tmp_path):
    from ops.conftest import OpCheck

    return OpCheck(tmp_path)


@pytest.fixture(autouse=True)
def _seeded():
    import keras

    keras.utils.set_random_seed(0)


def _source(tfl) -> str:
    return next((tfl.tmp_path / "gen").glob("*.py")).read_text()


SHAPE_LAYERS = ("ShapeOf(", "Stack(", "Slice(", "Gather(", "Reduce(", "Concat(")


def test_flatten_of_dynamic_batch_reads_as_flatten(tfl):
    path = tfl.function(lambda x: tf.reshape(x, [tf.shape(x)[0], -1]) * 2.0, [None, 3, 4])
    assert [o.opcode for o in read_model(str(path)).main.operators][:3] == ["SHAPE", "STRIDED_SLICE", "PACK"]
    tfl.check(path, "SHAPE")
    source = _source(tfl)
    assert "keras.layers.Flatten(" in source  # a reshape to [batch, -1]
    assert not [s for s in SHAPE_LAYERS if s in source], source


def test_keras_dense_on_3d_dynamic_batch(tfl):
    # Keras writes Dense on a 3-D input as SHAPE/GATHER/REDUCE_PROD/PACK/CONCATENATION -> RESHAPE.
    import keras

    model = keras.Sequential([keras.Input((5, 6)), keras.layers.Dense(4), keras.layers.Activation("tanh")])
    path = tfl.keras(model)
    ops = [o.opcode for o in read_model(str(path)).main.operators]
    assert {"SHAPE", "GATHER", "REDUCE_PROD", "PACK", "CONCATENATION"} <= set(ops), ops
    tfl.check(path, "FULLY_CONNECTED")
    source = _source(tfl)
    assert not [s for s in SHAPE_LAYERS if s in source], source


def test_keras_cnn_flatten_dynamic_batch(tfl):
    # Keras' Flatten reads the batch with ops.shape: SHAPE of a pooled conv output, whose stored
    # batch is a placeholder; conv and pooling keep the batch of their input, so it folds.
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
        ]
    )
    path = tfl.keras(model)
    assert "SHAPE" in [o.opcode for o in read_model(str(path)).main.operators]
    tfl.check(path, "RESHAPE")
    source = _source(tfl)
    assert "keras.layers.Reshape(" in source or "keras.layers.Flatten(" in source
    assert not [s for s in SHAPE_LAYERS if s in source], source


def test_shape_arithmetic_chain(tfl):
    def fn(x):
        s = tf.shape(x)
        return tf.reshape(x, tf.stack([s[0] * s[1], s[2] // 2, 2])) + 1.0

    path = tfl.function(fn, [None, 3, 4])
    tfl.check(path, "SHAPE")
    assert "ShapeOf(" not in _source(tfl)


def _reshape_then_shape(tmp_path, first: str):
    """x [-1, 8] -> `first` (RESHAPE to [-1, 4], or TRANSPOSE) -> SHAPE -> RESHAPE."""
    const = np.array([-1, 4] if first == "RESHAPE" else [1, 0], np.int32)
    stored = [1, 4] if first == "RESHAPE" else [1, 1]  # what a converter leaves as placeholder
    tensors = [
        T("x", [1, 8], shape_signature=[-1, 8]),
        T("operand", [2], "int32", data=const),
        T("mid", stored, shape_signature=[-1, 4] if first == "RESHAPE" else [-1, -1]),
        T("shape", [2], "int32"),
        T("y", stored, shape_signature=[-1, -1]),
    ]
    ops = [
        Op(first, [0, 1], [2]),
        Op("SHAPE", [2], [3], options={"out_type": 2}, options_type="ShapeOptions"),
        Op("RESHAPE", [2, 3], [4]),
    ]
    path = tmp_path / "m.tflite"
    path.write_bytes(build_model(tensors, ops, inputs=[0], outputs=[4]))
    return prepare(read_model(str(path)))


def test_shape_of_dynamic_intermediate_is_not_folded(tmp_path):
    """Stored shapes of tensors with -1 in their signature are placeholders: not folded unless inferred."""
    ctx, remaining = _reshape_then_shape(tmp_path, "TRANSPOSE")
    assert [o.opcode for o in remaining] == ["TRANSPOSE", "SHAPE", "RESHAPE"]
    assert 3 not in ctx.constants


def test_reshape_shape_is_inferred(tmp_path):
    """x [1, 8] reshaped to [-1, 4] is [2, 4], whatever placeholder the file stores."""
    ctx, remaining = _reshape_then_shape(tmp_path, "RESHAPE")
    assert [o.opcode for o in remaining] == ["RESHAPE", "RESHAPE"]
    assert ctx.shape(2) == (2, 4) and ctx.constants[3].tolist() == [2, 4] and ctx.shape(4) == (2, 4)


def test_shape_of_static_input_folds(tmp_path):
    tensors = [
        T("x", [1, 8], shape_signature=[-1, 8]),
        T("shape", [2], "int32"),
        T("begin", [1], "int32", data=np.array([1], np.int32)),
        T("end", [1], "int32", data=np.array([2], np.int32)),
        T("strides", [1], "int32", data=np.array([1], np.int32)),
        T("width", [], "int32"),
        T("two", [], "int32", data=np.array(2, np.int32)),
        T("half", [], "int32"),
        T("minus_one", [], "int32", data=np.array(-1, np.int32)),
        T("new_shape", [2], "int32"),
        T("y", [1, 2, 4], shape_signature=[-1, 2, 4]),
    ]
    ops = [
        Op("SHAPE", [0], [1], options={"out_type": 2}, options_type="ShapeOptions"),
        Op(
            "STRIDED_SLICE",
            [1, 2, 3, 4],
            [5],
            options={"shrink_axis_mask": 1},
            options_type="StridedSliceOptions",
        ),
        Op("FLOOR_DIV", [5, 6], [7]),
        Op("PACK", [8, 7], [9], options={"axis": 0, "values_count": 2}, options_type="PackOptions"),
        Op("RESHAPE", [0, 9], [10]),
    ]
    path = tmp_path / "m.tflite"
    path.write_bytes(build_model(tensors, ops, inputs=[0], outputs=[10]))
    ctx, remaining = prepare(read_model(str(path)))
    assert [o.opcode for o in remaining] == ["RESHAPE"]
    assert (
        ctx.constants[1].tolist() == [1, 8]
        and int(ctx.constants[7]) == 4
        and ctx.constants[9].tolist() == [-1, 4]
    )


def test_model_output_is_never_folded(tmp_path):
    tensors = [T("x", [1, 3]), T("shape", [2], "int32")]
    path = tmp_path / "m.tflite"
    path.write_bytes(
        build_model(
            tensors,
            [Op("SHAPE", [0], [1], options={"out_type": 2}, options_type="ShapeOptions")],
            inputs=[0],
            outputs=[1],
        )
    )
    _, remaining = prepare(read_model(str(path)))
    assert [o.opcode for o in remaining] == ["SHAPE"]


def test_reshape_read_only_by_a_folded_shape_is_dropped(tmp_path):
    # x -> RESHAPE [-1, 4] -> SHAPE -> (folded); y = RESHAPE(x, that shape): the first reshape has no reader left.
    tensors = [
        T("x", [1, 8]),
        T("operand", [2], "int32", data=np.array([-1, 4], np.int32)),
        T("mid", [2, 4]),
        T("shape", [2], "int32"),
        T("y", [2, 4]),
    ]
    ops = [
        Op("RESHAPE", [0, 1], [2]),
        Op("SHAPE", [2], [3], options={"out_type": 2}, options_type="ShapeOptions"),
        Op("RESHAPE", [0, 3], [4]),
    ]
    path = tmp_path / "m.tflite"
    path.write_bytes(build_model(tensors, ops, inputs=[0], outputs=[4]))
    _, remaining = prepare(read_model(str(path)))
    assert [(o.opcode, o.outputs) for o in remaining] == [("RESHAPE", (4,))]


@pytest.mark.parametrize("frame, step, n", [(64, 32, 256), (1024, 280, 144000)])
def test_stft_of_dynamic_batch_folds(tfl, frame, step, n):
    """tf.signal.frame on a dynamic batch splits SHAPE's vector (SPLIT_V), reshapes a piece to a
    scalar through an empty shape constant (no buffer bytes), and builds gather indices of frames x
    frame length (511 x 1024 at BirdNET's size, past the old fold limit): all of it folds."""
    path = tfl.function(lambda x: tf.abs(tf.signal.stft(x, frame, step, frame)), [None, n])
    tfl.check(path, "SPLIT_V")
    source = _source(tfl)  # the frames' Slice and Gather of the signal stay: they are data
    assert not any(layer in source for layer in ("ShapeOf(", "Stack(", "Concat(")), (
        "the shape chain did not fold"
    )


@pytest.mark.parametrize(
    "opcode, inputs, options, want",
    [
        (
            "SPLIT",
            [np.array(1, np.int32), np.arange(6).reshape(1, 6)],
            {"num_splits": 3},
            [[[0, 1]], [[2, 3]], [[4, 5]]],
        ),
        (
            "SPLIT_V",
            [np.array([1, 144000], np.int32), np.array([1, 1, -1], np.int32), np.array(0, np.int32)],
            {},
            [[1], [144000], []],
        ),
        ("UNPACK", [np.array([[1, 2], [3, 4]], np.int32)], {"axis": 1, "num": 2}, [[1, 3], [2, 4]]),
    ],
)
def test_multi_output_ops_of_constants_evaluate(opcode, inputs, options, want):
    from tfl_rebuild.rebuild.passes.fold import evaluate_multi
    from tfl_rebuild.tflite.ir import Operator

    op = Operator(index=0, opcode=opcode, version=1, inputs=(), outputs=(), options=options)
    got = evaluate_multi(op, inputs, ["int32"] * len(want))
    assert [g.tolist() for g in got] == want


def _rank6_shared_perm_dense(x):
    """Swin as TF 2.21 writes it: windows of rank 6 through a Dense on the last axis, two window
    transposes sharing one permutation constant, and a slice out of a rank-6 view."""

    def windows(t):
        return tf.transpose(tf.reshape(t, [1, 2, 2, 4, 2, 3]), [0, 1, 3, 2, 4, 5])

    w = np.random.default_rng(5).normal(size=(3, 9)).astype(np.float32)
    a = tf.reshape(tf.matmul(windows(x), w), [8, 2, 2, 9])
    b = tf.reshape(windows(x * 2.0), [8, 2, 2, 3])
    c = tf.reshape(x, [1, 4, 1, 8, 1, 3])[0, 3, :, :, 0, 2] * 2.0
    return a, b, c


def test_rank6_regions_lose_their_unit_batch_through_dense_shared_perm_and_slice(tmp_path):
    """Core ML takes rank <= 5 (passes.unit_batch): no tensor the ops read or write stays rank 6."""
    fn = tf.function(_rank6_shared_perm_dense, input_signature=[tf.TensorSpec([1, 4, 8, 3])])
    path = tmp_path / "rank6.tflite"
    path.write_bytes(
        tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert()
    )
    ctx, ops = prepare(read_model(str(path)))
    assert {"FULLY_CONNECTED", "STRIDED_SLICE", "TRANSPOSE"} <= {op.opcode for op in ops}
    ranks = {ctx.rank(t) for op in ops for t in (*op.inputs, *op.outputs) if t >= 0 and not ctx.is_const(t)}
    assert max(ranks) <= 5, ranks

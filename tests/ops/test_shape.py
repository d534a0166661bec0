"""Shape and layout ops: RESHAPE, SQUEEZE, EXPAND_DIMS, TRANSPOSE, CONCATENATION, PAD, PADV2,
MIRROR_PAD, SLICE, STRIDED_SLICE."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

X = [1, 4, 3, 2]


@pytest.mark.parametrize("shape", [[1, 12, 2], [1, 24], [2, 12], [4, 6], [24]],
                         ids=["keep-batch", "flatten", "move-batch", "split-batch", "rank-1"])
def test_reshape(tfl, shape):
    tfl.check(tfl.function(lambda x: tf.reshape(x, shape), X), "RESHAPE")


@pytest.mark.parametrize("axis", [[1], []], ids=["axis-1", "all"])
def test_squeeze(tfl, axis):
    # Static shapes turn SQUEEZE into RESHAPE; a dynamic first and last axis keep it.
    tfl.check(tfl.function(lambda x: tf.squeeze(x, axis), [None, 1, None]), "SQUEEZE")


@pytest.mark.parametrize("axis", [1, -1, 0], ids=["axis-1", "axis-last", "axis-0"])
def test_expand_dims(tfl, axis):
    tfl.check(tfl.function(lambda x: tf.expand_dims(x, axis), [None, 3, 2]), "EXPAND_DIMS")


@pytest.mark.parametrize("perm", [[0, 3, 1, 2], [0, 2, 1, 3], [3, 1, 2, 0], [1, 0, 2, 3]],
                         ids=["nhwc-nchw", "swap-hw", "swap-batch", "batch-second"])
def test_transpose(tfl, perm):
    # Batch 2: moving a size-1 axis would be a RESHAPE.
    tfl.check(tfl.function(lambda x: tf.transpose(x, perm), [2, 4, 3, 2]), "TRANSPOSE")


def test_transpose_2d(tfl):
    tfl.check(tfl.function(tf.transpose, [3, 5]), "TRANSPOSE")


C = np.arange(24, dtype=np.float32).reshape(X) / 10 - 1


@pytest.mark.parametrize("axis", [3, 1, -1, 0], ids=["channels", "height", "last", "batch"])
def test_concatenation(tfl, axis):
    tfl.check(tfl.function(lambda a, b: tf.concat([a, b * 2.0, a], axis), X, X), "CONCATENATION")


@pytest.mark.parametrize("layout", ["ic", "ci", "ici"])
def test_concatenation_constant(tfl, layout):
    def fn(a):
        return tf.concat([a if k == "i" else C for k in layout], axis=2)

    tfl.check(tfl.function(fn, X), "CONCATENATION")


PADS = {
    "hw": [[0, 0], [1, 2], [2, 1], [0, 0]],
    "channels": [[0, 0], [0, 0], [0, 0], [1, 1]],
    "all-axes": [[1, 0], [1, 1], [0, 2], [1, 0]],
}


@pytest.mark.parametrize("pads", PADS)
def test_pad(tfl, pads):
    tfl.check(tfl.function(lambda x: tf.pad(x, PADS[pads]), X), "PAD")


@pytest.mark.parametrize("pads", PADS)
def test_padv2(tfl, pads):
    tfl.check(tfl.function(lambda x: tf.pad(x, PADS[pads], constant_values=1.5), X), "PADV2")


@pytest.mark.parametrize("pads", ["hw", "channels"])
@pytest.mark.parametrize("mode", ["REFLECT", "SYMMETRIC"])
def test_mirror_pad(tfl, mode, pads):
    tfl.check(tfl.function(lambda x: tf.pad(x, PADS[pads], mode=mode), X), "MIRROR_PAD")


SLICES = {
    "begin-size": ([0, 1, 0, 0], [1, 2, 3, 2]),
    "size-minus-1": ([0, 1, 1, 1], [-1, -1, -1, -1]),
    "channel": ([0, 0, 0, 1], [1, 4, 3, 1]),
}


@pytest.mark.parametrize("case", SLICES)
def test_slice(tfl, case):
    begin, size = SLICES[case]
    tfl.check(tfl.function(lambda x: tf.slice(x, begin, size), X), "SLICE")


STRIDED = {
    "range": lambda x: x[:, 1:3],
    "step-2": lambda x: x[:, ::2, 1:],
    "negative-step": lambda x: x[:, ::-1],
    "negative-step-bounds": lambda x: x[:, 2::-2, :, ::-1],
    "negative-begin": lambda x: x[:, -3:-1, -2:],
    "shrink": lambda x: x[:, 1],
    "shrink-last": lambda x: x[..., -1],
    "shrink-two": lambda x: x[0, :, 2],
    "channel-range": lambda x: x[:, :, :, 1:2],
}


@pytest.mark.parametrize("case", STRIDED)
def test_strided_slice(tfl, case):
    tfl.check(tfl.function(STRIDED[case], X), "STRIDED_SLICE")


def test_strided_slice_offset(tfl):
    # `offset`: end is relative to begin (what tf.slice with dynamic begins lowers to); crafted.
    from flatbuf import Op, T, build_model

    blob = build_model(
        [T("x", X), T("b", [4], "int32", data=np.array([0, 1, 0, 1], np.int32)),
         T("e", [4], "int32", data=np.array([1, 2, 3, 1], np.int32)),
         T("s", [4], "int32", data=np.array([1, 1, 1, 1], np.int32)), T("y", [1, 2, 3, 1])],
        [Op("STRIDED_SLICE", [0, 1, 2, 3], [4], options={"offset": True}, options_type="StridedSliceOptions")],
        inputs=[0], outputs=[4])
    tfl.check(tfl.crafted(blob), "STRIDED_SLICE")

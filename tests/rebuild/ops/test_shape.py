"""Shape and layout ops: RESHAPE, SQUEEZE, EXPAND_DIMS, TRANSPOSE, CONCATENATION, PAD, PADV2,
MIRROR_PAD, SLICE, STRIDED_SLICE."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from flatbuf import Op, T, build_model

X = [1, 4, 3, 2]


@pytest.mark.parametrize(
    "shape",
    [[1, 12, 2], [1, 24], [2, 12], [4, 6], [24]],
    ids=["keep-batch", "flatten", "move-batch", "split-batch", "rank-1"],
)
def test_reshape(tfl, shape):
    tfl.check(tfl.function(lambda x: tf.reshape(x, shape), X), "RESHAPE")


@pytest.mark.parametrize("axis", [[1], []], ids=["axis-1", "all"])
def test_squeeze(tfl, axis):
    # Static shapes turn SQUEEZE into RESHAPE; a dynamic first and last axis keep it.
    tfl.check(tfl.function(lambda x: tf.squeeze(x, axis), [None, 1, None]), "SQUEEZE")


@pytest.mark.parametrize("axis", [1, -1, 0], ids=["axis-1", "axis-last", "axis-0"])
def test_expand_dims(tfl, axis):
    tfl.check(tfl.function(lambda x: tf.expand_dims(x, axis), [None, 3, 2]), "EXPAND_DIMS")


@pytest.mark.parametrize(
    "perm",
    [[0, 3, 1, 2], [0, 2, 1, 3], [3, 1, 2, 0], [1, 0, 2, 3]],
    ids=["nhwc-nchw", "swap-hw", "swap-batch", "batch-second"],
)
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


def test_padv2_minus_inf_then_max_pool(tfl):
    """PyTorch's MaxPool2d(3, 2, padding=1) as ai-edge-torch writes it: PADV2 by -inf, then a
    VALID max pool. TensorFlow's converter writes -FLT_MAX instead, so the model is crafted (the
    -inf could not be written into the generated code)."""
    pool = {"padding": "VALID", "stride_w": 2, "stride_h": 2, "filter_width": 3, "filter_height": 3}
    blob = build_model(
        [
            T("x", [1, 9, 8, 3]),
            T("pads", [4, 2], "int32", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)),
            T("minus_inf", [], data=np.array(-np.inf, np.float32)),
            T("padded", [1, 11, 10, 3]),
            T("y", [1, 5, 4, 3]),
        ],
        [Op("PADV2", [0, 1, 2], [3], options_type="PadV2Options"), Op("MAX_POOL_2D", [3], [4], options=pool)],
        inputs=[0],
        outputs=[4],
    )
    tfl.check(tfl.crafted(blob), "PADV2")


@pytest.mark.parametrize("pads", ["hw", "channels"])
@pytest.mark.parametrize("mode", ["REFLECT", "SYMMETRIC"])
def test_mirror_pad(tfl, mode, pads):
    tfl.check(tfl.function(lambda x: tf.pad(x, PADS[pads], mode=mode), X), "MIRROR_PAD")


@pytest.mark.parametrize(
    "pads",
    [[[0, 0], [1, 1], [1, 1], [0, 0]], [[0, 0], [2, 0], [1, 3], [0, 0]]],
    ids=["replicate-by-1", "uneven"],
)
@pytest.mark.parametrize("mode", ["REFLECT", "SYMMETRIC"])
def test_mirror_pad_core_ml(tfl, mode, pads):
    """coremltools converts a SYMMETRIC tf.pad as REFLECT (rel 1.29 on a replicate-by-1 pad, the
    form PyTorch's replication padding takes through ai-edge-torch)."""
    tfl.core_ml(tfl.function(lambda x: tf.pad(x + 0.5, pads, mode=mode), [1, 5, 6, 3]), "MIRROR_PAD")


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
        [
            T("x", X),
            T("b", [4], "int32", data=np.array([0, 1, 0, 1], np.int32)),
            T("e", [4], "int32", data=np.array([1, 2, 3, 1], np.int32)),
            T("s", [4], "int32", data=np.array([1, 1, 1, 1], np.int32)),
            T("y", [1, 2, 3, 1]),
        ],
        [
            Op(
                "STRIDED_SLICE",
                [0, 1, 2, 3],
                [4],
                options={"offset": True},
                options_type="StridedSliceOptions",
            )
        ],
        inputs=[0],
        outputs=[4],
    )
    tfl.check(tfl.crafted(blob), "STRIDED_SLICE")


SPACE_TO_BATCH = {
    "2x2": ([2, 2], [[0, 0], [0, 0]], [1, 4, 6, 3]),
    "2x2-padded": ([2, 2], [[1, 1], [0, 2]], [1, 6, 4, 2]),
    "3x1-batch-2": ([3, 1], [[1, 2], [0, 0]], [2, 6, 4, 2]),
    "1-spatial-axis": ([2], [[1, 1]], [1, 6, 3]),
}


@pytest.mark.parametrize("case", SPACE_TO_BATCH)
def test_space_to_batch_nd(tfl, case):
    block, pads, shape = SPACE_TO_BATCH[case]
    tfl.check(tfl.function(lambda x: tf.space_to_batch_nd(x, block, pads), shape), "SPACE_TO_BATCH_ND")


BATCH_TO_SPACE = {
    "2x2": ([2, 2], [[0, 0], [0, 0]], [4, 3, 4, 2]),
    "2x2-cropped": ([2, 2], [[0, 1], [1, 1]], [4, 3, 4, 2]),
    "3x1-batch-2": ([3, 1], [[1, 0], [0, 0]], [6, 2, 4, 2]),
    "1-spatial-axis": ([2], [[1, 0]], [2, 4, 3]),
}


@pytest.mark.parametrize("case", BATCH_TO_SPACE)
def test_batch_to_space_nd(tfl, case):
    block, crops, shape = BATCH_TO_SPACE[case]
    tfl.check(tfl.function(lambda x: tf.batch_to_space(x, block, crops), shape), "BATCH_TO_SPACE_ND")


def _dilated_conv_model(kind: str, padding: str, rate: int, pads, crops, shape=(1, 9, 9, 2)) -> bytes:
    """SPACE_TO_BATCH_ND -> CONV_2D / DEPTHWISE_CONV_2D (VALID) -> BATCH_TO_SPACE_ND, as TF1 wrote
    atrous convolutions; `pads` / `crops` decide which padding the whole equals."""
    from flatbuf import Op, T, build_model

    rng = np.random.default_rng(7)
    n, h, w, c = shape
    ph, pw = (h + sum(pads[0])) // rate, (w + sum(pads[1])) // rate
    oh, ow = ph - 2, pw - 2  # 3x3 kernel, VALID on each phase
    out_h, out_w = oh * rate - sum(crops[0]), ow * rate - sum(crops[1])
    if kind == "CONV_2D":
        cout, kernel = 3, rng.normal(size=(3, 3, 3, c)).astype(np.float32)
        opts_type, extra = "Conv2DOptions", {}
    else:
        cout, kernel = c, rng.normal(size=(1, 3, 3, c)).astype(np.float32)
        opts_type, extra = "DepthwiseConv2DOptions", {"depth_multiplier": 1}
    i32 = np.int32
    tensors = [
        T("x", list(shape)),
        T("block", [2], "int32", data=np.array([rate, rate], i32)),
        T("pads", [2, 2], "int32", data=np.array(pads, i32)),
        T("phases", [n * rate * rate, ph, pw, c]),
        T("kernel", list(kernel.shape), data=kernel),
        T("bias", [cout], data=rng.normal(size=cout).astype(np.float32)),
        T("conv", [n * rate * rate, oh, ow, cout]),
        T("crops", [2, 2], "int32", data=np.array(crops, i32)),
        T("y", [n, out_h, out_w, cout]),
    ]
    conv_options = {
        "padding": "VALID",
        "stride_h": 1,
        "stride_w": 1,
        "fused_activation_function": "RELU",
        **extra,
    }
    ops = [
        Op("SPACE_TO_BATCH_ND", [0, 1, 2], [3]),
        Op(kind, [3, 4, 5], [6], options=conv_options, options_type=opts_type),
        Op("BATCH_TO_SPACE_ND", [6, 1, 7], [8]),
    ]
    return build_model(tensors, ops, inputs=[0], outputs=[8])


# (kind, padding the whole equals, rate, s2b paddings, b2s crops) for a 9x9 input and a 3x3 kernel
DILATED = {
    "conv-same-rate-2": ("CONV_2D", "same", 2, [[2, 3], [2, 3]], [[0, 1], [0, 1]]),
    "conv-valid-rate-2": ("CONV_2D", "valid", 2, [[0, 1], [0, 1]], [[0, 1], [0, 1]]),
    "conv-same-rate-3": ("CONV_2D", "same", 3, [[3, 3], [3, 3]], [[0, 0], [0, 0]]),
    "depthwise-same-rate-2": ("DEPTHWISE_CONV_2D", "same", 2, [[2, 3], [2, 3]], [[0, 1], [0, 1]]),
    "not-a-dilation": ("CONV_2D", None, 2, [[1, 2], [2, 3]], [[0, 1], [0, 1]]),
}


@pytest.mark.parametrize("case", DILATED)
def test_dilated_conv_pattern(tfl, case):
    kind, padding, rate, pads, crops = DILATED[case]
    path = tfl.crafted(_dilated_conv_model(kind, padding, rate, pads, crops))
    tfl.check(path, "SPACE_TO_BATCH_ND")
    source = next((tfl.tmp_path / "gen").glob("*.py")).read_text()
    layer = "Conv2D(" if kind == "CONV_2D" else "DepthwiseConv2D("
    if padding is None:  # shifted by one row: kept as the three ops, still exact
        assert "SpaceToBatch(" in source and "BatchToSpace(" in source
    else:
        assert "SpaceToBatch(" not in source and "BatchToSpace(" not in source
        assert layer in source and f"dilation_rate=({rate}, {rate})" in source
        assert (f'padding="{padding}"' in source) == (padding == "same")


# name -> (begin, end, strides, masks, numpy index of x [2, 3, 4]); crafted: TensorFlow's converter
# folds ellipsis and new-axis masks away, other producers leave them in.
MASKED_SLICES = {
    "ellipsis-first": ([0, 1], [0, 3], [1, 1], {"ellipsis_mask": 1}, (Ellipsis, slice(1, 3))),
    "ellipsis-middle": (
        [1, 0, 2],
        [2, 0, 4],
        [1, 1, 1],
        {"ellipsis_mask": 2},
        (slice(1, 2), Ellipsis, slice(2, 4)),
    ),
    "ellipsis-shrink": ([0, 1], [0, 2], [1, 1], {"ellipsis_mask": 1, "shrink_axis_mask": 2}, (Ellipsis, 1)),
    "new-axis": (
        [0, 0, 1],
        [0, 0, 3],
        [1, 1, 1],
        {"new_axis_mask": 2, "begin_mask": 1, "end_mask": 1},
        (slice(None), None, slice(1, 3)),
    ),
    "new-axis-first": ([0, 1], [0, 2], [1, 1], {"new_axis_mask": 1}, (None, slice(1, 2))),
    "ellipsis-new-axis": (
        [0, 0, 0],
        [0, 0, 4],
        [1, 1, 2],
        {"ellipsis_mask": 1, "new_axis_mask": 2},
        (Ellipsis, None, slice(0, 4, 2)),
    ),
}


@pytest.mark.parametrize("case", MASKED_SLICES)
def test_strided_slice_masks(tfl, case):
    from flatbuf import Op, T, build_model

    begin, end, strides, masks, index = MASKED_SLICES[case]
    out_shape = list(np.empty((2, 3, 4))[index].shape)
    n = len(begin)
    tensors = [
        T("x", [2, 3, 4]),
        T("begin", [n], "int32", data=np.array(begin, np.int32)),
        T("end", [n], "int32", data=np.array(end, np.int32)),
        T("strides", [n], "int32", data=np.array(strides, np.int32)),
        T("y", out_shape),
    ]
    op = Op("STRIDED_SLICE", [0, 1, 2, 3], [4], options=masks, options_type="StridedSliceOptions", version=8)
    tfl.check(tfl.crafted(build_model(tensors, [op], inputs=[0], outputs=[4])), "STRIDED_SLICE")


def _pixel_shuffle(x):  # PyTorch's PixelShuffle(2) as onnx2tf writes it for NHWC
    return tf.reshape(tf.transpose(tf.reshape(x, [1, 4, 5, 3, 2, 2]), [0, 1, 4, 2, 5, 3]), [1, 8, 10, 3])


def _upsample_by_broadcast(x):  # nearest x2 as reshape [1, H, 1, W, 1, C] * ones, transpose
    y = tf.reshape(x, [1, 4, 1, 5, 1, 3]) * tf.ones([1, 4, 2, 5, 2, 3]) + 0.5
    return tf.reshape(tf.transpose(y, [0, 5, 1, 2, 3, 4]), [1, 3, 8, 10])


def _window_partition(
    x,
):  # Swin: [1, H/2, 2, W/2, 2, C] -> windows [-1, 2, 2, C], concatenated on a region axis
    y = tf.transpose(tf.reshape(x, [1, 2, 2, 4, 2, 3]), [0, 1, 3, 2, 4, 5])
    return tf.reshape(tf.concat([y, y * 2.0], axis=5), [8, 2, 2, 6])


W_QKV = np.random.default_rng(5).normal(size=(3, 9)).astype(np.float32)


def _windows_through_dense(x):  # Swin as TF 2.21 writes it: a Dense on the 6-D windows, each
    # window's transpose sharing one permutation constant with the other
    def windows(t):
        return tf.transpose(tf.reshape(t, [1, 2, 2, 4, 2, 3]), [0, 1, 3, 2, 4, 5])

    a = tf.matmul(windows(x), W_QKV)
    b = windows(x * 2.0)
    return tf.reshape(a, [8, 2, 2, 9]), tf.reshape(b, [8, 2, 2, 3])


def _slice_out_of_rank6(x):  # x[0, 3, newaxis, ..., newaxis, 2] on a rank-6 view: shrinks axis 0
    return tf.reshape(x, [1, 4, 1, 5, 1, 6])[0, 3, :, :, 0, 2] * 2.0


@pytest.mark.parametrize(
    "fn, shape, opcode",
    [
        (_pixel_shuffle, [1, 4, 5, 12], "TRANSPOSE"),
        (_upsample_by_broadcast, [1, 4, 5, 3], "TRANSPOSE"),
        (_window_partition, [1, 4, 8, 3], "TRANSPOSE"),
        (_windows_through_dense, [1, 4, 8, 3], "FULLY_CONNECTED"),
        (_slice_out_of_rank6, [1, 4, 5, 6], "STRIDED_SLICE"),
    ],
    ids=["pixel-shuffle", "upsample-broadcast", "window-partition", "windows-dense", "slice-out"],
)
def test_rank6_core_ml(tfl, fn, shape, opcode):
    # Core ML takes rank <= 5: the rank-6 region is rebuilt without its unit batch axis.
    tfl.core_ml(tfl.function(fn, shape), opcode)


CROPPINGS = {
    "2d": (
        lambda: keras.layers.Cropping2D(((1, 0), (2, 1))),
        (6, 7, 3),
        "Cropping2D(cropping=((1,0),(2,1)),",
    ),
    "1d": (lambda: keras.layers.Cropping1D((2, 1)), (8, 3), "Cropping1D(cropping=(2,1),"),
    "3d": (
        lambda: keras.layers.Cropping3D(((1, 1), (0, 2), (1, 0))),
        (4, 5, 6, 2),
        "Cropping3D(cropping=((1,1),(0,2),(1,0)),",
    ),
}


@pytest.mark.parametrize("case", CROPPINGS)
def test_cropping(tfl, case):
    """A slice keeping the batch and channels whole is keras.layers.Cropping1D/2D/3D again."""
    make, shape, text = CROPPINGS[case]
    x = keras.Input(shape, batch_size=1)
    y = keras.layers.Dense(4)(make()(keras.layers.Dense(3)(x)))  # the slice between two layers
    tfl.check(tfl.keras(keras.Model(x, y)), "STRIDED_SLICE")
    (path,) = (tfl.tmp_path / "gen").glob("*.py")
    source = "".join(path.read_text(encoding="utf-8").split())
    assert f"keras.layers.{text}" in source and "Slice(" not in source, source

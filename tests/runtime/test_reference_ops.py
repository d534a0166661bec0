"""The numpy references of MediaPipe's ops (runtime/reference.py): against the real runtime where it has
the op (XNNPACK runs the pooling ops and Convolution2DTransposeBias), and against hand-derived cases
(identity and translation matrices, an axis-aligned or rotated landmark box) where it has not."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from flatbuffers import flexbuffers

sys.path.insert(0, str(Path(__file__).parents[1] / "rebuild" / "ops"))
from test_mediapipe import deconv_model, pool_model, pool_params, pool_unpool_model  # noqa: E402

from tfl_rebuild.runtime import interpreter as runtime  # noqa: E402
from tfl_rebuild.runtime import reference as ref  # noqa: E402
from tfl_rebuild.tflite import custom_options  # noqa: E402


def _xnnpack(blob: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    interp = runtime.make_interpreter(model_content=blob)
    assert type(interp).__name__ == "Interpreter", "XNNPACK should run this op itself"
    return runtime.run(interp, inputs)


# -- against the runtime ----------------------------------------------------------------------------


def test_max_pool_argmax_matches_xnnpack():
    x = np.random.default_rng(0).normal(size=(1, 8, 6, 5)).astype(np.float32)
    pooled, index = _xnnpack(pool_model((1, 8, 6, 5)), [x])
    want, want_index = ref.max_pool_argmax(x, custom_options.pool_options(pool_params(), "test"))
    np.testing.assert_array_equal(pooled, want)
    # XNNPACK keeps the window position as raw uint32 bits in the float tensor, column-major
    # (x * 2 + y); MediaPipe's kernel writes y * 2 + x as a float plus 0.1.
    xnn = index.view(np.uint32).astype(np.int64)
    k = np.floor(want_index).astype(np.int64)
    np.testing.assert_array_equal(np.stack([xnn % 2, xnn // 2]), np.stack([k // 2, k % 2]))
    np.testing.assert_allclose(want_index - np.floor(want_index), 0.1, atol=1e-6)


def test_max_unpooling_matches_xnnpack():
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 3)).astype(np.float32)
    (got,) = _xnnpack(pool_unpool_model(), [x])
    o = custom_options.pool_options(pool_params(), "test")
    want = ref.max_unpooling(*ref.max_pool_argmax(x, o), o)
    np.testing.assert_array_equal(got, want)
    assert np.count_nonzero(want) == want.size // 4  # one survivor per 2x2 window


@pytest.mark.parametrize("padding,stride", [("same", (2, 2)), ("valid", (1, 1)), ("same", (3, 2))])
def test_transpose_conv_bias_matches_xnnpack(padding, stride):
    from tfl_rebuild.tflite.reader import read_model

    blob = deconv_model(padding, stride)
    x = np.random.default_rng(2).normal(size=(1, 5, 5, 2)).astype(np.float32)
    (got,) = _xnnpack(blob, [x])
    sg = read_model(blob).main
    want = ref.transpose_conv_bias(x, sg.tensors[1].data, sg.tensors[2].data, padding, stride, got.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- hand-derived ---------------------------------------------------------------------------------------

IDENTITY = np.eye(4, dtype=np.float32)[None]


def _translation(tx: float, ty: float) -> np.ndarray:
    m = IDENTITY.copy()
    m[0, 0, 3], m[0, 1, 3] = tx, ty
    return m


@pytest.mark.parametrize("version", [1, 2])
def test_bilinear_identity_is_the_top_left_crop(version):
    x = np.random.default_rng(3).normal(size=(1, 7, 9, 2)).astype(np.float32)
    np.testing.assert_array_equal(ref.transform_tensor_bilinear(x, IDENTITY, (4, 5), version), x[:, :4, :5])


def test_bilinear_integer_shift_and_outside_pixels():
    x = np.arange(1, 1 + 6 * 6, dtype=np.float32).reshape(1, 6, 6, 1)
    out = ref.transform_tensor_bilinear(x, _translation(2, 1), (6, 6), 1)
    np.testing.assert_array_equal(out[0, :5, :4], x[0, 1:, 2:])  # shifted by (2, 1)
    assert not out[0, 5:].any() and not out[0, :, 4:].any()  # mapped past the last row/column: zero


def test_bilinear_half_pixel_is_the_mean_of_neighbours():
    x = np.random.default_rng(4).normal(size=(1, 4, 4, 3)).astype(np.float32)
    out = ref.transform_tensor_bilinear(x, _translation(0.5, 0.5), (3, 3), 1)
    want = (x[:, :3, :3] + x[:, :3, 1:] + x[:, 1:, :3] + x[:, 1:, 1:]) / 4
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_bilinear_v2_samples_pixel_centres():
    # v2: T -> S (T A), so a 2x downscale (diagonal 2) reads input (2x + 0.5, 2y + 0.5): 2x2 means.
    x = np.random.default_rng(5).normal(size=(1, 4, 4, 1)).astype(np.float32)
    m = IDENTITY.copy()
    m[0, 0, 0] = m[0, 1, 1] = 2
    out = ref.transform_tensor_bilinear(x, m, (2, 2), 2)
    want = x.reshape(1, 2, 2, 2, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_transform_landmarks_identity_translation_and_z():
    lm = np.random.default_rng(6).normal(size=(1, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(ref.transform_landmarks(lm, IDENTITY, 3), lm)
    moved = ref.transform_landmarks(lm, _translation(3, -2), 3, scale=0.5)
    np.testing.assert_allclose(moved, lm + np.array([1.5, -1.0, 0], np.float32), rtol=1e-6)


def _options(**kw) -> custom_options.TransformMatrixOptions:
    opts = {
        "left_rotation_idx": 0,
        "right_rotation_idx": 1,
        "target_rotation_radians": 0.0,
        "output_height": 6,
        "output_width": 10,
        "scale_x": 1.0,
        "scale_y": 1.0,
        "subset_idxs": [0, 1, 2, 3],
        **kw,
    }
    return custom_options.transform_matrix_options(flexbuffers.Dumps(opts), 2, 4, "test")


BOX = np.array([[0, 0, 1], [10, 0, 2], [10, 6, 3], [0, 6, 4]], np.float32)  # left, right, two more corners


def test_matrix_of_an_upright_box_of_the_output_size_is_identity():
    np.testing.assert_allclose(
        ref.landmarks_to_transform_matrix(BOX[None] + [0, 0, 0], _options()), IDENTITY, atol=1e-6
    )


def test_matrix_scale_and_centre():
    m = ref.landmarks_to_transform_matrix((BOX + [20, 30, 0])[None], _options(scale_x=2.0, scale_y=1.5))[0]
    # 2x wider and 1.5x taller crop around the box centre (25, 33).
    np.testing.assert_allclose(m[:2], [[2, 0, 0, 25 - 2 * 5], [0, 1.5, 0, 33 - 1.5 * 3]], atol=1e-5)


def test_matrix_of_a_rotated_box_maps_crop_corners_onto_it():
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    box = BOX.copy()
    box[:, :2] = BOX[:, :2] @ rot.T + [40, 50]
    m = ref.landmarks_to_transform_matrix(box[None], _options())
    crop_corners = np.array([[[0, 0], [10, 0], [10, 6], [0, 6]]], np.float32)
    np.testing.assert_allclose(ref.transform_landmarks(crop_corners, m, 2)[0], box[:, :2], atol=1e-4)


def test_matrix_v1_of_an_upright_box():
    opts = {
        "left_rotation_idx": 0,
        "right_rotation_idx": 1,
        "input_hw": [11, 11],
        "output_hw": [11, 11],
        "dimensions": 3,
        "landmarks_range": 10,
        "bbox_size_multiplier": 1.0,
        "subset": [0, 1, 2, 3],
    }
    o = custom_options.transform_matrix_options(flexbuffers.Dumps(opts), 1, 4, "test")
    # Box 10 x 6 landmark units, 10 units = 11 pixels both ways: x kept, y scaled by 0.6, no shift.
    want = np.diag([1.0, 0.6, 1.0, 1.0]).astype(np.float32)[None]
    np.testing.assert_allclose(
        ref.landmarks_to_transform_matrix_v1(BOX.reshape(1, 1, 1, 12), o), want, atol=1e-6
    )


# -- options ----------------------------------------------------------------------------------------------


def test_pool_options_decode_and_refuse():
    o = custom_options.pool_options(struct.pack("<6i", 1, 2, 3, 4, 5, 3), "op")
    assert o == custom_options.PoolOptions("same", (3, 2), (5, 4), "relu6")
    with pytest.raises(custom_options.OptionsError, match="24"):
        custom_options.pool_options(b"\x01\x00", "op")
    with pytest.raises(custom_options.OptionsError, match="bad pool options"):
        custom_options.pool_options(struct.pack("<6i", 7, 2, 2, 2, 2, 0), "op")


def test_flex_options_refuse_garbage():
    with pytest.raises(custom_options.OptionsError):
        custom_options.flex_options(b"\xff\x13\x07", "op")
    with pytest.raises(custom_options.OptionsError, match="not a map"):
        custom_options.flex_options(flexbuffers.Dumps([1, 2]), "op")


def test_odd_subset_pairs_the_last_index_with_itself():
    assert _options(subset_idxs=[0, 1, 2]).subset_idxs == ((0, 1), (2, 2))

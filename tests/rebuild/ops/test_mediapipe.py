"""MediaPipe custom ops: crafted .tflite files (tests/flatbuf.py) rebuilt and verified.

Where ai-edge-litert has the op (XNNPACK runs Convolution2DTransposeBias, MaxPoolingWithArgmax2D and
MaxUnpooling2D), `tfl.check` compares the rebuild with the real runtime; where it has not (the
transform ops), verification runs the model in segments with the op's numpy reference
(runtime/reference.py), whose own tests (tests/runtime/test_reference_ops.py) hold it to MediaPipe's kernels.
Each Keras layer is also compared with the numpy reference on inputs chosen to exercise it.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from flatbuf import Op, T, build_model
from flatbuffers import flexbuffers

from tfl_rebuild.runtime import reference as ref
from tfl_rebuild.tflite import custom_options  # noqa: E402


def pool_params(padding: str = "valid", stride=(2, 2), filter=(2, 2), activation: int = 0) -> bytes:
    """A packed TfLitePoolParams (+ its computed padding, zero), as MediaPipe's converter writes it."""
    return struct.pack(
        "<6i4i",
        {"same": 1, "valid": 2}[padding],
        stride[1],
        stride[0],
        filter[1],
        filter[0],
        activation,
        0,
        0,
        0,
        0,
    )


def bilinear_model(in_shape=(1, 8, 8, 3), out_hw=(4, 4), version: int = 2) -> bytes:
    opts = flexbuffers.Dumps({"output_height": out_hw[0], "output_width": out_hw[1]})
    return build_model(
        [T("image", list(in_shape)), T("matrix", [1, 4, 4]), T("crop", [1, *out_hw, in_shape[3]])],
        [
            Op(
                "CUSTOM",
                [0, 1],
                [2],
                custom_code="TransformTensorBilinear",
                custom_options=opts,
                version=version,
            )
        ],
        inputs=[0, 1],
        outputs=[2],
    )


def landmarks_model(shape=(1, 5, 2), version: int = 2, options: bytes = b"") -> bytes:
    return build_model(
        [T("landmarks", list(shape)), T("matrix", [1, 4, 4]), T("moved", list(shape))],
        [
            Op(
                "CUSTOM",
                [0, 1],
                [2],
                custom_code="TransformLandmarks",
                custom_options=options,
                version=version,
            )
        ],
        inputs=[0, 1],
        outputs=[2],
    )


MATRIX_OPTIONS = {
    "left_rotation_idx": 1,
    "right_rotation_idx": 4,
    "target_rotation_radians": 0.25,
    "output_height": 16,
    "output_width": 12,
    "scale_x": 1.5,
    "scale_y": 1.25,
    "subset_idxs": [0, 2, 3, 5, 6, 7, 8],
}


def matrix_model(n: int = 10, options: dict | None = None) -> bytes:
    opts = flexbuffers.Dumps(options or MATRIX_OPTIONS)
    return build_model(
        [T("landmarks", [1, n, 3]), T("matrix", [1, 4, 4])],
        [Op("CUSTOM", [0], [1], custom_code="Landmarks2TransformMatrix", custom_options=opts, version=2)],
        inputs=[0],
        outputs=[1],
    )


MATRIX_V1_OPTIONS = {
    "left_rotation_idx": 2,
    "right_rotation_idx": 5,
    "input_hw": [48, 40],
    "output_hw": [16, 12],
    "dimensions": 3,
    "landmarks_range": 192,
    "bbox_size_multiplier": 1.5,
    "subset": [0, 1, 3, 6, 7],
}


def matrix_v1_model(n: int = 8, options: dict | None = None) -> bytes:
    opts = flexbuffers.Dumps(options or MATRIX_V1_OPTIONS)
    return build_model(
        [T("landmarks", [1, 1, 1, 3 * n]), T("matrix", [1, 4, 4])],
        [Op("CUSTOM", [0], [1], custom_code="Landmarks2TransformMatrix", custom_options=opts, version=1)],
        inputs=[0],
        outputs=[1],
    )


def pool_model(shape=(1, 8, 8, 3), padding="valid", stride=(2, 2), filter=(2, 2), activation=0) -> bytes:
    """Pooling alone. XNNPACK runs the op when 2x2 windows tile the input, but stores the index as raw
    uint32 bits in the float tensor (not MediaPipe's float index + 0.1), and crashes when the indices
    are not a graph output: tests compare those cases in test_reference_ops.py."""
    oh = custom_options.pool_output_size(shape[1], filter[0], stride[0], padding)
    ow = custom_options.pool_output_size(shape[2], filter[1], stride[1], padding)
    out = [shape[0], oh, ow, shape[3]]
    return build_model(
        [T("x", list(shape)), T("pooled", out), T("argmax", out)],
        [
            Op(
                "CUSTOM",
                [0],
                [1, 2],
                custom_code="MaxPoolingWithArgmax2D",
                custom_options=pool_params(padding, stride, filter, activation),
            )
        ],
        inputs=[0],
        outputs=[1, 2],
    )


def pool_unpool_model(shape=(1, 8, 8, 3)) -> bytes:
    """x -> pool (2x2) -> unpool with its own indices: the SegNet pattern."""
    half = [shape[0], shape[1] // 2, shape[2] // 2, shape[3]]
    return build_model(
        [T("x", list(shape)), T("pooled", half), T("argmax", half), T("unpooled", list(shape))],
        [
            Op("CUSTOM", [0], [1, 2], custom_code="MaxPoolingWithArgmax2D", custom_options=pool_params()),
            Op("CUSTOM", [1, 2], [3], custom_code="MaxUnpooling2D", custom_options=pool_params()),
        ],
        inputs=[0],
        outputs=[3],
    )


def deconv_model(padding="same", stride=(2, 2)) -> bytes:
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.5, (4, 3, 3, 2)).astype(np.float32)  # [O, kh, kw, I]
    b = rng.normal(0, 0.5, 4).astype(np.float32)
    out = (
        [1, 5 * stride[0], 5 * stride[1], 4]
        if padding == "same"
        else [1, 4 * stride[0] + 3, 4 * stride[1] + 3, 4]
    )
    opts = struct.pack("<3i", {"same": 1, "valid": 2}[padding], stride[1], stride[0])
    return build_model(
        [T("x", [1, 5, 5, 2]), T("w", list(w.shape), data=w), T("b", [4], data=b), T("y", out)],
        [Op("CUSTOM", [0, 1, 2], [3], custom_code="Convolution2DTransposeBias", custom_options=opts)],
        inputs=[0],
        outputs=[3],
    )


# -- rebuild + verify (against the runtime where it has the op) ----------------------------------------


@pytest.mark.parametrize("padding,stride", [("same", (2, 2)), ("valid", (1, 1))], ids=["same-s2", "valid-s1"])
def test_convolution_2d_transpose_bias(tfl, padding, stride):
    tfl.check(tfl.crafted(deconv_model(padding, stride)), "Convolution2DTransposeBias")


@pytest.mark.parametrize(
    "padding,stride,filter,activation",
    [
        ("same", (2, 2), (3, 3), 0),
        ("same", (1, 1), (3, 3), 1),
        ("valid", (2, 1), (3, 2), 3),
    ],
    ids=["same-3x3-s2", "same-3x3-s1-relu", "valid-3x2-s2x1-relu6"],
)
def test_max_pooling_with_argmax_2d(tfl, padding, stride, filter, activation):
    tfl.check(
        tfl.crafted(pool_model((1, 9, 8, 3), padding, stride, filter, activation)), "MaxPoolingWithArgmax2D"
    )


def test_max_unpooling_2d(tfl):
    tfl.check(tfl.crafted(pool_unpool_model()), "MaxUnpooling2D")


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
def test_transform_tensor_bilinear(tfl, version):
    tfl.check(tfl.crafted(bilinear_model((1, 6, 7, 3), (5, 4), version)), "TransformTensorBilinear")


@pytest.mark.parametrize("shape", [(1, 5, 2), (1, 7, 3)], ids=["xy", "xyz"])
def test_transform_landmarks(tfl, shape):
    tfl.check(tfl.crafted(landmarks_model(shape)), "TransformLandmarks")


def test_transform_landmarks_v1(tfl):
    opts = flexbuffers.Dumps({"dimensions": 3, "scale": 0.5})
    tfl.check(tfl.crafted(landmarks_model((1, 1, 1, 12), version=1, options=opts)), "TransformLandmarks")


def test_landmarks_2_transform_matrix(tfl):
    tfl.check(tfl.crafted(matrix_model()), "Landmarks2TransformMatrix")


def test_landmarks_2_transform_matrix_v1(tfl):
    tfl.check(tfl.crafted(matrix_v1_model()), "Landmarks2TransformMatrix")


# -- the Keras layers against the numpy references, on chosen inputs -----------------------------------


def _layer_outputs(tmp_path, blob: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from tfl_rebuild.commands.pipeline import write_generated
    from tfl_rebuild.rebuild.loader import load_module, run_keras

    path = tmp_path / "model.tflite"
    path.write_bytes(blob)
    _, py, weights = write_generated(str(path), str(tmp_path / "gen"))
    return run_keras(load_module(py).build_model(str(weights)), inputs)


def _crop_matrix(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[[c, -s, 0, shift[0]], [s, c, 0, shift[1]], [0, 0, 1, 0], [0, 0, 0, 1]]], np.float32)


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
def test_transform_tensor_bilinear_layer_matches_reference(tmp_path, version):
    image = np.random.default_rng(0).normal(size=(1, 12, 10, 4)).astype(np.float32)
    # A rotated, scaled crop that lands partly outside the image: in-bounds, border and zero pixels.
    matrix = _crop_matrix(0.4, 0.8, (2.5, -1.0))
    got = _layer_outputs(tmp_path, bilinear_model((1, 12, 10, 4), (9, 11), version), [image, matrix])[0]
    want = ref.transform_tensor_bilinear(image, matrix, (9, 11), version)
    assert 0 < np.count_nonzero(want[..., 0]) < want[..., 0].size, "the crop must be partly outside"
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_landmarks_2_transform_matrix_layer_matches_reference(tmp_path):
    lm = np.random.default_rng(1).uniform(0, 200, (1, 10, 3)).astype(np.float32)
    got = _layer_outputs(tmp_path, matrix_model(), [lm])[0]
    o = custom_options.transform_matrix_options(flexbuffers.Dumps(MATRIX_OPTIONS), 2, 10, "test")
    np.testing.assert_allclose(got, ref.landmarks_to_transform_matrix(lm, o), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("flip", [False, True], ids=["left-of-right", "right-of-left"])
def test_landmarks_2_transform_matrix_v1_layer_matches_reference(tmp_path, flip):
    lm = np.random.default_rng(1).uniform(0, 192, (1, 1, 1, 24)).astype(np.float32)
    if flip:  # dx < 0: the arctan branch the layer handles with the sign of dx
        lm[0, 0, 0, 15] = lm[0, 0, 0, 6] - 30
    got = _layer_outputs(tmp_path, matrix_v1_model(), [lm])[0]
    o = custom_options.transform_matrix_options(flexbuffers.Dumps(MATRIX_V1_OPTIONS), 1, 8, "test")
    np.testing.assert_allclose(got, ref.landmarks_to_transform_matrix_v1(lm, o), rtol=1e-5, atol=1e-4)


def test_max_unpooling_2d_layer_matches_reference(tmp_path):
    x = np.random.default_rng(2).normal(size=(1, 8, 8, 3)).astype(np.float32)
    pooled, idx = ref.max_pool_argmax(x, custom_options.pool_options(pool_params(), "test"))
    want = ref.max_unpooling(pooled, idx, custom_options.pool_options(pool_params(), "test"))
    got = _layer_outputs(tmp_path, pool_unpool_model(), [x])[0]
    np.testing.assert_array_equal(got, want)


def test_max_unpooling_2d_overlapping_windows_refused(tmp_path):
    from tfl_rebuild.commands.pipeline import write_generated
    from tfl_rebuild.rebuild.ops.registry import ConversionError

    blob = build_model(
        [T("x", [1, 4, 4, 1]), T("i", [1, 4, 4, 1]), T("y", [1, 12, 12, 1])],
        [
            Op(
                "CUSTOM",
                [0, 1],
                [2],
                custom_code="MaxUnpooling2D",
                custom_options=pool_params("same", (2, 2), (3, 3)),
            )
        ],
        inputs=[0, 1],
        outputs=[2],
    )
    (tmp_path / "m.tflite").write_bytes(blob)
    with pytest.raises(ConversionError, match="stride"):
        write_generated(str(tmp_path / "m.tflite"), str(tmp_path / "gen"))


def test_bad_options_are_a_conversion_error(tmp_path):
    from tfl_rebuild.commands.pipeline import write_generated
    from tfl_rebuild.rebuild.ops.registry import ConversionError

    (tmp_path / "m.tflite").write_bytes(matrix_model(options={**MATRIX_OPTIONS, "subset_idxs": [0, 99]}))
    with pytest.raises(ConversionError, match="out of range"):
        write_generated(str(tmp_path / "m.tflite"), str(tmp_path / "gen"))

"""Options of the custom ops we rebuild (MediaPipe's, TF's MaxPool3D / AvgPool3D), decoded.

The pooling ops and Convolution2DTransposeBias carry raw packed C structs (TfLitePoolParams,
TfLiteTransposeConvParams: little-endian int32 fields); the transform ops carry a flexbuffer map
(their `Parse*Attributes` in tflite/delegates/gpu/common/mediapipe/). No TensorFlow.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tfl_rebuild.errors import TflRebuildError


class OptionsError(TflRebuildError):
    """A MediaPipe custom op whose options or inputs are not what its kernel accepts."""


# -- options ----------------------------------------------------------------------------------------

# TfLitePadding and TfLiteFusedActivation values (tensorflow/lite/core/c/builtin_op_data.h).
PADDING = {1: "same", 2: "valid"}
ACTIVATION = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh", 5: "sign_bit", 6: "sigmoid"}
# CalculateActivationRange clamps for these only; the pool kernels ignore the others.


@dataclass(frozen=True)
class PoolOptions:
    """TfLitePoolParams {padding, stride_width, stride_height, filter_width, filter_height, activation}."""

    padding: str
    stride: tuple[int, int]  # (height, width)
    filter: tuple[int, int]  # (height, width)
    activation: str


def pool_options(raw: bytes, what: str) -> PoolOptions:
    if len(raw) < 24:
        raise OptionsError(f"{what}: options are {len(raw)} bytes, a TfLitePoolParams needs 24")
    padding, sw, sh, fw, fh, act = struct.unpack_from("<6i", raw, 0)
    if padding not in PADDING or min(sw, sh, fw, fh) < 1 or act not in ACTIVATION:
        raise OptionsError(
            f"{what}: bad pool options (padding {padding}, stride {sh}x{sw}, filter {fh}x{fw}, "
            f"activation {act})"
        )
    return PoolOptions(PADDING[padding], (sh, sw), (fh, fw), ACTIVATION[act])


def transpose_conv_options(raw: bytes, what: str) -> tuple[str, tuple[int, int]]:
    """TfLiteTransposeConvParams {padding, stride_width, stride_height}: (padding, (stride_h, stride_w))."""
    if len(raw) < 12:
        raise OptionsError(f"{what}: options are {len(raw)} bytes, need 12")
    padding, sw, sh = struct.unpack_from("<3i", raw, 0)
    if padding not in PADDING or sw < 1 or sh < 1:
        raise OptionsError(f"{what}: bad options (padding {padding}, stride {sh}x{sw})")
    return PADDING[padding], (sh, sw)


def flex_options(raw: bytes, what: str) -> dict:
    """The flexbuffer map of a transform op's options ({} when there are none)."""
    if not raw:
        return {}
    from flatbuffers import flexbuffers

    try:
        value = flexbuffers.Loads(bytes(raw))
    except Exception as exc:  # a malformed buffer fails anywhere inside the decoder
        raise OptionsError(f"{what}: options are not a valid flexbuffer ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise OptionsError(f"{what}: options are a flexbuffer {type(value).__name__}, not a map")
    return value


def _int(opts: dict, key: str, what: str, lo: int = 0) -> int:
    v = opts.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise OptionsError(f"{what}: option {key!r} is {v!r}, need an integer >= {lo}")
    return v


def _float(opts: dict, key: str, what: str, default: float | None = None) -> float:
    v = opts.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise OptionsError(f"{what}: option {key!r} is {v!r}, need a finite number")
    return float(v)


@dataclass(frozen=True)
class TransformMatrixOptions:
    """Landmarks2TransformMatrix v2 (LandmarksToTransformMatrixV2Attributes)."""

    subset_idxs: tuple[tuple[int, int], ...]
    left_rotation_idx: int
    right_rotation_idx: int
    target_rotation_radians: float
    output_height: int
    output_width: int
    scale_x: float
    scale_y: float

    @property
    def points(self) -> list[int]:
        """Every landmark index the bounding box reads, in the kernel's order."""
        return [i for pair in self.subset_idxs for i in pair]


@dataclass(frozen=True)
class TransformMatrixV1Options:
    """Landmarks2TransformMatrix v1 (LandmarksToTransformMatrixV1Attributes)."""

    subset: tuple[tuple[int, int], ...]
    left_rotation_idx: int
    right_rotation_idx: int
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]
    landmarks_range: int
    bbox_size_multiplier: float

    @property
    def points(self) -> list[int]:
        return [i for pair in self.subset for i in pair]


def _pairs(opts: dict, key: str, what: str) -> tuple[tuple[int, int], ...]:
    """Index pairs; the parser pairs an odd last index with itself."""
    idxs = opts.get(key)
    if (
        not isinstance(idxs, list)
        or not idxs
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in idxs)
    ):
        raise OptionsError(f"{what}: option {key!r} must be a non-empty list of integers")
    pairs = [(idxs[2 * k], idxs[2 * k + 1]) for k in range(len(idxs) // 2)]
    if len(idxs) % 2:
        pairs.append((idxs[-1], idxs[-1]))
    return tuple(pairs)


def _hw(opts: dict, key: str, what: str) -> tuple[int, int]:
    v = opts.get(key)
    if not isinstance(v, list) or len(v) != 2 or not all(isinstance(i, int) and i > 0 for i in v):
        raise OptionsError(f"{what}: option {key!r} must be two positive integers, got {v!r}")
    return v[0], v[1]


def transform_matrix_options(
    raw: bytes, version: int, num_landmarks: int, what: str
) -> TransformMatrixOptions | TransformMatrixV1Options:
    opts = flex_options(raw, what)
    o: TransformMatrixOptions | TransformMatrixV1Options
    if version == 2:
        o = TransformMatrixOptions(
            _pairs(opts, "subset_idxs", what),
            _int(opts, "left_rotation_idx", what),
            _int(opts, "right_rotation_idx", what),
            _float(opts, "target_rotation_radians", what, 0.0),
            _int(opts, "output_height", what, 1),
            _int(opts, "output_width", what, 1),
            _float(opts, "scale_x", what),
            _float(opts, "scale_y", what),
        )
        if o.scale_x <= 0 or o.scale_y <= 0:
            raise OptionsError(f"{what}: scale_x and scale_y must be positive, got {o.scale_x}, {o.scale_y}")
    elif version == 1:
        if opts.get("dimensions") != 3:
            raise OptionsError(
                f"{what}: option 'dimensions' is {opts.get('dimensions')!r}, the kernel needs 3"
            )
        o = TransformMatrixV1Options(
            _pairs(opts, "subset", what),
            _int(opts, "left_rotation_idx", what),
            _int(opts, "right_rotation_idx", what),
            _hw(opts, "input_hw", what),
            _hw(opts, "output_hw", what),
            _int(opts, "landmarks_range", what, 1),
            _float(opts, "bbox_size_multiplier", what),
        )
        if o.bbox_size_multiplier == 0 or min(o.output_hw) < 2:
            raise OptionsError(f"{what}: bbox_size_multiplier must be non-zero and output_hw at least 2x2")
    else:
        raise OptionsError(f"{what}: Landmarks2TransformMatrix version {version} is not supported (1 or 2)")
    bad = [i for i in [*o.points, o.left_rotation_idx, o.right_rotation_idx] if not 0 <= i < num_landmarks]
    if bad:
        raise OptionsError(f"{what}: landmark index {bad[0]} is out of range for {num_landmarks} landmarks")
    return o


def transform_tensor_options(raw: bytes, version: int, what: str) -> tuple[int, int]:
    """(output_height, output_width) of TransformTensorBilinear v1/v2."""
    if version not in (1, 2):
        raise OptionsError(f"{what}: TransformTensorBilinear version {version} is not supported (1 or 2)")
    opts = flex_options(raw, what)
    return _int(opts, "output_height", what, 1), _int(opts, "output_width", what, 1)


def transform_landmarks_options(
    raw: bytes, version: int, input_shape: Sequence[int], what: str
) -> tuple[int, float]:
    """(dimensions, scale): v1 reads both from the flexbuffer, v2 takes the last input dim and scale 1."""
    if version == 2:
        if len(input_shape) != 3:
            raise OptionsError(f"{what}: TransformLandmarks v2 needs a rank-3 input, got {list(input_shape)}")
        dims, scale = int(input_shape[-1]), 1.0
    elif version == 1:
        if len(input_shape) != 4:
            raise OptionsError(f"{what}: TransformLandmarks v1 needs a rank-4 input, got {list(input_shape)}")
        opts = flex_options(raw, what)
        dims, scale = _int(opts, "dimensions", what), _float(opts, "scale", what)
        if scale == 0 or input_shape[-1] % max(dims, 1):
            raise OptionsError(
                f"{what}: bad options (dimensions {dims}, scale {scale}) for {list(input_shape)}"
            )
    else:
        raise OptionsError(f"{what}: TransformLandmarks version {version} is not supported (1 or 2)")
    if dims not in (2, 3):
        raise OptionsError(f"{what}: landmarks must have 2 or 3 dimensions, got {dims}")
    return dims, scale


@dataclass(frozen=True)
class Pool3DOptions:
    """MaxPool3D / AvgPool3D: TF's attributes as a flexbuffer map (tflite/kernels/pooling3d.cc)."""

    padding: str
    stride: tuple[int, int, int]  # (depth, height, width)
    filter: tuple[int, int, int]


def pool3d_options(raw: bytes, what: str) -> Pool3DOptions:
    opts = flex_options(raw, what)
    if opts.get("data_format", "NDHWC") != "NDHWC":
        raise OptionsError(f"{what}: data_format {opts.get('data_format')!r}; the kernel takes NDHWC only")
    padding = {"SAME": "same", "VALID": "valid"}.get(opts.get("padding"))
    if padding is None:
        raise OptionsError(f"{what}: padding {opts.get('padding')!r}, need SAME or VALID")
    dhw = []
    for key in ("ksize", "strides"):
        v = opts.get(key)
        if (
            not isinstance(v, list)
            or len(v) != 5
            or v[0] != 1
            or v[4] != 1
            or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in v)
        ):
            raise OptionsError(f"{what}: option {key!r} is {v!r}, need [1, d, h, w, 1] of positive integers")
        dhw.append(tuple(v[1:4]))
    return Pool3DOptions(padding, dhw[1], dhw[0])


# -- kernels ----------------------------------------------------------------------------------------


def compute_padding(stride: int, in_size: int, filter_size: int, out_size: int) -> int:
    """tflite::ComputePadding with dilation 1."""
    return max(((out_size - 1) * stride + filter_size - in_size) // 2, 0)


def pool_output_size(size: int, filter_size: int, stride: int, padding: str) -> int:
    return (size + stride - 1) // stride if padding == "same" else (size - filter_size + stride) // stride

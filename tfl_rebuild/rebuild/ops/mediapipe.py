"""MediaPipe's custom ops (registered by custom code).

Their options (raw C structs for the pooling / deconvolution ops, flexbuffers for the transforms)
are decoded in tflite/custom_options.py; runtime/reference.py holds the numpy references the Keras
layers are tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import wraps

from tfl_rebuild.rebuild.ops.conv import _bias, _kernel, transpose_conv_layer
from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext, LayerSpec, custom_converter
from tfl_rebuild.tflite.custom_options import (
    OptionsError,
    compute_padding,
    pool_options,
    pool_output_size,
    transform_landmarks_options,
    transform_matrix_options,
    transform_tensor_options,
    transpose_conv_options,
)
from tfl_rebuild.tflite.ir import Operator


def _options_errors(fn: Callable) -> Callable:
    """Bad options are a ConversionError like any other op's."""

    @wraps(fn)
    def run(op: Operator, ctx: ConvertContext):
        try:
            return fn(op, ctx)
        except OptionsError as exc:
            raise ConversionError(str(exc)) from None

    return run


def _what(op: Operator) -> str:
    return f"{op.custom_code} op {op.index}"


def _rank(op: Operator, ctx: ConvertContext, i: int, rank: int) -> tuple[int, ...]:
    shape = ctx.shape(op.inputs[i])
    if len(shape) != rank:
        raise ConversionError(f"{_what(op)}: input {i} has shape {list(shape)}, the kernel needs rank {rank}")
    return shape


@custom_converter("Convolution2DTransposeBias", note="MediaPipe transposed conv with bias")
@_options_errors
def convolution_2d_transpose_bias(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    padding, stride = transpose_conv_options(op.custom_options, _what(op))
    w = _kernel(op, ctx)
    return transpose_conv_layer(op, ctx, op.inputs[0], w, _bias(op, ctx, 2, w.shape[0]), padding, stride)


@custom_converter("MaxPoolingWithArgmax2D", note="MediaPipe max pool + argmax indices (float)")
@_options_errors
def max_pooling_with_argmax_2d(op: Operator, ctx: ConvertContext) -> LayerSpec:
    o = pool_options(op.custom_options, _what(op))
    _, h, w, _ = _rank(op, ctx, 0, 4)
    if len(op.outputs) != 2:
        raise ConversionError(f"{_what(op)}: needs 2 outputs (values, indices), has {len(op.outputs)}")
    (sh, sw), (fh, fw) = o.stride, o.filter
    oh, ow = pool_output_size(h, fh, sh, o.padding), pool_output_size(w, fw, sw, o.padding)
    if oh < 1 or ow < 1:
        raise ConversionError(f"{_what(op)}: a {fh}x{fw} window does not fit a {h}x{w} input")
    top, left = compute_padding(sh, h, fh, oh), compute_padding(sw, w, fw, ow)
    bottom, right = max((oh - 1) * sh + fh - h - top, 0), max((ow - 1) * sw + fw - w - left, 0)
    kwargs = {
        "pool_size": [fh, fw],
        "strides": [sh, sw],
        "pads": [top, bottom, left, right],
        "activation": o.activation,
    }
    return LayerSpec("MaxPoolArgmax", kwargs, (op.inputs[0],), op.outputs, custom=True)


@custom_converter("MaxUnpooling2D", note="MediaPipe max unpooling (stride = pool size)")
@_options_errors
def max_unpooling_2d(op: Operator, ctx: ConvertContext) -> LayerSpec:
    o = pool_options(op.custom_options, _what(op))
    _rank(op, ctx, 0, 4)
    if _rank(op, ctx, 1, 4) != ctx.shape(op.inputs[0]):
        raise ConversionError(f"{_what(op)}: indices and values differ in shape")
    if o.stride != o.filter:
        # Overlapping windows would need the kernel's last-write-wins scatter.
        raise ConversionError(
            f"{_what(op)}: stride {o.stride} differs from the pool size {o.filter}; only "
            "windows that tile the output are supported"
        )
    return LayerSpec(
        "MaxUnpool", {"pool_size": list(o.filter)}, (op.inputs[0], op.inputs[1]), op.outputs, custom=True
    )


@custom_converter("TransformTensorBilinear", note="MediaPipe affine crop-and-resample (v1, v2)")
@_options_errors
def transform_tensor_bilinear(op: Operator, ctx: ConvertContext) -> LayerSpec:
    out_hw = transform_tensor_options(op.custom_options, op.version, _what(op))
    _rank(op, ctx, 0, 4)
    out = ctx.shape(op.outputs[0])
    if len(out) != 4 or tuple(out[1:3]) != out_hw or out[0] != 1:
        raise ConversionError(
            f"{_what(op)}: output shape {list(out)} does not match its options {list(out_hw)}"
        )
    if math.prod(ctx.shape(op.inputs[1])) < 16:
        raise ConversionError(
            f"{_what(op)}: the matrix input must be 4x4, got {list(ctx.shape(op.inputs[1]))}"
        )
    kwargs = {"output_size": list(out_hw), "pixel_centers": op.version == 2}
    return LayerSpec("TransformTensorBilinear", kwargs, (op.inputs[0], op.inputs[1]), op.outputs, custom=True)


@custom_converter("TransformLandmarks", note="MediaPipe landmarks through a 4x4 matrix (v1, v2)")
@_options_errors
def transform_landmarks(op: Operator, ctx: ConvertContext) -> LayerSpec:
    dims, scale = transform_landmarks_options(
        op.custom_options, op.version, ctx.shape(op.inputs[0]), _what(op)
    )
    return LayerSpec(
        "TransformLandmarks",
        {"dims": dims, "scale": scale},
        (op.inputs[0], op.inputs[1]),
        op.outputs,
        custom=True,
    )


@custom_converter("Landmarks2TransformMatrix", note="MediaPipe crop matrix from landmarks (v1, v2)")
@_options_errors
def landmarks_2_transform_matrix(op: Operator, ctx: ConvertContext) -> LayerSpec:
    if op.version == 1:  # landmarks [1, 1, 1, 3N]
        shape = _rank(op, ctx, 0, 4)
        if shape[:3] != (1, 1, 1) or shape[3] % 3:
            raise ConversionError(f"{_what(op)}: landmarks must be [1, 1, 1, 3N], got {list(shape)}")
        o1 = transform_matrix_options(op.custom_options, 1, shape[3] // 3, _what(op))
        kwargs = {
            "points": o1.points,
            "left": o1.left_rotation_idx,
            "right": o1.right_rotation_idx,
            "input_size": list(o1.input_hw),
            "output_size": list(o1.output_hw),
            "landmarks_range": o1.landmarks_range,
            "bbox_size_multiplier": o1.bbox_size_multiplier,
        }
        return LayerSpec("LandmarksToTransformMatrixV1", kwargs, (op.inputs[0],), op.outputs, custom=True)
    shape = _rank(op, ctx, 0, 3)
    if shape[0] != 1 or shape[2] != 3:
        raise ConversionError(f"{_what(op)}: landmarks must be [1, N, 3], got {list(shape)}")
    o = transform_matrix_options(op.custom_options, op.version, shape[1], _what(op))
    kwargs = {
        "points": o.points,
        "left": o.left_rotation_idx,
        "right": o.right_rotation_idx,
        "target_rotation": o.target_rotation_radians,
        "scale": [o.scale_x, o.scale_y],
        "output_size": [o.output_height, o.output_width],
    }
    return LayerSpec("LandmarksToTransformMatrix", kwargs, (op.inputs[0],), op.outputs, custom=True)

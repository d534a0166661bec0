"""MediaPipe's custom ops (registered by custom code; their options are raw C structs)."""

from __future__ import annotations

import struct

from ..ir import Operator
from .conv import _bias, _kernel, transpose_conv_layer
from .registry import ConversionError, ConvertContext, LayerSpec, custom_converter

# TfLitePadding values in the packed TfLiteTransposeConvParams {padding, stride_w, stride_h}.
_PADDING = {1: "same", 2: "valid"}


@custom_converter("Convolution2DTransposeBias", note="MediaPipe transposed conv with bias")
def convolution_2d_transpose_bias(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    if len(op.custom_options) < 12:
        raise ConversionError(f"Convolution2DTransposeBias op {op.index}: options are {len(op.custom_options)} bytes, need 12")
    padding, stride_w, stride_h = struct.unpack_from("<iii", op.custom_options, 0)
    if padding not in _PADDING or stride_w < 1 or stride_h < 1:
        raise ConversionError(f"Convolution2DTransposeBias op {op.index}: bad options {padding, stride_w, stride_h}")
    w = _kernel(op, ctx)
    return transpose_conv_layer(op, ctx, op.inputs[0], w, _bias(op, ctx, 2, w.shape[0]), _PADDING[padding],
                                (stride_h, stride_w))

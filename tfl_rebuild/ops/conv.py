"""Convolutions and dense layers: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED."""

from __future__ import annotations

import numpy as np

from ..ir import Operator
from ..weights import to_keras_layout
from .activation import with_activation
from .matmul import fully_connected_dynamic
from .registry import ConversionError, ConvertContext, LayerSpec, converter


def _padding(op: Operator) -> str:
    return "same" if op.options.get("padding", "SAME") == "SAME" else "valid"


def _kernel(op: Operator, ctx: ConvertContext) -> np.ndarray:
    if not ctx.is_const(op.inputs[1]):
        raise ConversionError(f"{op.key} op {op.index}: weights computed at run time are not supported")
    return ctx.const(op.inputs[1]).astype(np.float32)


def _bias(op: Operator, ctx: ConvertContext, slot: int, n: int) -> np.ndarray | None:
    if len(op.inputs) <= slot or op.inputs[slot] < 0:
        return None
    b = ctx.const(op.inputs[slot]).astype(np.float32).reshape(-1)
    return b if b.size == n else np.broadcast_to(b, (n,)).copy()


def _weights(kernel_name: str, kernel: np.ndarray, bias: np.ndarray | None):
    return ((kernel_name, kernel),) if bias is None else ((kernel_name, kernel), ("bias", bias))


@converter("CONV_2D", range(1, 9))
def conv_2d(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    x = op.inputs[0]
    w = _kernel(op, ctx)
    o, kh, kw, i = w.shape
    groups = ctx.shape(x)[-1] // i
    bias = _bias(op, ctx, 2, o)
    kwargs = {
        "filters": o,
        "kernel_size": (kh, kw),
        "strides": (op.options.get("stride_h", 1), op.options.get("stride_w", 1)),
        "padding": _padding(op),
        "dilation_rate": (op.options.get("dilation_h_factor", 1), op.options.get("dilation_w_factor", 1)),
    }
    if groups > 1:
        kwargs["groups"] = groups
    kwargs["use_bias"] = bias is not None
    spec = LayerSpec("Conv2D", kwargs, (x,), op.outputs, _weights("kernel", to_keras_layout(w, "CONV_2D"), bias))
    return with_activation(op, spec, takes_activation=True)


@converter("DEPTHWISE_CONV_2D", range(1, 8))
def depthwise_conv_2d(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    x = op.inputs[0]
    w = _kernel(op, ctx)
    cin = ctx.shape(x)[-1]
    k = to_keras_layout(w, "DEPTHWISE_CONV_2D", cin)
    bias = _bias(op, ctx, 2, w.shape[-1])
    kwargs = {
        "kernel_size": k.shape[:2],
        "strides": (op.options.get("stride_h", 1), op.options.get("stride_w", 1)),
        "padding": _padding(op),
        "depth_multiplier": k.shape[3],
        "dilation_rate": (op.options.get("dilation_h_factor", 1), op.options.get("dilation_w_factor", 1)),
        "use_bias": bias is not None,
    }
    spec = LayerSpec("DepthwiseConv2D", kwargs, (x,), op.outputs, _weights("depthwise_kernel", k, bias))
    return with_activation(op, spec, takes_activation=True)


def transpose_conv_layer(op: Operator, ctx: ConvertContext, x: int, w: np.ndarray, bias: np.ndarray | None,
                         padding: str, strides: tuple[int, int]) -> list[LayerSpec]:
    """Conv2DTranspose reaching TFLite's exact output size (shared with MediaPipe's custom op)."""
    o, kh, kw, _ = w.shape
    sh, sw = strides
    out_h, out_w = ctx.shape(op.outputs[0])[1:3]
    in_h, in_w = ctx.shape(x)[1:3]
    kwargs = {"filters": o, "kernel_size": (kh, kw), "strides": (sh, sw), "padding": padding}
    # Keras' default output size is in*stride (same) or in*stride + max(k - stride, 0) (valid);
    # anything else TFLite asked for is reached with output_padding.
    default = [n * s if padding == "same" else n * s + max(k - s, 0) for n, s, k in ((in_h, sh, kh), (in_w, sw, kw))]
    if default != [out_h, out_w]:
        pad = [(k // 2) if padding == "same" else 0 for k in (kh, kw)]
        extra = [out - ((n - 1) * s + k - 2 * p) for out, n, s, k, p in
                 ((out_h, in_h, sh, kh, pad[0]), (out_w, in_w, sw, kw, pad[1]))]
        if not all(0 <= e < s for e, s in zip(extra, (sh, sw))):
            raise ConversionError(f"{op.key} op {op.index}: output size {out_h}x{out_w} not reachable in Keras")
        kwargs["output_padding"] = tuple(extra)
    kwargs["use_bias"] = bias is not None
    spec = LayerSpec("Conv2DTranspose", kwargs, (x,), op.outputs,
                     _weights("kernel", to_keras_layout(w, "TRANSPOSE_CONV"), bias))
    return with_activation(op, spec, takes_activation=True)


@converter("TRANSPOSE_CONV", range(1, 6))
def transpose_conv(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    w = _kernel(op, ctx)
    strides = (op.options.get("stride_h", 1), op.options.get("stride_w", 1))
    return transpose_conv_layer(op, ctx, op.inputs[2], w, _bias(op, ctx, 3, w.shape[0]), _padding(op), strides)


@converter("FULLY_CONNECTED", range(1, 13))
def fully_connected(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    if not ctx.is_const(op.inputs[1]):
        return fully_connected_dynamic(op, ctx)
    x = op.inputs[0]
    w = _kernel(op, ctx)
    units, n_in = w.shape[0], int(np.prod(w.shape[1:]))
    bias = _bias(op, ctx, 2, units)
    in_shape, out_shape = ctx.shape(x), ctx.shape(op.outputs[0])
    specs: list[LayerSpec] = []
    src = x
    if in_shape[-1] != n_in or (len(in_shape) > 2 and not op.options.get("keep_num_dims", False)):
        # TFLite flattens everything but the last axis into rows of n_in values.
        flat = (in_shape[0], int(np.prod(in_shape[1:])) // n_in * n_in) if in_shape else ()
        if len(out_shape) == 2 and out_shape[0] == in_shape[0] and flat[1] == n_in:
            specs.append(LayerSpec("Flatten", {}, (x,)))
        else:
            specs.append(LayerSpec("BatchReshape", {"shape": [-1, n_in]}, (x,), custom=True))
        src = specs[-1]
    dense = LayerSpec("Dense", {"units": units, "use_bias": bias is not None}, (src,), op.outputs,
                      _weights("kernel", to_keras_layout(w, "FULLY_CONNECTED"), bias))
    specs.extend(with_activation(op, dense, takes_activation=True))
    return specs

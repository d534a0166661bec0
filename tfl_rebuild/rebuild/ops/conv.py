"""Convolutions and dense layers: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.activation import with_activation
from tfl_rebuild.rebuild.ops.matmul import fully_connected_dynamic
from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext, LayerSpec, Trait, converter
from tfl_rebuild.tflite.ir import Operator
from tfl_rebuild.tflite.weights import to_keras_layout


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


def _reduced_multiplier(m: np.ndarray) -> np.ndarray:
    """The output multiplier TFLite's 16x8 kernels really apply: QuantizeMultiplier's 31-bit
    fixed-point value, reduced to 15 bits (MultiplyByQuantizedMultiplier on int64 accumulators)."""
    frac, exp = np.frexp(m)
    q = np.round(frac * 2.0**31)
    exp, q = np.where(q == 2.0**31, exp + 1, exp), np.where(q == 2.0**31, q / 2, q)
    reduced = np.where(q < 0x7FFF0000, np.floor((q + 2.0**15) / 2.0**16), 0x7FFF)
    return reduced * np.exp2(exp - 15.0)


def int16_bias(
    op: Operator, ctx: ConvertContext, x: int, bias: np.ndarray | None, bias_slot: int = 2
) -> np.ndarray | None:
    """The int64 bias of a 16x8 op in float64, scaled as the kernel adds it: the integer goes into the
    accumulator as it is, in units of input_scale * weight_scale. Its own stored scale is that product
    rounded to float32 (up to 5e-8 off: ~2e-4 of an output step for an int16 model's large biases)."""
    if bias is None or len(op.inputs) <= bias_slot or op.inputs[bias_slot] < 0:
        return bias
    bt, wt, xt = ctx.tensor(op.inputs[bias_slot]), ctx.tensor(op.inputs[1]), ctx.tensor(x)
    if bt.dtype != "int64" or bt.data is None or not (xt.quantized and wt.quantized):
        return bias
    q = np.asarray(bt.data).reshape(-1).astype(np.float64)  # exact: |bias| < 2^53
    acc_scale = np.float64(xt.quantization.scale[0]) * wt.quantization.scale.astype(np.float64)
    if q.size not in (1, bias.size) or acc_scale.size not in (1, bias.size):
        return bias
    return (
        q * acc_scale if q.size == acc_scale.size == bias.size else np.broadcast_to(q * acc_scale, bias.shape)
    )


def int16_exact(
    op: Operator,
    ctx: ConvertContext,
    x: int,
    w: np.ndarray,
    bias: np.ndarray | None,
    axis: int,
    bias_slot: int = 2,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Kernel and bias as TFLite's int16-activation convolutions scale them.

    With int16 activations (int64 accumulators) TFLite's CONV_2D, DEPTHWISE_CONV_2D and
    TRANSPOSE_CONV rescale by a multiplier rounded to 15 bits (FULLY_CONNECTED does not),
    up to 2^-16 off input_scale * weight_scale / output_scale: 2-15% of a layer's outputs then land
    one step away from a float rebuild's. Folding effective / exact into each output channel's
    weights and bias makes the fake-quantized rebuild round where the runtime does."""
    out, wt, xt = ctx.tensor(op.outputs[0]), ctx.tensor(op.inputs[1]), ctx.tensor(x)  # x as stored: int16
    has_bias = len(op.inputs) > bias_slot and op.inputs[bias_slot] >= 0
    if (
        out.dtype != "int16"
        or not (xt.quantized and wt.quantized and out.quantized)
        or (has_bias and ctx.tensor(op.inputs[bias_slot]).dtype != "int64")
    ):
        return w, bias
    bias = int16_bias(op, ctx, x, bias, bias_slot)
    n = w.shape[axis]
    exact = (
        np.float64(xt.quantization.scale[0])
        * wt.quantization.scale.astype(np.float64)
        / np.float64(out.quantization.scale[0])
    )
    exact = np.broadcast_to(exact, (n,)) if exact.size in (1, n) else None
    if exact is None or not np.all(exact > 0):
        return w, None if bias is None else bias.astype(np.float32)
    ratio = _reduced_multiplier(exact) / exact
    shape = [1] * w.ndim
    shape[axis] = n
    w = (w.astype(np.float64) * ratio.reshape(shape)).astype(np.float32)
    return w, None if bias is None else (bias.astype(np.float64) * ratio).astype(np.float32)


def _weights(kernel_name: str, kernel: np.ndarray, bias: np.ndarray | None):
    return ((kernel_name, kernel),) if bias is None else ((kernel_name, kernel), ("bias", bias))


@converter(
    "CONV_2D",
    range(1, 9),
    traits=[Trait.BATCH_PRESERVING, Trait.KERAS_ACTIVATION],
    hybrid_input=0,
    bias_input=2,
)
def conv_2d(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    x = op.inputs[0]
    w = _kernel(op, ctx)
    o, kh, kw, i = w.shape
    groups = ctx.shape(x)[-1] // i
    w, bias = int16_exact(op, ctx, x, w, _bias(op, ctx, 2, o), axis=0)
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
    spec = LayerSpec(
        "Conv2D", kwargs, (x,), op.outputs, _weights("kernel", to_keras_layout(w, "CONV_2D"), bias)
    )
    return with_activation(op, spec, takes_activation=True)


@converter(
    "DEPTHWISE_CONV_2D",
    range(1, 8),
    traits=[Trait.BATCH_PRESERVING, Trait.KERAS_ACTIVATION],
    hybrid_input=0,
    bias_input=2,
)
def depthwise_conv_2d(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    x = op.inputs[0]
    w = _kernel(op, ctx)
    cin = ctx.shape(x)[-1]
    w, bias = int16_exact(op, ctx, x, w, _bias(op, ctx, 2, w.shape[-1]), axis=3)
    k = to_keras_layout(w, "DEPTHWISE_CONV_2D", cin)
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


def transpose_conv_layer(
    op: Operator,
    ctx: ConvertContext,
    x: int,
    w: np.ndarray,
    bias: np.ndarray | None,
    padding: str,
    strides: tuple[int, int],
) -> list[LayerSpec]:
    """Conv2DTranspose reaching TFLite's exact output size (shared with MediaPipe's custom op)."""
    o, kh, kw, _ = w.shape
    sh, sw = strides
    out_h, out_w = ctx.shape(op.outputs[0])[1:3]
    in_h, in_w = ctx.shape(x)[1:3]
    kwargs = {"filters": o, "kernel_size": (kh, kw), "strides": (sh, sw), "padding": padding}
    # Keras' default output size is in*stride (same) or in*stride + max(k - stride, 0) (valid);
    # anything else TFLite asked for is reached with output_padding.
    default = [
        n * s if padding == "same" else n * s + max(k - s, 0) for n, s, k in ((in_h, sh, kh), (in_w, sw, kw))
    ]
    if default != [out_h, out_w]:
        pad = [(k // 2) if padding == "same" else 0 for k in (kh, kw)]
        extra = [
            out - ((n - 1) * s + k - 2 * p)
            for out, n, s, k, p in ((out_h, in_h, sh, kh, pad[0]), (out_w, in_w, sw, kw, pad[1]))
        ]
        if not all(0 <= e < s for e, s in zip(extra, (sh, sw))):
            raise ConversionError(
                f"{op.key} op {op.index}: output size {out_h}x{out_w} not reachable in Keras"
            )
        kwargs["output_padding"] = tuple(extra)
    kwargs["use_bias"] = bias is not None
    spec = LayerSpec(
        "Conv2DTranspose",
        kwargs,
        (x,),
        op.outputs,
        _weights("kernel", to_keras_layout(w, "TRANSPOSE_CONV"), bias),
    )
    return with_activation(op, spec, takes_activation=True)


@converter("TRANSPOSE_CONV", range(1, 6), traits=[Trait.BATCH_PRESERVING, Trait.KERAS_ACTIVATION])
def transpose_conv(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    w = _kernel(op, ctx)
    strides = (op.options.get("stride_h", 1), op.options.get("stride_w", 1))
    w, bias = int16_exact(op, ctx, op.inputs[2], w, _bias(op, ctx, 3, w.shape[0]), axis=0, bias_slot=3)
    return transpose_conv_layer(op, ctx, op.inputs[2], w, bias, _padding(op), strides)


@converter("FULLY_CONNECTED", range(1, 14), traits=[Trait.KERAS_ACTIVATION], hybrid_input=0, bias_input=2)
def fully_connected(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    if not ctx.is_const(op.inputs[1]):
        return fully_connected_dynamic(op, ctx)
    x = op.inputs[0]
    w = _kernel(op, ctx)
    if w.ndim < 2:
        raise ConversionError(
            f"{op.opcode} op {op.index}: weights of shape {list(w.shape)} are not a [units, n_in] matrix"
        )
    units, n_in = w.shape[0], int(np.prod(w.shape[1:]))
    bias = _bias(op, ctx, 2, units)  # (TFLite's int16 FULLY_CONNECTED rescales at full precision)
    if ctx.tensor(op.outputs[0]).dtype == "int16" and bias is not None:
        bias = int16_bias(op, ctx, x, bias).astype(np.float32)
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
    dense = LayerSpec(
        "Dense",
        {"units": units, "use_bias": bias is not None},
        (src,),
        op.outputs,
        _weights("kernel", to_keras_layout(w, "FULLY_CONNECTED"), bias),
    )
    specs.extend(with_activation(op, dense, takes_activation=True))
    return specs

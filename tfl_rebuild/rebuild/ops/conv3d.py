"""Volumetric ops: CONV_3D, CONV_3D_TRANSPOSE, and the MaxPool3D / AvgPool3D custom ops.

Layouts (checked against the runtime by tests/rebuild/ops/test_conv3d.py): CONV_3D's filter is
[D, H, W, I, O] and CONV_3D_TRANSPOSE's [D, H, W, O, I], which are Keras' Conv3D and
Conv3DTranspose kernel layouts as they are. TF's converter writes keras MaxPooling3D /
AveragePooling3D as custom ops (with allow_custom_ops) whose options are a flexbuffer map of the
TF attributes (ksize, strides: [1, d, h, w, 1]; padding; data_format NDHWC), which the runtime's
pooling3d kernel reads.
"""

from __future__ import annotations

from tfl_rebuild.rebuild.ops.activation import with_activation
from tfl_rebuild.rebuild.ops.conv import _bias, _kernel
from tfl_rebuild.rebuild.ops.registry import (
    ConversionError,
    ConvertContext,
    LayerSpec,
    Trait,
    converter,
    custom_converter,
)
from tfl_rebuild.tflite.custom_options import OptionsError, pool3d_options
from tfl_rebuild.tflite.ir import Operator


def _padding(op: Operator) -> str:
    return "same" if op.options.get("padding", "SAME") == "SAME" else "valid"


def _dhw(op: Operator, prefix: str, suffix: str = "") -> tuple[int, int, int]:
    return tuple(int(op.options.get(f"{prefix}{axis}{suffix}", 1)) for axis in "dhw")


def _weights(kernel, bias) -> tuple:
    return (("kernel", kernel),) if bias is None else (("kernel", kernel), ("bias", bias))


@converter("CONV_3D", range(1, 2), traits=[Trait.BATCH_PRESERVING])
def conv_3d(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    x = op.inputs[0]
    w = _kernel(op, ctx)  # [D, H, W, I, O]
    if w.ndim != 5 or ctx.rank(x) != 5 or ctx.shape(x)[-1] % w.shape[3]:
        raise ConversionError(
            f"CONV_3D op {op.index}: filter {list(w.shape)} does not fit input {list(ctx.shape(x))}"
        )
    groups = ctx.shape(x)[-1] // w.shape[3]
    bias = _bias(op, ctx, 2, w.shape[4])
    kwargs = {
        "filters": int(w.shape[4]),
        "kernel_size": tuple(int(k) for k in w.shape[:3]),
        "strides": _dhw(op, "stride_"),
        "padding": _padding(op),
        "dilation_rate": _dhw(op, "dilation_", "_factor"),
    }
    if groups > 1:
        kwargs["groups"] = groups
    kwargs["use_bias"] = bias is not None
    return with_activation(
        op, LayerSpec("Conv3D", kwargs, (x,), op.outputs, _weights(w, bias)), takes_activation=True
    )


@converter("CONV_3D_TRANSPOSE", range(1, 2), traits=[Trait.BATCH_PRESERVING])
def conv_3d_transpose(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    x = op.inputs[2]  # inputs: output_shape, filter, input, bias
    w = _kernel(op, ctx)  # [D, H, W, O, I]
    if w.ndim != 5 or ctx.rank(x) != 5 or ctx.shape(x)[-1] != w.shape[4]:
        raise ConversionError(
            f"CONV_3D_TRANSPOSE op {op.index}: filter {list(w.shape)} does not fit input {list(ctx.shape(x))}"
        )
    dilation = _dhw(op, "dilation_", "_factor")
    strides = _dhw(op, "stride_")
    if max(dilation) > 1 and max(strides) > 1:
        raise ConversionError(
            f"CONV_3D_TRANSPOSE op {op.index}: strides {strides} with dilation {dilation} "
            "have no Keras Conv3DTranspose equivalent"
        )
    padding = _padding(op)
    kernel = tuple(int(k) for k in w.shape[:3])
    out = ctx.shape(op.outputs[0])[1:4]
    kwargs = {"filters": int(w.shape[3]), "kernel_size": kernel, "strides": strides, "padding": padding}
    # Keras' output size is in*stride (same) or in*stride + max(k - stride, 0) (valid); any other
    # size TFLite's output_shape asks for is reached with output_padding.
    default = [
        n * s if padding == "same" else n * s + max(k - s, 0)
        for n, s, k in zip(ctx.shape(x)[1:4], strides, kernel)
    ]
    if list(out) != default:
        pads = [k // 2 if padding == "same" else 0 for k in kernel]
        extra = [
            o - ((n - 1) * s + k - 2 * p)
            for o, n, s, k, p in zip(out, ctx.shape(x)[1:4], strides, kernel, pads)
        ]
        if not all(0 <= e < s for e, s in zip(extra, strides)):
            raise ConversionError(
                f"CONV_3D_TRANSPOSE op {op.index}: output size {list(out)} is not reachable "
                "with Keras Conv3DTranspose"
            )
        kwargs["output_padding"] = tuple(extra)
    if max(dilation) > 1:
        kwargs["dilation_rate"] = dilation
    bias = _bias(op, ctx, 3, w.shape[3])
    kwargs["use_bias"] = bias is not None
    return with_activation(
        op, LayerSpec("Conv3DTranspose", kwargs, (x,), op.outputs, _weights(w, bias)), takes_activation=True
    )


def _pool3d(layer: str):
    def convert(op: Operator, ctx: ConvertContext) -> LayerSpec:
        what = f"{op.custom_code} op {op.index}"
        try:
            o = pool3d_options(op.custom_options, what)
        except OptionsError as exc:
            raise ConversionError(str(exc)) from None
        if ctx.rank(op.inputs[0]) != 5:
            raise ConversionError(f"{what}: input {list(ctx.shape(op.inputs[0]))} is not 5-D (NDHWC)")
        return LayerSpec(
            layer,
            {"pool_size": o.filter, "strides": o.stride, "padding": o.padding},
            (op.inputs[0],),
            op.outputs,
        )

    return convert


# TF's converter names the average pool "AvgPool3D"; the runtime's own tests (and older
# converters) "AveragePool3D": both carry the same options.
custom_converter("MaxPool3D", "keras.layers.MaxPooling3D", [Trait.BATCH_PRESERVING])(_pool3d("MaxPooling3D"))
custom_converter("AvgPool3D", "keras.layers.AveragePooling3D", [Trait.BATCH_PRESERVING])(
    _pool3d("AveragePooling3D")
)
custom_converter("AveragePool3D", "keras.layers.AveragePooling3D", [Trait.BATCH_PRESERVING])(
    _pool3d("AveragePooling3D")
)

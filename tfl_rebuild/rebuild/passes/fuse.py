"""Fusions: several TFLite ops that are one Keras layer.

- SPACE_TO_BATCH_ND -> CONV_2D / DEPTHWISE_CONV_2D -> BATCH_TO_SPACE_ND (how TensorFlow once wrote
  dilated convolutions) becomes one convolution with a dilation rate.
- LOGISTIC then MUL by the same input (SiLU as onnx2tf and Keras' swish write it) becomes one
  LOGISTIC with option "silu": one Activation("silu") layer instead of two.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext
from tfl_rebuild.tflite.ir import Operator

DILATABLE = ("CONV_2D", "DEPTHWISE_CONV_2D")


def _dilated_padding(ctx: ConvertContext, s2b: Operator, conv: Operator, b2s: Operator) -> str | None:
    """Padding "same" or "valid" when the three ops equal one dilated convolution with that padding."""
    x, out = s2b.inputs[0], b2s.outputs[0]
    if ctx.rank(x) != 4 or not all(
        ctx.is_const(i) for i in (s2b.inputs[1], s2b.inputs[2], b2s.inputs[1], b2s.inputs[2])
    ):
        return None
    block = np.asarray(ctx.const(s2b.inputs[1])).reshape(-1).tolist()
    if block != np.asarray(ctx.const(b2s.inputs[1])).reshape(-1).tolist() or len(block) != 2:
        return None
    pads = np.asarray(ctx.const(s2b.inputs[2])).reshape(2, 2)
    crops = np.asarray(ctx.const(b2s.inputs[2])).reshape(2, 2)
    o = conv.options
    if (
        o.get("padding") != "VALID"
        or o.get("stride_h", 1) != 1
        or o.get("stride_w", 1) != 1
        or o.get("dilation_h_factor", 1) != 1
        or o.get("dilation_w_factor", 1) != 1
        or not ctx.is_const(conv.inputs[1])
    ):
        return None
    kernel = ctx.shape(conv.inputs[1])[1:3]
    modes = set()
    for axis in range(2):
        n_in, n_out = ctx.shape(x)[axis + 1], ctx.shape(out)[axis + 1]
        span = block[axis] * (kernel[axis] - 1)  # the dilated kernel's extent, minus one
        shift = int(pads[axis][0]) - int(crops[axis][0])  # how far the output starts before the input
        if shift == span // 2 and n_out == n_in:
            modes.add("same")
        elif shift == 0 and n_out == n_in - span:
            modes.add("valid")
        else:
            return None
    return modes.pop() if len(modes) == 1 else None


def fuse_dilated_convs(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    consumers: dict[int, list[Operator]] = {}
    for op in ops:
        for i in op.inputs:
            consumers.setdefault(ctx.resolve(i), []).append(op)
    outputs = {ctx.resolve(t) for t in ctx.subgraph.outputs}

    def only_consumer(t: int) -> Operator | None:
        users = consumers.get(t, [])
        return users[0] if len(users) == 1 and t not in outputs else None

    fused: dict[int, Operator] = {}  # id of the op replaced by the fused conv -> the conv
    dropped: set[int] = set()
    for s2b in ops:
        if s2b.opcode != "SPACE_TO_BATCH_ND":
            continue
        conv = only_consumer(s2b.outputs[0])
        if conv is None or conv.opcode not in DILATABLE or ctx.resolve(conv.inputs[0]) != s2b.outputs[0]:
            continue
        b2s = only_consumer(conv.outputs[0])
        if b2s is None or b2s.opcode != "BATCH_TO_SPACE_ND" or ctx.resolve(b2s.inputs[0]) != conv.outputs[0]:
            continue
        padding = _dilated_padding(ctx, s2b, conv, b2s)
        if padding is None:
            continue
        block = np.asarray(ctx.const(s2b.inputs[1])).reshape(-1).tolist()
        options = {
            **conv.options,
            "padding": padding.upper(),
            "dilation_h_factor": int(block[0]),
            "dilation_w_factor": int(block[1]),
        }
        fused[id(conv)] = dataclasses.replace(
            conv, inputs=(s2b.inputs[0], *conv.inputs[1:]), outputs=b2s.outputs, options=options
        )
        dropped.update((id(s2b), id(b2s)))
    return [fused.get(id(op), op) for op in ops if id(op) not in dropped]


def fuse_silu(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    """LOGISTIC(x) read only by MUL(x, LOGISTIC(x)) -> one LOGISTIC of x with options["silu"],
    producing the MUL's output. Quantized sigmoid outputs stay (their int8 rounding is part of it)."""
    readers: dict[int, list[Operator]] = {}
    for op in ops:
        for i in op.inputs:
            readers.setdefault(ctx.resolve(i), []).append(op)
    outputs = {ctx.resolve(t) for t in ctx.subgraph.outputs}
    fused: dict[int, Operator] = {}
    dropped: set[int] = set()
    for op in ops:
        if op.opcode != "LOGISTIC" or len(op.outputs) != 1:
            continue
        x, s = ctx.resolve(op.inputs[0]), op.outputs[0]
        users = readers.get(s, [])
        if len(users) != 1 or s in outputs or ctx.tensor(s).quantized or ctx.tensor(x).quantized:
            continue
        mul = users[0]
        if (
            mul.opcode != "MUL"
            or sorted(ctx.resolve(i) for i in mul.inputs) != sorted((x, s))
            or mul.options.get("fused_activation_function", "NONE") != "NONE"
        ):
            continue
        fused[id(op)] = dataclasses.replace(op, outputs=mul.outputs, options={**op.options, "silu": True})
        dropped.add(id(mul))
    return [fused.get(id(op), op) for op in ops if id(op) not in dropped]

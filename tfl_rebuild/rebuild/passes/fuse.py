"""Fusions: several TFLite ops that are one Keras layer.

- SPACE_TO_BATCH_ND -> CONV_2D / DEPTHWISE_CONV_2D -> BATCH_TO_SPACE_ND (how TensorFlow writes
  dilated convolutions when the batch is free) becomes one convolution with a dilation rate; for a
  Conv1D (the conv between a view [B, 1, L, C] and a squeeze, and a causal PAD before) one lifted
  Conv1D op, as passes.lift_1d makes of an undilated one.
- LOGISTIC then MUL by the same input (SiLU as onnx2tf and Keras' swish write it) becomes one
  LOGISTIC with option "silu": one Activation("silu") layer instead of two.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext
from tfl_rebuild.tflite.ir import Operator

DILATABLE = ("CONV_2D", "DEPTHWISE_CONV_2D")


def _dilated_padding(
    ctx: ConvertContext, s2b: Operator, conv: Operator, b2s: Operator, kernel: list[int]
) -> str | None:
    """Padding "same" or "valid" when the three ops equal one dilated convolution with that padding
    (`kernel`: its extent along each spatial axis of the SPACE_TO_BATCH_ND input, two or one)."""
    x, out, n = s2b.inputs[0], b2s.outputs[0], len(kernel)
    if ctx.rank(x) != n + 2 or not all(
        ctx.is_const(i) for i in (s2b.inputs[1], s2b.inputs[2], b2s.inputs[1], b2s.inputs[2])
    ):
        return None
    block = np.asarray(ctx.const(s2b.inputs[1])).reshape(-1).tolist()
    if block != np.asarray(ctx.const(b2s.inputs[1])).reshape(-1).tolist() or len(block) != n:
        return None
    pads = np.asarray(ctx.const(s2b.inputs[2])).reshape(n, 2)
    crops = np.asarray(ctx.const(b2s.inputs[2])).reshape(n, 2)
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
    modes = set()
    for axis in range(n):
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
    producer: dict[int, Operator] = {}
    for op in ops:
        for i in op.inputs:
            consumers.setdefault(ctx.resolve(i), []).append(op)
        producer.update((ctx.resolve(o), op) for o in op.outputs if o >= 0)
    outputs = {ctx.resolve(t) for t in ctx.subgraph.outputs}

    def only_consumer(t: int) -> Operator | None:
        users = consumers.get(ctx.resolve(t), [])
        return users[0] if len(users) == 1 and ctx.resolve(t) not in outputs else None

    fused: dict[int, Operator] = {}  # id of the op replaced by the fused conv -> the conv
    dropped: set[int] = set()
    for s2b in ops:
        if s2b.opcode != "SPACE_TO_BATCH_ND":
            continue
        if ctx.rank(s2b.inputs[0]) == 3:  # Keras' Conv1D: around its [B, 1, L, C] view
            found = _conv_1d(ctx, s2b, only_consumer, producer)
            if found is not None:
                lifted, chain = found
                fused[id(chain[-1])] = lifted
                dropped.update(id(op) for op in chain[:-1])
            continue
        conv = only_consumer(s2b.outputs[0])
        if conv is None or conv.opcode not in DILATABLE or ctx.resolve(conv.inputs[0]) != s2b.outputs[0]:
            continue
        b2s = only_consumer(conv.outputs[0])
        if b2s is None or b2s.opcode != "BATCH_TO_SPACE_ND" or ctx.resolve(b2s.inputs[0]) != conv.outputs[0]:
            continue
        padding = _dilated_padding(ctx, s2b, conv, b2s, list(ctx.shape(conv.inputs[1])[1:3]))
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


def _conv_1d(
    ctx: ConvertContext, s2b: Operator, only_consumer, producer: dict[int, Operator]
) -> tuple[Operator, list[Operator]] | None:
    """[PAD ->] SPACE_TO_BATCH_ND [B, L, C] -> EXPAND_DIMS / RESHAPE [B', 1, L', C] -> CONV_2D ->
    RESHAPE / SQUEEZE -> BATCH_TO_SPACE_ND [B, L_out, O] (a dilated Conv1D of a free-batch model)
    as one lifted Conv1D op (its converter: ops/lifted.py), causal when the PAD pads the length by
    (k - 1) * dilation before and nothing after; with the ops it stands for."""
    view = only_consumer(s2b.outputs[0])
    conv = only_consumer(view.outputs[0]) if view is not None else None
    squeeze = only_consumer(conv.outputs[0]) if conv is not None else None
    b2s = only_consumer(squeeze.outputs[0]) if squeeze is not None else None
    if (
        b2s is None
        or view.opcode not in ("EXPAND_DIMS", "RESHAPE")
        or conv.opcode != "CONV_2D"
        or squeeze.opcode not in ("RESHAPE", "SQUEEZE")
        or b2s.opcode != "BATCH_TO_SPACE_ND"
        or not ctx.is_const(conv.inputs[1])
        or any(ctx.tensor(ctx.resolve(t)).quantized for t in (s2b.inputs[0], b2s.outputs[0], conv.inputs[1]))
    ):
        return None
    kernel = ctx.shape(conv.inputs[1])  # [O, 1, K, I]
    view_shape = ctx.shape(view.outputs[0])
    if len(kernel) != 4 or kernel[1] != 1 or len(view_shape) != 4 or view_shape[1] != 1:
        return None
    padding = _dilated_padding(ctx, s2b, conv, b2s, [kernel[2]])
    if padding is None:
        return None
    dilation = int(np.asarray(ctx.const(s2b.inputs[1])).reshape(-1)[0])
    span = dilation * (kernel[2] - 1)
    chain, source = [s2b, view, conv, squeeze, b2s], s2b.inputs[0]
    pad = producer.get(ctx.resolve(s2b.inputs[0])) if padding == "valid" else None
    pad = pad if pad is not None and _causal_pad(ctx, pad, s2b, span, only_consumer) else None
    if pad is not None:
        chain, source = [pad, *chain], pad.inputs[0]
    options = {
        **conv.options,
        "padding": padding.upper(),
        "dilation_w_factor": dilation,
        "causal": pad is not None,
        "lifted_from": [op.opcode for op in chain],
    }
    bias = conv.inputs[2] if len(conv.inputs) > 2 else -1
    lifted = Operator(
        index=b2s.index,
        opcode="Conv1D",
        version=1,
        inputs=(source, conv.inputs[1], bias),
        outputs=b2s.outputs,
        options=options,
    )
    return lifted, chain


def _causal_pad(ctx: ConvertContext, pad: Operator, s2b: Operator, span: int, only_consumer) -> bool:
    """Whether `pad`, read by `s2b` alone, pads the length by `span` before and nothing after."""
    if pad.opcode != "PAD" or only_consumer(pad.outputs[0]) is not s2b or not ctx.is_const(pad.inputs[1]):
        return False
    return np.asarray(ctx.const(pad.inputs[1])).reshape(-1, 2).tolist() == [[0, 0], [span, 0], [0, 0]]


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

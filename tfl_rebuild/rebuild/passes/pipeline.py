"""Graph rewrites before conversion, in order: constants, then ops that vanish in a float rebuild.

1. Every constant tensor gets its value: densified, dequantized (fp16, int8/uint8/int16).
2. DEQUANTIZE / DENSIFY of a constant fold into a constant (fp16 and sparse weights).
3. QUANTIZE / DEQUANTIZE of activations become aliases: the rebuild computes in float, and
   quantized tensors are reproduced by fake-quant layers instead (see `fake_quant_params`).
4. Ops computing only from constants and static shapes fold into constants (`fold_constants`): a
   dynamic-shape export's SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE chain becomes a plain Reshape.
4b. The converter's decompositions of Keras layers become the layer again (lifting): 1-D regions
   (`lift_1d`), MultiHeadAttention (`lift_attention`), LayerNormalization, SeparableConv2D,
   Embedding and activation= (`lift`). Only whole, float, unquantized patterns.
5. SPACE_TO_BATCH_ND -> CONV_2D / DEPTHWISE_CONV_2D -> BATCH_TO_SPACE_ND (how TensorFlow once wrote
   dilated convolutions) becomes one convolution with a dilation rate (`fuse_dilated_convs`).
6. LOGISTIC then MUL by the same input (SiLU as onnx2tf and Keras' swish write it) becomes one
   LOGISTIC with option "silu" (`fuse_silu`): one Activation("silu") layer instead of two.
7. Rank-6 regions (PixelShuffle, window partitions) lose their unit batch axis, for Core ML's
   rank <= 5 (`unit_batch.drop_unit_batch`).
8. Ops whose results nothing reads any more (a reshape whose only reader was a folded SHAPE) go.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext, Trait, has_trait
from tfl_rebuild.rebuild.passes import const_eval
from tfl_rebuild.rebuild.passes.lift import lift
from tfl_rebuild.rebuild.passes.lift_1d import lift_1d
from tfl_rebuild.rebuild.passes.lift_attention import lift_attention
from tfl_rebuild.rebuild.passes.unit_batch import drop_unit_batch
from tfl_rebuild.tflite.analysis import NON_DATA
from tfl_rebuild.tflite.ir import Model, Operator, Tensor
from tfl_rebuild.tflite.weights import value

FOLD_CONSTANT = ("DEQUANTIZE", "DENSIFY")
PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE")


def prepare(
    model: Model, subgraph: int = 0, keep_quantize: bool = False
) -> tuple[ConvertContext, list[Operator]]:
    """keep_quantize: QUANTIZE ops that round onto a new grid stay (a fake-quant rebuild rounds there)."""
    sg = model.subgraphs[subgraph]
    constants: dict[int, np.ndarray] = {
        t.index: value(t) for t in sg.tensors if t.data is not None and t.dtype not in NON_DATA
    }
    # An empty constant (a RESHAPE to a scalar's shape []) has no bytes, so no buffer data either.
    produced = {o for op in sg.operators for o in op.outputs} | set(sg.inputs)
    constants.update(
        {
            t.index: np.zeros(t.shape, t.dtype)
            for t in sg.tensors
            if t.data is None
            and t.shape
            and 0 in t.shape
            and t.index not in produced
            and t.dtype in ("int32", "int64", "float32")
        }
    )
    ctx = ConvertContext(sg, constants)
    remaining = []
    for op in sg.operators:
        if op.opcode in FOLD_CONSTANT and op.inputs and ctx.is_const(op.inputs[0]):
            constants[op.outputs[0]] = ctx.const(op.inputs[0]).astype(np.float32)
        elif (
            op.opcode in PASS_THROUGH
            and op.inputs
            and len(op.outputs) == 1
            and not (keep_quantize and rounds(sg, op))
        ):
            ctx.alias[op.outputs[0]] = op.inputs[0]
        else:
            remaining.append(op)
    remaining = fold_constants(ctx, remaining)
    remaining = lift_1d(ctx, remaining)  # after folding: Conv1D and 1-D pooling regions (passes.lift_1d)
    remaining = lift_attention(ctx, remaining)  # MultiHeadAttention (passes.lift_attention)
    remaining = lift(ctx, remaining)  # after folding: decompositions of Keras layers (passes.lift)
    return ctx, drop_unused(ctx, drop_unit_batch(ctx, fuse_silu(ctx, fuse_dilated_convs(ctx, remaining))))


def rounds(sg, op: Operator) -> bool:
    """A QUANTIZE that puts a computed tensor onto a new integer grid (float -> int16 around an op
    without a 16x8 kernel, or a requantize to another scale): TFLite rounds there."""
    if op.opcode != "QUANTIZE" or sg.tensors[op.inputs[0]].data is not None:
        return False
    out = fake_quant_params(sg.tensors[op.outputs[0]])
    return out is not None and fake_quant_params(sg.tensors[op.inputs[0]]) != out


# elements: a folded value becomes a weight; bigger ones stay ops. tf.signal.frame's gather indices
# (frames x frame length: 511 x 1024 in BirdNET's STFT) must fold, as no converter takes two constants.
FOLD_LIMIT = 1 << 20


def _known_shape(ctx: ConvertContext, i: int) -> bool:
    """Whether the shape of tensor i is its real shape. Stored shapes of tensors the model leaves
    dynamic (-1 in shape_signature) are placeholders, except for the model's inputs: the rebuild
    (and verification) fixes those to their stored shape. Shapes inferred here count as known."""
    i = ctx.resolve(i)
    if i in ctx.shapes or i in ctx.constants:
        return True
    t = ctx.tensor(i)
    if any(d < 0 for d in t.shape):
        return False
    if ctx.subgraph.index == 0 and t.index in ctx.subgraph.inputs:
        return True
    return t.shape_signature is None or all(d >= 0 for d in t.shape_signature)


def _batch_preserved(ctx: ConvertContext, op: Operator) -> tuple[int, ...] | None:
    """A batch-preserving op's output shape: with only the batch dynamic in the output's signature,
    it is the (first data) input's batch plus the stored (static) other dims."""
    out = ctx.tensor(op.outputs[0])
    sig = out.shape_signature
    x = op.inputs[2] if op.opcode == "TRANSPOSE_CONV" else op.inputs[0]
    if sig is None or len(sig) != len(out.shape) or not sig or sig[0] != -1 or min(sig[1:], default=0) < 0:
        return None
    if not _known_shape(ctx, x) or not ctx.shape(x) or len(ctx.shape(x)) != len(out.shape):
        return None
    if op.opcode == "CONCATENATION" and int(op.options.get("axis", 0)) % len(out.shape) == 0:
        return None
    return (ctx.shape(x)[0], *out.shape[1:])


def _infer_shape(ctx: ConvertContext, op: Operator) -> tuple[int, ...] | None:
    """The output shape of a reshape, elementwise, last-axis, fully connected or batch-preserving op
    whose inputs' shapes are known (the ops' traits say which)."""
    if len(op.outputs) == 1 and has_trait(op, Trait.BATCH_PRESERVING):
        return _batch_preserved(ctx, op)
    data = [i for i in op.inputs if i >= 0]
    if len(op.outputs) != 1 or not data or not all(_known_shape(ctx, i) for i in data):
        return None
    try:
        if op.opcode == "RESHAPE" and len(data) > 1 and ctx.is_const(data[1]):
            target = [int(d) for d in np.asarray(ctx.const(data[1])).reshape(-1)]
            return np.empty(ctx.shape(data[0]), np.bool_).reshape(target).shape
        if has_trait(op, Trait.ELEMENTWISE) or has_trait(op, Trait.LAST_AXIS):
            return tuple(np.broadcast_shapes(*(ctx.shape(i) for i in data)))
        if op.opcode == "FULLY_CONNECTED":
            (units, n_in), x = ctx.shape(data[1])[:2], ctx.shape(data[0])
            if op.options.get("keep_num_dims"):
                return (*x[:-1], units)
            return (int(np.prod(x)) // n_in, units)
    except ValueError:  # sizes that do not fit: leave the stored shape
        return None
    return None


def fold_constants(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    """Evaluate, in order, every op whose inputs are all known (or, for SHAPE, whose input's shape
    is known); their outputs join the constants and the ops go. Along the way, reshapes and
    elementwise ops get their real output shape where the file holds a placeholder."""
    outputs = set(ctx.subgraph.outputs)
    remaining = []
    for op in ops:
        value = None
        data_inputs = [i for i in op.inputs if i >= 0]
        if len(op.outputs) == 1 and op.outputs[0] not in outputs and op.opcode != "CUSTOM" and data_inputs:
            out = ctx.tensor(op.outputs[0])
            if op.opcode == "SHAPE" and _known_shape(ctx, data_inputs[0]):
                value = const_eval.shape_of(ctx.shape(data_inputs[0]), out.dtype)
            elif op.opcode == "RANK" and _known_shape(ctx, data_inputs[0]):
                value = np.asarray(len(ctx.shape(data_inputs[0])), out.dtype)
            elif all(ctx.is_const(i) for i in data_inputs) and not out.quantized:
                try:
                    value = const_eval.evaluate(
                        op, [np.asarray(ctx.const(i)) for i in data_inputs], tuple(out.shape), out.dtype
                    )
                except (
                    ValueError,
                    IndexError,
                    TypeError,
                ):  # not what the evaluator expects: convert as usual
                    value = None
        elif (
            len(op.outputs) > 1
            and data_inputs
            and all(ctx.is_const(i) for i in data_inputs)
            and not outputs.intersection(op.outputs)
            and not any(ctx.tensor(o).quantized for o in op.outputs)
        ):
            values = _evaluate_multi(ctx, op, data_inputs)
            if values is not None:  # a split of a constant shape vector (tf.signal.frame's)
                ctx.constants.update(zip(op.outputs, values))
                continue
        if value is not None and value.size <= FOLD_LIMIT:
            ctx.constants[op.outputs[0]] = value
            if value.shape != tuple(ctx.tensor(op.outputs[0]).shape):  # a placeholder (WHERE's rows)
                ctx.shapes[op.outputs[0]] = tuple(value.shape)
            continue
        remaining.append(op)
        if len(op.outputs) == 1 and not _known_shape(ctx, op.outputs[0]):
            shape = _infer_shape(ctx, op)
            if shape is not None:
                ctx.shapes[op.outputs[0]] = tuple(int(d) for d in shape)
    return remaining


def _evaluate_multi(ctx: ConvertContext, op: Operator, data_inputs: list[int]) -> list[np.ndarray] | None:
    try:
        values = const_eval.evaluate_multi(
            op, [np.asarray(ctx.const(i)) for i in data_inputs], [ctx.tensor(o).dtype for o in op.outputs]
        )
    except (ValueError, IndexError, TypeError):  # not what the evaluator expects: convert as usual
        return None
    if values is None or sum(v.size for v in values) > FOLD_LIMIT:
        return None
    if any(v.shape != tuple(ctx.tensor(o).shape) for v, o in zip(values, op.outputs)):
        return None  # not the outputs the file describes: leave it to the converter
    return values


def drop_unused(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    needed = {ctx.resolve(t) for t in ctx.subgraph.outputs}
    kept = []
    for op in reversed(ops):
        if (
            op.opcode == "CUSTOM"
            or has_trait(op, Trait.SIDE_EFFECTS)
            or any(ctx.resolve(o) in needed for o in op.outputs if o >= 0)
            or not op.outputs
        ):
            kept.append(op)
            needed.update(ctx.resolve(i) for i in op.inputs if i >= 0)
    return kept[::-1]


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


QUANTIZED_ACTIVATIONS = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def fake_quant_params(t: Tensor) -> tuple[float, int, int, int] | None:
    """(scale, zero point, qmin, qmax) for a per-tensor quantized activation, else None."""
    if t.data is not None or not t.quantized or t.dtype not in QUANTIZED_ACTIVATIONS:
        return None
    q = t.quantization
    if q.per_channel:
        return None
    return (float(q.scale[0]), int(q.zero_point[0]), *QUANTIZED_ACTIVATIONS[t.dtype])

"""Constant folding: ops computing only from constants and static shapes become constants.

A dynamic-shape export's SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE chain becomes a plain Reshape.
The numpy evaluators are facts about ops (`ops/folding.py`, registered with `folds`); here they
are applied: shape-only ops and CAST, which need the output's shape or type, are evaluated
directly, and results are cast to the output's type.
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext, Trait, folder, has_trait
from tfl_rebuild.tflite.ir import Operator

CASTABLE = ("float32", "int32", "int64", "bool")  # output types a folded value is cast to


def _reshape(op: Operator, v: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray | None:
    if len(v) > 1 and v[1].size and v[1].dtype.kind in "iu":
        return v[0].reshape([int(d) for d in v[1].reshape(-1)])
    return v[0].reshape(out_shape) if all(d >= 0 for d in out_shape) else None


def evaluate(
    op: Operator, values: list[np.ndarray], out_shape: tuple[int, ...], out_dtype: str
) -> np.ndarray | None:
    """The op's single output from known input values (None: not handled here)."""
    if has_trait(op, Trait.SHAPE_ONLY):
        return _reshape(op, values, out_shape)
    if op.opcode == "CAST":
        return values[0].astype(out_dtype) if out_dtype in CASTABLE else None
    f = folder(op)
    out = f.fn(op, values) if f is not None and not f.multi else None
    if out is None:
        return None
    out = np.asarray(out)
    if out_dtype in CASTABLE and out.dtype != out_dtype:
        out = out.astype(out_dtype)
    return out


def evaluate_multi(op: Operator, values: list[np.ndarray], out_dtypes: list[str]) -> list[np.ndarray] | None:
    """The outputs of a multi-output op (SPLIT, SPLIT_V, UNPACK) from known input values (None: not
    handled here)."""
    f = folder(op)
    if f is None or not f.multi:
        return None
    outs = f.fn(op, values)
    if len(outs) != len(out_dtypes):
        return None
    return [np.asarray(o).astype(d) if d in CASTABLE else np.asarray(o) for o, d in zip(outs, out_dtypes)]


def shape_of(in_shape: tuple[int, ...], out_dtype: str) -> np.ndarray:
    """SHAPE of a tensor with a known static shape."""
    return np.asarray(in_shape, out_dtype)


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
                value = shape_of(ctx.shape(data_inputs[0]), out.dtype)
            elif op.opcode == "RANK" and _known_shape(ctx, data_inputs[0]):
                value = np.asarray(len(ctx.shape(data_inputs[0])), out.dtype)
            elif all(ctx.is_const(i) for i in data_inputs) and (
                not out.quantized or _moves_on_its_grid(ctx, op, data_inputs)
            ):
                try:
                    value = evaluate(
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


def _moves_on_its_grid(ctx: ConvertContext, op: Operator, data_inputs: list[int]) -> bool:
    """Whether `op` only moves the values (a reshape, transpose, broadcast, gather or slice) of a
    constant quantized with its output's per-tensor scale and zero point: the result on that int
    grid is exact in float (an int8 ViT's class token, broadcast to the batch)."""
    out = ctx.tensor(op.outputs[0])
    source = ctx.tensor(ctx.resolve(data_inputs[0]))
    q, p = out.quantization, source.quantization
    return (
        (has_trait(op, Trait.SHAPE_ONLY) or has_trait(op, Trait.MOVES_VALUES))
        and source.dtype == out.dtype
        and source.quantized
        and not (q.per_channel or p.per_channel)
        and float(q.scale[0]) == float(p.scale[0])
        and int(q.zero_point[0]) == int(p.zero_point[0])
    )


def _evaluate_multi(ctx: ConvertContext, op: Operator, data_inputs: list[int]) -> list[np.ndarray] | None:
    try:
        values = evaluate_multi(
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


def drop_identity_reshapes(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    """A reshape to the shape it reads becomes an alias. A free-batch export computes its reshape
    targets from SHAPE at run time; folded at batch 1, some are [1, 2, 8, 8] -> [1, 2, 8, 8], and
    they sit inside patterns the lifting passes match (MultiHeadAttention's softmax)."""
    outputs = {ctx.resolve(t) for t in ctx.subgraph.outputs}
    kept = []
    for op in ops:
        data = [i for i in op.inputs[:1] if i >= 0 and not ctx.is_const(i)]
        if (
            has_trait(op, Trait.SHAPE_ONLY)
            and len(data) == 1
            and len(op.outputs) == 1
            and op.outputs[0] >= 0
            and op.outputs[0] not in outputs
            and ctx.shape(data[0]) == ctx.shape(op.outputs[0])
            and all(d > 0 for d in ctx.shape(data[0]))
            and ctx.tensor(data[0]).dtype == ctx.tensor(op.outputs[0]).dtype
        ):
            ctx.alias[op.outputs[0]] = data[0]
        else:
            kept.append(op)
    return kept

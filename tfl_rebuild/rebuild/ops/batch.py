"""Which ops compute each example of a batch from that example alone: the facts `passes.batch_axis` asks.

At batch 1 every computed tensor's axis 0 holds one example's rows (1, or more where a reshape
folded axes into it: a Dense on [1, 8, 16] runs on [8, 16]). An op keeps the examples apart when
its layer, run on several examples' rows stacked along axis 0, returns their results stacked the
same way, and says nothing about how many rows there are. Registry traits cover most ops
(elementwise, batch-preserving with constant weights, last-axis); the rules below cover the ops
whose attributes decide it (a transpose that keeps axis 0 first, a reduction not over it ...).
Each rule returns None when the op keeps the examples apart, else why not in a few words.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tfl_rebuild.rebuild.ops.registry import (
    ConvertContext,
    LayerSpec,
    OpKey,
    Trait,
    lookup,
    traits,
)
from tfl_rebuild.rebuild.ops.shape import transpose_perm
from tfl_rebuild.tflite.ir import Operator

RowRule = Callable[[Operator, ConvertContext], "str | None"]
ROW_RULES: dict[OpKey, RowRule] = {}


def _rule(*names: OpKey) -> Callable[[RowRule], RowRule]:
    def register(fn: RowRule) -> RowRule:
        for name in names:
            ROW_RULES[name] = fn
        return fn

    return register


def _data(op: Operator, ctx: ConvertContext) -> list[int]:
    return [i for i in op.inputs if i >= 0 and not ctx.is_const(i)]


def _axes(op: Operator, ctx: ConvertContext, slot: int, rank: int) -> list[int] | None:
    if len(op.inputs) <= slot or not ctx.is_const(op.inputs[slot]):
        return None
    return [int(a) % max(rank, 1) for a in np.asarray(ctx.const(op.inputs[slot])).reshape(-1)]


def _specs(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    specs = lookup(op, ctx.subgraph)(op, ctx)
    return list(specs) if isinstance(specs, list) else [specs]


def keeps_rows(op: Operator, ctx: ConvertContext) -> str | None:
    """None when `op`'s layer keeps the rows of axis 0 apart (see the module docstring), else why not."""
    name = ("CUSTOM", op.custom_code or "") if op.opcode == "CUSTOM" else op.opcode
    rule = ROW_RULES.get(name)
    if rule is not None:
        return rule(op, ctx)
    ts = traits(op)
    if Trait.ELEMENTWISE in ts:
        return _broadcasts(op, ctx)
    if Trait.BATCH_PRESERVING in ts:
        return None if len(_data(op, ctx)) == 1 else "weights computed"  # the data input alone
    if Trait.LAST_AXIS in ts:
        return None if ctx.rank(op.outputs[0]) >= 2 else "works along the batch axis"
    return "not known to keep the rows apart"


def refolds(op: Operator) -> bool:
    """Whether the op may change how many rows of axis 0 one example takes: a reshape (keras
    Reshape / Flatten keep axis 0; BatchReshape reshapes to -1 rows, and each example's rows are
    contiguous in memory), and FULLY_CONNECTED (rows of n_in values, the same way)."""
    return Trait.SHAPE_ONLY in traits(op) or op.opcode == "FULLY_CONNECTED"


def _broadcasts(op: Operator, ctx: ConvertContext) -> str | None:
    """Elementwise: computed operands of the output's rank (axis 0 aligned), constants without a
    length along axis 0 (they broadcast over the examples)."""
    rank = ctx.rank(op.outputs[0])
    for i in op.inputs:
        if i < 0:
            continue
        if ctx.is_const(i):
            shape = np.shape(ctx.const(i))
            if len(shape) == rank and shape[0] != 1:
                return "a constant runs along the batch axis"
        elif ctx.rank(i) != rank and not _merge_layer(op, ctx):
            return "broadcasts a computed operand over the batch axis"
    return None


def _merge_layer(op: Operator, ctx: ConvertContext) -> bool:
    """Whether the op's layer is a Keras merge layer (Multiply ...): it expands a lower-rank input
    after the batch axis, where numpy would pad in front (the converter takes one only where the
    two agree at batch 1, a squeeze-excite's [1, C] gate)."""
    specs = _specs(op, ctx)
    return len(specs) >= 1 and specs[0].call_list and not specs[0].custom


@_rule("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
def _reshape(op: Operator, ctx: ConvertContext) -> str | None:
    out = ctx.shape(op.outputs[0])
    if ctx.tensor(op.outputs[0]).dtype == "complex64":
        return "complex reshape"
    if not out or not all(d > 0 for d in out):
        return "reshapes to no rows"
    return None


@_rule("TRANSPOSE")
def _transpose(op: Operator, ctx: ConvertContext) -> str | None:
    perm = transpose_perm(op, ctx) if "perm" in op.options else _axes(op, ctx, 1, ctx.rank(op.inputs[0]))
    return None if perm and perm[0] == 0 else "moves the batch axis"


@_rule("CONCATENATION")
def _concatenation(op: Operator, ctx: ConvertContext) -> str | None:
    inputs = [i for i in op.inputs if i >= 0]
    if any(ctx.is_const(i) for i in inputs):
        return "joins constants"
    return None if int(op.options.get("axis", -1)) % ctx.rank(op.outputs[0]) != 0 else "joins along the batch"


@_rule("PAD", "PADV2", "MIRROR_PAD")
def _pad(op: Operator, ctx: ConvertContext) -> str | None:
    if not ctx.is_const(op.inputs[1]):
        return "paddings computed"
    pads = np.asarray(ctx.const(op.inputs[1])).reshape(-1, 2)
    return None if pads.size and not pads[0].any() else "pads the batch axis"


@_rule("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL")
def _reduce(op: Operator, ctx: ConvertContext) -> str | None:
    axes = _axes(op, ctx, 1, ctx.rank(op.inputs[0]))
    return None if axes is not None and 0 not in axes else "reduces over the batch axis"


@_rule("STRIDED_SLICE", "SLICE")
def _slice(op: Operator, ctx: ConvertContext) -> str | None:
    if not all(ctx.is_const(i) for i in op.inputs[1:] if i >= 0):
        return "bounds computed"
    specs = _specs(op, ctx)
    if len(specs) == 1 and specs[0].layer in ("Cropping1D", "Cropping2D", "Cropping3D"):
        return None  # taken only for a slice that keeps the batch and the channels whole
    if len(specs) != 1 or specs[0].layer != "Slice":
        return "adds axes"
    kwargs = specs[0].kwargs
    if list(kwargs["slices"][0]) != [0, None, 1] or 0 in kwargs.get("squeeze", ()):
        return "slices the batch axis"
    return None


@_rule("CUMSUM", "REVERSE_V2", "ARG_MAX", "ARG_MIN")
def _along_axes(op: Operator, ctx: ConvertContext) -> str | None:
    axes = _axes(op, ctx, 1, ctx.rank(op.inputs[0]))
    return None if axes is not None and 0 not in axes else "works along the batch axis"


@_rule("SPLIT", "SPLIT_V")
def _split(op: Operator, ctx: ConvertContext) -> str | None:
    x, slot = (op.inputs[1], 0) if op.opcode == "SPLIT" else (op.inputs[0], 2)
    axes = _axes(op, ctx, slot, ctx.rank(x))
    return None if axes is not None and 0 not in axes else "splits the batch axis"


@_rule("PACK", "UNPACK")
def _pack(op: Operator, ctx: ConvertContext) -> str | None:
    if any(ctx.is_const(i) for i in op.inputs if i >= 0):
        return "joins constants"
    rank = ctx.rank(op.outputs[0] if op.opcode == "PACK" else op.inputs[0])
    return None if int(op.options.get("axis", 0)) % max(rank, 1) != 0 else "stacks along the batch axis"


@_rule("TOPK_V2")
def _top_k(op: Operator, ctx: ConvertContext) -> str | None:
    return None if ctx.rank(op.inputs[0]) >= 2 else "works along the batch axis"


@_rule("ONE_HOT")
def _one_hot(op: Operator, ctx: ConvertContext) -> str | None:
    rank = ctx.rank(op.inputs[0])
    axis = int(op.options.get("axis", -1)) % (rank + 1)
    return None if rank >= 1 and axis != 0 else "puts its depth before the batch axis"


@_rule("FULLY_CONNECTED")
def _fully_connected(op: Operator, ctx: ConvertContext) -> str | None:
    return None if len(_data(op, ctx)) == 1 else "weights computed"  # a Dense on rows of n_in


@_rule("BATCH_MATMUL")
def _batch_matmul(op: Operator, ctx: ConvertContext) -> str | None:
    x, y = op.inputs[:2]
    rank = ctx.rank(op.outputs[0])
    for slot, t in ((0, x), (1, y)):
        if ctx.is_const(t):
            if ctx.rank(t) == rank and ctx.shape(t)[0] != 1:
                return "a constant runs along the batch axis"
            continue
        if ctx.rank(t) >= 3 and ctx.rank(t) == rank:
            continue
        adj = op.options.get("adj_x" if slot == 0 else "adj_y", False)
        if not (slot == 0 and not adj and ctx.is_const(y)):
            return "multiplies along the batch axis"
    return None


@_rule("LayerNormalization", "UnitNormalization")
def _layer_norm(op: Operator, ctx: ConvertContext) -> str | None:
    return None if 0 not in [int(a) for a in op.options["axes"]] else "normalizes over the batch axis"


@_rule(
    "SeparableConv2D",
    "Conv1D",
    "MaxPooling1D",
    "AveragePooling1D",
    "Embedding",
    "MultiHeadAttention",
    "GroupNormalization",
    "BatchNormalization",
)
def _keras_layer(op: Operator, ctx: ConvertContext) -> str | None:
    return None  # Keras layers over the axes after the batch (their constants are weights)


@_rule(("CUSTOM", "Convolution2DTransposeBias"))
def _transpose_conv_bias(op: Operator, ctx: ConvertContext) -> str | None:
    return None if len(_data(op, ctx)) == 1 else "weights computed"  # a Conv2DTranspose


@_rule("SELECT", "SELECT_V2")
def _select(op: Operator, ctx: ConvertContext) -> str | None:
    cond, x = op.inputs[:2]
    if op.opcode == "SELECT" and ctx.rank(cond) == 1 and ctx.rank(x) > 1:
        return "picks along the batch axis"
    return _broadcasts(op, ctx)  # keras.ops.where


@_rule("TILE")
def _tile(op: Operator, ctx: ConvertContext) -> str | None:
    multiples = _axes(op, ctx, 1, 1 << 30)
    return None if multiples and multiples[0] == 1 else "tiles the batch axis"


@_rule("GATHER")
def _gather(op: Operator, ctx: ConvertContext) -> str | None:
    params, indices = op.inputs[:2]
    axis = int(op.options.get("axis", 0)) % max(ctx.rank(params), 1)
    if int(op.options.get("batch_dims", 0)):
        return "gathers with batch dims"
    if ctx.is_const(params) and not ctx.is_const(indices) and axis == 0:
        return None  # a table looked up by each row's indices
    if ctx.is_const(indices) and not ctx.is_const(params) and axis != 0:
        return None  # the same positions of every row
    return "gathers along the batch axis"

"""Elementwise ops of one or two operands (arithmetic, comparison, math functions)."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.activation import with_activation
from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext, LayerSpec, Trait, converter
from tfl_rebuild.tflite.ir import Operator

# TFLite op -> (keras.layers merge class for two inputs it can take or None, BinaryOp name)
BINARY = {
    "ADD": ("Add", "add"),
    "SUB": ("Subtract", "subtract"),
    "MUL": ("Multiply", "multiply"),
    "DIV": (None, "divide"),
    "MAXIMUM": ("Maximum", "maximum"),
    "MINIMUM": ("Minimum", "minimum"),
    "POW": (None, "power"),
    "SQUARED_DIFFERENCE": (None, "squared_difference"),
    "FLOOR_DIV": (None, "floor_divide"),
    "FLOOR_MOD": (None, "floor_mod"),
    "LESS": (None, "less"),
    "LESS_EQUAL": (None, "less_equal"),
    "GREATER": (None, "greater"),
    "GREATER_EQUAL": (None, "greater_equal"),
    "EQUAL": (None, "equal"),
    "NOT_EQUAL": (None, "not_equal"),
    "LOGICAL_AND": (None, "logical_and"),
    "LOGICAL_OR": (None, "logical_or"),
    "RIGHT_SHIFT": (None, "right_shift"),
    "BITWISE_XOR": (None, "bitwise_xor"),
}


def merge_broadcasts(sa: tuple[int, ...], sb: tuple[int, ...]) -> bool:
    """Whether a Keras merge layer computes TFLite's (numpy's) broadcast of shapes sa and sb: it
    needs the same batch (first axis), and expands a lower-rank input at axis 1 where numpy pads
    in front, the same only when that input's first axis is 1 (a squeeze-excite's [1, C] gate)."""
    if tuple(sa) == tuple(sb):
        return True
    if not sa or not sb or sa[0] != sb[0]:
        return False
    low, high = sorted((tuple(sa), tuple(sb)), key=len)
    extra = len(high) - len(low)
    if extra and low[0] != 1:
        return False
    try:
        return np.broadcast_shapes((low[0], *[1] * extra, *low[1:]), high) == np.broadcast_shapes(sa, sb)
    except ValueError:
        return False


def binary(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    merge, fn = BINARY[op.opcode]
    if len(op.inputs) < 2 or min(op.inputs[:2]) < 0:
        raise ConversionError(f"{op.opcode} op {op.index}: needs two operands, has {list(op.inputs)}")
    a, b = op.inputs[:2]
    const_a, const_b = ctx.is_const(a), ctx.is_const(b)
    if const_a and const_b:
        raise ConversionError(f"{op.opcode} op {op.index}: both operands are constants")
    _check_broadcast(op, ctx, a, b)
    sa, sb = ctx.shape(a), ctx.shape(b)
    # Keras' Add may take its second input for a bias (TensorFlow's ops.add): same shapes only there.
    broadcasts = sa == sb or (op.opcode == "MUL" and merge_broadcasts(sa, sb))
    if merge and not (const_a or const_b) and broadcasts:
        spec = LayerSpec(merge, {}, (a, b), op.outputs, call_list=True)
    elif const_a or const_b:
        c = ctx.const(a if const_a else b)
        c = c.astype(np.float32) if c.dtype.kind == "f" else c
        spec = LayerSpec(
            "BinaryOp",
            {"op": fn, "constant_shape": list(c.shape)} | ({"constant_first": True} if const_a else {}),
            (b if const_a else a,),
            op.outputs,
            weights=(("constant", c),),
            custom=True,
        )
    else:
        spec = LayerSpec("BinaryOp", {"op": fn}, (a, b), op.outputs, custom=True)
    return with_activation(op, spec)


def _check_broadcast(op: Operator, ctx: ConvertContext, a: int, b: int) -> None:
    """Refuse operands whose (static) shapes cannot broadcast: the runtime would refuse them too."""
    sa, sb = ctx.shape(a), ctx.shape(b)
    if any(d < 0 for d in (*sa, *sb)):
        return  # a dynamic dim may be anything
    try:
        np.broadcast_shapes(sa, sb)
    except ValueError:
        raise ConversionError(
            f"{op.opcode} op {op.index}: operands of shapes {list(sa)} and {list(sb)} do not broadcast"
        ) from None


for _name in BINARY:
    converter(_name, range(1, 8), traits=[Trait.ELEMENTWISE])(binary)


@converter("ATAN2", range(1, 2), traits=[Trait.ELEMENTWISE])
def atan2(op: Operator, ctx: ConvertContext) -> LayerSpec:
    y, x = op.inputs[:2]
    if ctx.is_const(y) and ctx.is_const(x):
        raise ConversionError(f"ATAN2 op {op.index}: both operands are constants")
    if not (ctx.is_const(y) or ctx.is_const(x)):
        return LayerSpec("Atan2", {}, (y, x), op.outputs, custom=True)
    c = np.asarray(ctx.const(y if ctx.is_const(y) else x), np.float32)
    return LayerSpec(
        "Atan2",
        {"constant_shape": list(c.shape)} | ({"constant_first": True} if ctx.is_const(y) else {}),
        (x if ctx.is_const(y) else y,),
        op.outputs,
        weights=(("constant", c),),
        custom=True,
    )


UNARY = {
    "EXP": "exp",
    "LOG": "log",
    "SQRT": "sqrt",
    "RSQRT": "rsqrt",
    "SQUARE": "square",
    "NEG": "negative",
    "ABS": "abs",
    "SIN": "sin",
    "COS": "cos",
    "FLOOR": "floor",
    "CEIL": "ceil",
    "ROUND": "round",
    "SIGN": "sign",
    "LOGICAL_NOT": "logical_not",
}


def unary(op: Operator, ctx: ConvertContext) -> LayerSpec:
    return LayerSpec("UnaryOp", {"op": UNARY[op.opcode]}, (op.inputs[0],), op.outputs, custom=True)


for _name in UNARY:
    converter(_name, range(1, 6), traits=[Trait.ELEMENTWISE])(unary)


@converter("ADD_N", range(1, 3), traits=[Trait.ELEMENTWISE])
def add_n(op: Operator, ctx: ConvertContext) -> LayerSpec:
    inputs = [i for i in op.inputs if i >= 0]
    if any(ctx.is_const(i) for i in inputs):
        raise ConversionError(f"ADD_N op {op.index}: constant operands are not supported")
    return LayerSpec("Add", {}, tuple(inputs), op.outputs, call_list=True)

"""Products of two computed tensors: BATCH_MATMUL, and FULLY_CONNECTED whose weights are an
activation (conv.py's converter hands those here; constant weights become keras Dense)."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.activation import with_activation
from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext, LayerSpec, converter
from tfl_rebuild.tflite.ir import Operator


def _const(op: Operator, ctx: ConvertContext, i: int) -> np.ndarray:
    c = np.asarray(ctx.const(i))
    if c.dtype.kind != "f":
        raise ConversionError(
            f"{op.opcode} op {op.index}: constant operand of type {c.dtype} is not supported"
        )
    return c.astype(np.float32)


def matmul(
    x: int,
    y: int,
    adj_x: bool,
    adj_y: bool,
    op: Operator,
    ctx: ConvertContext,
    outputs: tuple[int, ...],
    src=None,
) -> LayerSpec:
    """x @ y (either may be a constant; `src` replaces x by an earlier spec of the same op)."""
    kwargs = {"adj_x": adj_x, "adj_y": adj_y}
    const_x, const_y = src is None and ctx.is_const(x), ctx.is_const(y)
    if const_x and const_y:
        raise ConversionError(f"{op.opcode} op {op.index}: both operands are constants")
    if const_x or const_y:
        c = _const(op, ctx, x if const_x else y)
        kwargs |= {"constant_shape": list(c.shape)} | ({"constant_first": True} if const_x else {})
        return LayerSpec(
            "MatMul",
            kwargs,
            (y if const_x else (src or x),),
            outputs,
            weights=(("constant", c),),
            custom=True,
        )
    return LayerSpec("MatMul", kwargs, (src or x, y), outputs, custom=True)


@converter("BATCH_MATMUL", range(1, 5), hybrid_input=0)
def batch_matmul(op: Operator, ctx: ConvertContext) -> LayerSpec:
    o = op.options
    return matmul(op.inputs[0], op.inputs[1], bool(o.get("adj_x")), bool(o.get("adj_y")), op, ctx, op.outputs)


def fully_connected_dynamic(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    """y = x W^T + b with W [units, n_in] computed at run time (e.g. tf.matmul(a, b, transpose_b=True))."""
    if len(op.inputs) < 2 or op.inputs[0] < 0 or op.inputs[1] < 0:
        raise ConversionError(f"{op.opcode} op {op.index}: needs an input and weights, has {list(op.inputs)}")
    x, w = op.inputs[:2]
    if ctx.rank(w) < 2:
        raise ConversionError(
            f"{op.opcode} op {op.index}: weights {ctx.tensor(w).name!r} of shape {list(ctx.shape(w))} "
            "are not a [units, n_in] matrix"
        )
    n_in = ctx.shape(w)[-1]
    in_shape = ctx.shape(x)
    specs: list[LayerSpec] = []
    if in_shape[-1] != n_in or (len(in_shape) > 2 and not op.options.get("keep_num_dims", False)):
        # TFLite flattens everything but the last axis into rows of n_in values.
        specs.append(LayerSpec("BatchReshape", {"shape": [-1, n_in]}, (x,), custom=True))
    specs.append(matmul(x, w, False, True, op, ctx, (), src=specs[-1] if specs else None))
    bias = op.inputs[2] if len(op.inputs) > 2 else -1
    if bias >= 0:
        if ctx.is_const(bias):
            b = _const(op, ctx, bias)
            specs.append(
                LayerSpec(
                    "BinaryOp",
                    {"op": "add", "constant_shape": list(b.shape)},
                    (specs[-1],),
                    weights=(("constant", b),),
                    custom=True,
                )
            )
        else:
            specs.append(LayerSpec("BinaryOp", {"op": "add"}, (specs[-1], bias), custom=True))
    last = specs.pop()
    last.outputs = op.outputs
    return specs + with_activation(op, last)

"""Writing into tensors: SCATTER_ND, SPARSE_TO_DENSE, DYNAMIC_UPDATE_SLICE, MATRIX_DIAG,
MATRIX_SET_DIAG, and REVERSE_SEQUENCE (a per-batch gather along the sequence axis)."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext, LayerSpec, converter
from tfl_rebuild.tflite.ir import Operator


def _static(op: Operator, ctx: ConvertContext, t: int, what: str) -> list[int]:
    shape = list(ctx.shape(t))
    if any(d < 0 for d in shape):
        raise ConversionError(f"{op.opcode} op {op.index}: {what} shape {shape} is not static")
    return shape


def _float_weight(op: Operator, ctx: ConvertContext, t: int, what: str) -> np.ndarray:
    value = np.asarray(ctx.const(t))
    if value.dtype.kind != "f":
        raise ConversionError(
            f"{op.opcode} op {op.index}: a constant {what} of type {value.dtype} is not supported"
        )
    return value.astype(np.float32)


@converter("SCATTER_ND", range(1, 2))
def scatter_nd(op: Operator, ctx: ConvertContext) -> LayerSpec:
    indices, updates, shape = op.inputs[:3]
    if not ctx.is_const(shape):
        raise ConversionError(
            f"SCATTER_ND op {op.index}: an output shape computed at run time is not supported"
        )
    kwargs: dict = {"shape": [int(d) for d in np.asarray(ctx.const(shape)).reshape(-1)]}
    return _scatter_layer("ScatterNd", kwargs, op, ctx, indices, updates, "updates")


@converter("SPARSE_TO_DENSE", range(1, 4))
def sparse_to_dense(op: Operator, ctx: ConvertContext) -> LayerSpec:
    indices, shape, values, default = op.inputs[:4]
    if not ctx.is_const(shape) or not ctx.is_const(default):
        raise ConversionError(
            f"SPARSE_TO_DENSE op {op.index}: the output shape and default value must be constants"
        )
    out_shape = [int(d) for d in np.asarray(ctx.const(shape)).reshape(-1)]
    fill = np.asarray(ctx.const(default)).reshape(-1)
    kwargs: dict = {
        "shape": out_shape,
        "default_value": float(fill[0]) if fill.dtype.kind == "f" else int(fill[0]),
    }
    return _scatter_layer("SparseToDense", kwargs, op, ctx, indices, values, "values")


def _scatter_layer(
    layer: str, kwargs: dict, op: Operator, ctx: ConvertContext, indices: int, values: int, what: str
) -> LayerSpec:
    """Constant indices become a layer argument, constant values its stored weight; the rest are inputs.
    (Both constant: passes fold the op before any converter sees it.)"""
    if ctx.is_const(indices) and ctx.is_const(values):
        raise ConversionError(f"{op.opcode} op {op.index}: both indices and {what} are constants")
    if ctx.is_const(indices):
        kwargs["indices"] = np.asarray(ctx.const(indices)).astype(np.int64).tolist()
        return LayerSpec(layer, kwargs, (values,), op.outputs, custom=True)
    if ctx.is_const(values):
        value = _float_weight(op, ctx, values, what)
        kwargs["constant_shape"] = list(value.shape)
        return LayerSpec(layer, kwargs, (indices,), op.outputs, weights=(("constant", value),), custom=True)
    return LayerSpec(layer, kwargs, (indices, values), op.outputs, custom=True)


@converter("DYNAMIC_UPDATE_SLICE", range(1, 3))
def dynamic_update_slice(op: Operator, ctx: ConvertContext) -> LayerSpec:
    operand, update, start = op.inputs[:3]
    full, part = _static(op, ctx, operand, "operand"), _static(op, ctx, update, "update")
    if len(full) != len(part) or any(m > n for n, m in zip(full, part)):
        raise ConversionError(
            f"DYNAMIC_UPDATE_SLICE op {op.index}: update {part} does not fit operand {full}"
        )
    if ctx.is_const(update):
        raise ConversionError(f"DYNAMIC_UPDATE_SLICE op {op.index}: a constant update is not supported")
    kwargs: dict = {}
    inputs: tuple = (update,)
    if ctx.is_const(start):  # clamped as the kernel does, so the update always fits
        starts = [int(s) for s in np.asarray(ctx.const(start)).reshape(-1)]
        kwargs["start"] = [min(max(s, 0), n - m) for s, n, m in zip(starts, full, part)]
    else:
        inputs = (update, start)
    weights: tuple = ()
    if ctx.is_const(operand):  # writing into a fixed tensor (a zero buffer, say)
        value = _float_weight(op, ctx, operand, "operand")
        kwargs["constant_shape"] = list(value.shape)
        weights = (("constant", value),)
    else:
        inputs = (operand, *inputs)
    return LayerSpec("DynamicUpdateSlice", kwargs, inputs, op.outputs, weights=weights, custom=True)


@converter("MATRIX_DIAG", range(1, 2))
def matrix_diag(op: Operator, ctx: ConvertContext) -> LayerSpec:
    if ctx.is_const(op.inputs[0]):
        raise ConversionError(f"MATRIX_DIAG op {op.index}: the diagonal is a constant")
    return LayerSpec("MatrixDiag", {}, (op.inputs[0],), op.outputs, custom=True)


@converter("MATRIX_SET_DIAG", range(1, 2))
def matrix_set_diag(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x, diagonal = op.inputs[:2]
    if ctx.is_const(x):
        raise ConversionError(f"MATRIX_SET_DIAG op {op.index}: a constant input matrix is not supported")
    if ctx.is_const(diagonal):
        value = _float_weight(op, ctx, diagonal, "diagonal")
        return LayerSpec(
            "MatrixSetDiag",
            {"constant_shape": list(value.shape)},
            (x,),
            op.outputs,
            weights=(("constant", value),),
            custom=True,
        )
    return LayerSpec("MatrixSetDiag", {}, (x, diagonal), op.outputs, custom=True)


@converter("REVERSE_SEQUENCE", range(1, 3))
def reverse_sequence(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x, lengths = op.inputs[:2]
    rank = ctx.rank(x)
    seq, batch = int(op.options.get("seq_dim", 0)) % rank, int(op.options.get("batch_dim", 0)) % rank
    shape = _static(op, ctx, x, "input")
    if seq == batch:
        raise ConversionError(f"REVERSE_SEQUENCE op {op.index}: seq_dim and batch_dim are both {seq}")
    kwargs: dict = {"seq_axis": seq, "batch_axis": batch}
    if ctx.is_const(lengths):
        values = [int(v) for v in np.asarray(ctx.const(lengths)).reshape(-1)]
        if len(values) != shape[batch] or not all(0 <= v <= shape[seq] for v in values):
            raise ConversionError(
                f"REVERSE_SEQUENCE op {op.index}: lengths {values} do not fit input {shape}"
            )
        kwargs["lengths"] = values
        return LayerSpec("ReverseSequence", kwargs, (x,), op.outputs, custom=True)
    return LayerSpec("ReverseSequence", kwargs, (x, lengths), op.outputs, custom=True)

"""Array ops: GATHER, GATHER_ND, PACK, UNPACK, SPLIT, SPLIT_V, TILE, BROADCAST_TO, CAST, SHAPE,
ARG_MAX, ARG_MIN, SELECT, SELECT_V2, REVERSE_V2, CUMSUM, FILL, ZEROS_LIKE,
ONE_HOT, TOPK_V2, EMBEDDING_LOOKUP, BITCAST, RANK, BUCKETIZE; WHERE and RANGE (refused unless
folded), UNIQUE and the random ops are refused (comparisons are BinaryOps in elementwise.py)."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import (
    ConversionError,
    ConvertContext,
    LayerSpec,
    Trait,
    converter,
    refuse,
)
from tfl_rebuild.tflite.ir import Operator


def _ints(ctx: ConvertContext, i: int) -> list[int]:
    return [int(v) for v in np.asarray(ctx.const(i)).reshape(-1)]


def _float_const(op: Operator, ctx: ConvertContext, i: int) -> np.ndarray:
    """A constant operand stored as a float32 weight (the layers keep float variables)."""
    c = np.asarray(ctx.const(i))
    if c.dtype.kind != "f":
        raise ConversionError(
            f"{op.opcode} op {op.index}: constant operand of type {c.dtype} is not supported"
        )
    return c.astype(np.float32)


def _no_consts(op: Operator, ctx: ConvertContext, inputs) -> None:
    if any(ctx.is_const(i) for i in inputs):
        raise ConversionError(f"{op.opcode} op {op.index}: constant operands are not supported")


@converter("GATHER", range(1, 8), traits=[Trait.MOVES_VALUES])
def gather(op: Operator, ctx: ConvertContext) -> LayerSpec:
    params, indices = op.inputs[:2]
    axis = int(op.options.get("axis", 0)) % max(ctx.rank(params), 1)
    batch_dims = int(op.options.get("batch_dims", 0))
    if batch_dims:  # up to the indices' rank (each row takes one slice); negative counts from it
        return _batch_gather(op, ctx, axis, batch_dims + (ctx.rank(indices) if batch_dims < 0 else 0))
    if ctx.is_const(params) and ctx.is_const(indices):
        raise ConversionError(f"GATHER op {op.index}: both operands are constants")
    if ctx.is_const(indices):
        idx = np.asarray(ctx.const(indices)).astype(np.int64).tolist()
        return LayerSpec("Gather", {"axis": axis, "indices": idx}, (params,), op.outputs, custom=True)
    if ctx.is_const(params):  # an embedding table looked up with computed indices
        table = _float_const(op, ctx, params)
        return LayerSpec(
            "Gather",
            {"axis": axis, "constant_shape": list(table.shape)},
            (indices,),
            op.outputs,
            weights=(("constant", table),),
            custom=True,
        )
    return LayerSpec("Gather", {"axis": axis}, (params, indices), op.outputs, custom=True)


def _batch_gather(op: Operator, ctx: ConvertContext, axis: int, batch_dims: int) -> LayerSpec:
    params, indices = op.inputs[:2]
    if not 0 < batch_dims <= ctx.rank(indices) or axis < batch_dims or ctx.is_const(params):
        table = " and a constant table" if ctx.is_const(params) else ""
        raise ConversionError(
            f"GATHER op {op.index}: batch_dims {batch_dims} with axis {axis}{table} is not supported"
        )
    kwargs = {"axis": axis, "batch_dims": batch_dims}
    if ctx.is_const(indices):
        kwargs["indices"] = np.asarray(ctx.const(indices)).astype(np.int64).tolist()
        return LayerSpec("BatchGather", kwargs, (params,), op.outputs, custom=True)
    return LayerSpec("BatchGather", kwargs, (params, indices), op.outputs, custom=True)


@converter("GATHER_ND", range(1, 6))
def gather_nd(op: Operator, ctx: ConvertContext) -> LayerSpec:
    params, indices = op.inputs[:2]
    if ctx.is_const(params) and ctx.is_const(indices):
        raise ConversionError(f"GATHER_ND op {op.index}: both operands are constants")
    if ctx.is_const(indices):
        idx = np.asarray(ctx.const(indices)).astype(np.int64).tolist()
        return LayerSpec("GatherNd", {"indices": idx}, (params,), op.outputs, custom=True)
    if ctx.is_const(params):
        table = _float_const(op, ctx, params)
        return LayerSpec(
            "GatherNd",
            {"constant_shape": list(table.shape)},
            (indices,),
            op.outputs,
            weights=(("constant", table),),
            custom=True,
        )
    return LayerSpec("GatherNd", {}, (params, indices), op.outputs, custom=True)


@converter("PACK", range(1, 5))
def pack(op: Operator, ctx: ConvertContext) -> LayerSpec | list[LayerSpec]:
    axis = int(op.options.get("axis", 0)) % (ctx.rank(op.inputs[0]) + 1)
    if not any(ctx.is_const(i) for i in op.inputs):
        return LayerSpec("Stack", {"axis": axis}, tuple(op.inputs), op.outputs, custom=True, call_list=True)
    if all(ctx.is_const(i) for i in op.inputs):
        raise ConversionError(f"PACK op {op.index}: all operands are constants")
    # Constants join as float weights; a model mixing them with integer tensors stays integer.
    out_dtype = ctx.tensor(op.outputs[0]).dtype
    values = [np.asarray(ctx.const(i)).astype(np.float32) for i in op.inputs if ctx.is_const(i)]
    spec = LayerSpec(
        "Stack",
        {
            "axis": axis,
            "layout": "".join("c" if ctx.is_const(i) else "i" for i in op.inputs),
            "constant_shapes": [list(v.shape) for v in values],
        },
        tuple(i for i in op.inputs if not ctx.is_const(i)),
        op.outputs,
        weights=tuple((f"constant_{k}", v) for k, v in enumerate(values)),
        custom=True,
        call_list=True,
    )
    if out_dtype == "float32":
        return spec
    outputs, spec.outputs = spec.outputs, ()
    return [spec, LayerSpec("Cast", {"to": out_dtype}, (spec,), outputs, custom=True)]


@converter("UNPACK", range(1, 5))
def unpack(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x = op.inputs[0]
    axis = int(op.options.get("axis", 0)) % ctx.rank(x)
    return LayerSpec("Unstack", {"axis": axis}, (x,), op.outputs, custom=True)


def _split(op: Operator, ctx: ConvertContext, x: int, axis_tensor: int, sizes: list[int]) -> LayerSpec:
    axis = _ints(ctx, axis_tensor)[0] % ctx.rank(x)
    dim = ctx.shape(x)[axis]
    if sizes.count(-1) == 1:  # SPLIT_V: one size may be "the rest"
        sizes[sizes.index(-1)] = dim - (sum(sizes) + 1)
    if sum(sizes) != dim or min(sizes) < 0:
        raise ConversionError(f"{op.opcode} op {op.index}: sizes {sizes} do not split {dim}")
    return LayerSpec("Split", {"sizes": sizes, "axis": axis}, (x,), op.outputs, custom=True)


@converter("SPLIT", range(1, 5))
def split(op: Operator, ctx: ConvertContext) -> LayerSpec:
    axis_tensor, x = op.inputs[:2]
    n = int(op.options.get("num_splits", len(op.outputs)))
    dim = ctx.shape(x)[_ints(ctx, axis_tensor)[0] % ctx.rank(x)]
    if n <= 0 or dim % n:
        raise ConversionError(f"SPLIT op {op.index}: {dim} does not split into {n} equal parts")
    return _split(op, ctx, x, axis_tensor, [dim // n] * n)


@converter("SPLIT_V", range(1, 3))
def split_v(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x, sizes, axis_tensor = op.inputs[:3]
    return _split(op, ctx, x, axis_tensor, _ints(ctx, sizes))


@converter("TILE", range(1, 4), traits=[Trait.MOVES_VALUES])
def tile(op: Operator, ctx: ConvertContext) -> LayerSpec:
    return LayerSpec(
        "Tile", {"multiples": _ints(ctx, op.inputs[1])}, (op.inputs[0],), op.outputs, custom=True
    )


@converter("BROADCAST_TO", range(1, 4), traits=[Trait.MOVES_VALUES])
def broadcast_to(op: Operator, ctx: ConvertContext) -> LayerSpec:
    # The output tensor's shape is the target (also when the shape operand is computed).
    shape = list(ctx.shape(op.outputs[0]))
    if any(d < 0 for d in shape):
        raise ConversionError(f"BROADCAST_TO op {op.index}: dynamic output shape {shape}")
    return LayerSpec("BroadcastTo", {"shape": shape}, (op.inputs[0],), op.outputs, custom=True)


@converter("CAST", range(1, 8), traits=[Trait.ELEMENTWISE, Trait.COMPLEX_OK])
def cast(op: Operator, ctx: ConvertContext) -> LayerSpec:
    to = ctx.tensor(op.outputs[0]).dtype
    if ctx.tensor(op.inputs[0]).dtype.startswith("complex"):
        # tf.cast of complex to float keeps the real part (TFLite's kernel: std::real), as REAL does
        if ctx.tensor(op.inputs[0]).dtype != "complex64" or to != "float32":
            raise ConversionError(
                f"CAST op {op.index}: {ctx.tensor(op.inputs[0]).dtype} to {to} is not supported "
                "(complex64 to float32 is)"
            )
        return LayerSpec("ComplexPart", {"part": "real"}, (op.inputs[0],), op.outputs, custom=True)
    if to not in ("float32", "float16", "int32", "int64", "int16", "int8", "uint8", "bool"):
        raise ConversionError(f"CAST op {op.index}: cast to {to} is not supported")
    return LayerSpec("Cast", {"to": to}, (op.inputs[0],), op.outputs, custom=True)


@converter("SHAPE", range(1, 3))
def shape(op: Operator, ctx: ConvertContext) -> LayerSpec:
    # Computed from the Keras tensor at run time (static here: the rebuild has fixed input shapes).
    return LayerSpec(
        "ShapeOf", {"out_dtype": ctx.tensor(op.outputs[0]).dtype}, (op.inputs[0],), op.outputs, custom=True
    )


@converter("RANK", range(1, 2))
def rank(op: Operator, ctx: ConvertContext) -> LayerSpec:
    # passes.fold folds a RANK whose result something reads; this one is a model output.
    return LayerSpec(
        "RankOf", {"out_dtype": ctx.tensor(op.outputs[0]).dtype}, (op.inputs[0],), op.outputs, custom=True
    )


# WHERE of a constant condition folds (ops/folding.py); otherwise the row count follows the data.
refuse(
    "WHERE",
    "{output} has one row per true element of {input}, a number only the data decides, which a "
    "fixed-shape Keras model cannot hold; cut the model before it and run the rest outside",
)


def arg_reduce(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x = op.inputs[0]
    axis = _ints(ctx, op.inputs[1])[0] % ctx.rank(x)
    kind = "argmax" if op.opcode == "ARG_MAX" else "argmin"
    return LayerSpec(
        "ArgReduce",
        {"op": kind, "axis": axis, "out_dtype": ctx.tensor(op.outputs[0]).dtype},
        (x,),
        op.outputs,
        custom=True,
    )


converter("ARG_MAX", range(1, 4))(arg_reduce)
converter("ARG_MIN", range(1, 4))(arg_reduce)


def select(op: Operator, ctx: ConvertContext) -> LayerSpec:
    cond, x, y = op.inputs[:3]
    layout = "".join("c" if ctx.is_const(i) else "i" for i in (cond, x, y))
    # A constant condition (a mask) is stored as 0 / 1 floats; the layer casts it back to bool.
    consts = [np.asarray(ctx.const(cond)).astype(bool).astype(np.float32)] if ctx.is_const(cond) else []
    consts += [_float_const(op, ctx, i) for i in (x, y) if ctx.is_const(i)]
    kwargs: dict = {"layout": layout}
    if consts:
        kwargs["constant_shapes"] = [list(c.shape) for c in consts]
    # SELECT (v1) with a rank-1 condition picks whole slices along the first axis.
    if op.opcode == "SELECT" and ctx.rank(cond) == 1 and ctx.rank(x) > 1:
        kwargs["rank_one"] = True
    return LayerSpec(
        "Select",
        kwargs,
        tuple(i for i in (cond, x, y) if not ctx.is_const(i)),
        op.outputs,
        weights=tuple((f"constant_{k}", c) for k, c in enumerate(consts)),
        custom=True,
    )


converter("SELECT", range(1, 5))(select)
converter("SELECT_V2", range(1, 3))(select)


@converter("REVERSE_V2", range(1, 4))
def reverse_v2(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x = op.inputs[0]
    axes = sorted({a % ctx.rank(x) for a in _ints(ctx, op.inputs[1])})
    return LayerSpec("Reverse", {"axes": axes}, (x,), op.outputs, custom=True)


@converter("CUMSUM", range(1, 2))
def cumsum(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x = op.inputs[0]
    kwargs = {"axis": _ints(ctx, op.inputs[1])[0] % ctx.rank(x)}
    for flag in ("exclusive", "reverse"):
        if op.options.get(flag):
            kwargs[flag] = True
    return LayerSpec("CumSum", kwargs, (x,), op.outputs, custom=True)


@converter("FILL", range(1, 5))
def fill(op: Operator, ctx: ConvertContext) -> LayerSpec:
    # Constant dims and value were folded by passes.fold; here the value is computed at run time.
    shape = list(ctx.shape(op.outputs[0]))
    if any(d < 0 for d in shape):
        raise ConversionError(f"FILL op {op.index}: output shape {shape} is not static")
    if ctx.is_const(op.inputs[1]):  # a constant value with dims computed at run time
        raise ConversionError(f"FILL op {op.index}: dims computed from tensors whose shape is dynamic")
    return LayerSpec("BroadcastTo", {"shape": shape}, (op.inputs[1],), op.outputs, custom=True)


def _full_like(value: float):
    def convert(op: Operator, ctx: ConvertContext) -> LayerSpec:
        return LayerSpec("FullLike", {"value": value}, (op.inputs[0],), op.outputs, custom=True)

    return convert


converter("ZEROS_LIKE", range(1, 2), traits=[Trait.ELEMENTWISE])(_full_like(0.0))


# With known start / limit / delta RANGE folds into a constant (ops/folding.py).
refuse(
    "RANGE",
    "start, limit and delta computed from data give a data-dependent length, which a fixed-shape "
    "Keras model cannot hold",
)


@converter("ONE_HOT", range(1, 2))
def one_hot(op: Operator, ctx: ConvertContext) -> LayerSpec:
    indices, depth, on, off = op.inputs[:4]
    if ctx.is_const(indices) or not all(ctx.is_const(i) for i in (depth, on, off)):
        raise ConversionError(
            f"ONE_HOT op {op.index}: needs computed indices and constant depth / on / off values"
        )
    axis = int(op.options.get("axis", -1))
    kwargs = {
        "depth": _ints(ctx, depth)[0],
        "axis": axis % (ctx.rank(indices) + 1),
        "on_value": float(np.asarray(ctx.const(on)).reshape(-1)[0]),
        "off_value": float(np.asarray(ctx.const(off)).reshape(-1)[0]),
        "out_dtype": ctx.tensor(op.outputs[0]).dtype,
    }
    return LayerSpec("OneHot", kwargs, (indices,), op.outputs, custom=True)


@converter("TOPK_V2", range(1, 4))
def topk_v2(op: Operator, ctx: ConvertContext) -> LayerSpec:
    k = _ints(ctx, op.inputs[1])[0]
    return LayerSpec(
        "TopK",
        {"k": k, "index_dtype": ctx.tensor(op.outputs[1]).dtype},
        (op.inputs[0],),
        op.outputs,
        custom=True,
    )


@converter("EMBEDDING_LOOKUP", range(1, 5))
def embedding_lookup(op: Operator, ctx: ConvertContext) -> LayerSpec:
    ids, table = op.inputs[:2]
    if ctx.is_const(ids) or not ctx.is_const(table):
        raise ConversionError(f"EMBEDDING_LOOKUP op {op.index}: needs computed ids and a constant table")
    values = _float_const(op, ctx, table)
    return LayerSpec(
        "Gather",
        {"axis": 0, "constant_shape": list(values.shape)},
        (ids,),
        op.outputs,
        weights=(("constant", values),),
        custom=True,
    )


BITCAST_TYPES = ("float32", "int32", "uint32", "int16", "uint16", "int8", "uint8", "int64", "float16", "bool")


@converter("BITCAST", range(1, 2))
def bitcast(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x, out = op.inputs[0], op.outputs[0]
    to, shape = ctx.tensor(out).dtype, list(ctx.shape(out))
    if to not in BITCAST_TYPES or ctx.tensor(x).dtype not in BITCAST_TYPES or ctx.tensor(x).quantized:
        raise ConversionError(f"BITCAST op {op.index}: {ctx.tensor(x).dtype} -> {to} is not supported")
    if any(d < 0 for d in shape):
        raise ConversionError(f"BITCAST op {op.index}: output shape {shape} is not static")
    return LayerSpec("Bitcast", {"to": to, "shape": shape}, (x,), op.outputs, custom=True)


@converter("BUCKETIZE", range(1, 2))
def bucketize(op: Operator, ctx: ConvertContext) -> LayerSpec:
    boundaries = [float(b) for b in np.asarray(op.options.get("boundaries", []), np.float64).reshape(-1)]
    if any(b > c for b, c in zip(boundaries, boundaries[1:])):
        raise ConversionError(f"BUCKETIZE op {op.index}: boundaries {boundaries} are not sorted")
    return LayerSpec("Bucketize", {"boundaries": boundaries}, (op.inputs[0],), op.outputs, custom=True)


refuse(
    "UNIQUE",
    "{output} holds one element per distinct value of {input}, a number only the data decides, "
    "which a fixed-shape Keras model cannot hold; cut the model before it and run the rest outside",
)
for _name in ("RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL", "MULTINOMIAL"):
    refuse(
        _name,
        "{output} is drawn at random by the runtime's own generator, which a rebuild can neither "
        "reproduce nor be verified against; feed it as a model input instead",
    )

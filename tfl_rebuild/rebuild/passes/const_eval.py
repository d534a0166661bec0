"""Numpy evaluation of ops whose inputs are all known: what `passes.fold_constants` folds.

Mostly the small integer chains a dynamic-shape export leaves behind (SHAPE -> STRIDED_SLICE ->
PACK -> RESHAPE), plus the elementwise and array ops around them. Each evaluator gets the op and
its input values and returns the output value, or None when it does not handle the case (the op is
then converted as usual).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tfl_rebuild.tflite.ir import Operator

Evaluator = Callable[[Operator, list[np.ndarray]], "np.ndarray | None"]

_BINARY: dict[str, Callable] = {
    "ADD": np.add,
    "SUB": np.subtract,
    "MUL": np.multiply,
    "MAXIMUM": np.maximum,
    "MINIMUM": np.minimum,
    "FLOOR_DIV": np.floor_divide,
    "FLOOR_MOD": np.mod,
    "LESS": np.less,
    "LESS_EQUAL": np.less_equal,
    "GREATER": np.greater,
    "GREATER_EQUAL": np.greater_equal,
    "EQUAL": np.equal,
    "NOT_EQUAL": np.not_equal,
    "LOGICAL_AND": np.logical_and,
    "LOGICAL_OR": np.logical_or,
}


def _binary(op: Operator, v: list[np.ndarray]) -> np.ndarray | None:
    if op.options.get("fused_activation_function", "NONE") != "NONE":
        return None
    with np.errstate(all="ignore"):
        return _BINARY[op.opcode](v[0], v[1])


def _div(op: Operator, v: list[np.ndarray]) -> np.ndarray | None:
    a, b = v
    if op.options.get("fused_activation_function", "NONE") != "NONE" or (
        a.dtype.kind in "iu" and np.any(b == 0)
    ):
        return None
    if a.dtype.kind in "iu":  # TFLite integer DIV truncates toward zero
        return (np.trunc(a / b)).astype(a.dtype)
    return np.divide(a, b).astype(a.dtype)


def _strided_slice(op: Operator, v: list[np.ndarray]) -> np.ndarray | None:
    x, begin, end, strides = v[0], *(np.asarray(a).reshape(-1).tolist() for a in v[1:4])
    o = op.options
    if o.get("ellipsis_mask", 0) or o.get("new_axis_mask", 0) or len(begin) > x.ndim:
        return None

    def bit(mask: str, i: int) -> bool:
        return bool(int(o.get(mask, 0)) >> i & 1)

    index: list = []
    for axis in range(len(begin)):
        if bit("shrink_axis_mask", axis):
            index.append(int(begin[axis]))
            continue
        b = None if bit("begin_mask", axis) else int(begin[axis])
        e = None if bit("end_mask", axis) else int(end[axis])
        if o.get("offset") and e is not None:
            e += b or 0
        index.append(slice(b, e, int(strides[axis])))
    return np.asarray(x[tuple(index)])


def _slice(op: Operator, v: list[np.ndarray]) -> np.ndarray:
    x, begin, size = v[0], v[1].reshape(-1).tolist(), v[2].reshape(-1).tolist()
    return x[tuple(slice(int(b), None if s < 0 else int(b) + int(s)) for b, s in zip(begin, size))]


def _gather(op: Operator, v: list[np.ndarray]) -> np.ndarray | None:
    if int(op.options.get("batch_dims", 0)):
        return None
    return np.take(v[0], v[1].astype(np.int64), axis=int(op.options.get("axis", 0)))


def _reshape(op: Operator, v: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray | None:
    if len(v) > 1 and v[1].size and v[1].dtype.kind in "iu":
        return v[0].reshape([int(d) for d in v[1].reshape(-1)])
    return v[0].reshape(out_shape) if all(d >= 0 for d in out_shape) else None


def _range(op: Operator, v: list[np.ndarray]) -> np.ndarray:
    start, limit, delta = (a.reshape(-1)[0] for a in v[:3])
    return np.arange(start, limit, delta).astype(v[0].dtype)


def _scatter_nd(op: Operator, v: list[np.ndarray]) -> np.ndarray:
    indices, updates, shape = v
    out = np.zeros([int(d) for d in shape.reshape(-1)], updates.dtype)
    k = indices.shape[-1]
    rows = tuple(indices.reshape(-1, k).astype(np.int64).T)
    np.add.at(out, rows, updates.reshape((-1, *out.shape[k:])))  # repeated indices sum, as TFLite's kernel
    return out


def _sparse_to_dense(op: Operator, v: list[np.ndarray]) -> np.ndarray:
    indices, shape, values, default = v[:4]
    out = np.full([int(d) for d in shape.reshape(-1)], default.reshape(-1)[0], values.dtype)
    rows = indices.reshape(-1, 1) if indices.ndim < 2 else indices
    vals = np.broadcast_to(values.reshape(-1), (len(rows),))
    for row, value in zip(rows.astype(np.int64).tolist(), vals):  # in order: a repeated index keeps the last
        out[tuple(row)] = value
    return out


def _select(op: Operator, v: list[np.ndarray]) -> np.ndarray:
    cond = v[0].astype(bool)
    if op.opcode == "SELECT" and cond.ndim == 1 and v[1].ndim > 1:  # whole slices along axis 0
        cond = cond.reshape((-1,) + (1,) * (v[1].ndim - 1))
    return np.where(cond, v[1], v[2])


def _reduce(fn):
    def evaluate(op: Operator, v: list[np.ndarray]) -> np.ndarray:
        axes = tuple(int(a) for a in v[1].reshape(-1))
        return np.asarray(fn(v[0], axis=axes, keepdims=bool(op.options.get("keep_dims", False))), v[0].dtype)

    return evaluate


EVALUATORS: dict[str, Evaluator] = {
    **{name: _binary for name in _BINARY},
    "DIV": _div,
    "PACK": lambda op, v: np.stack(v, axis=int(op.options.get("axis", 0))),
    "CONCATENATION": lambda op, v: (
        np.concatenate(v, axis=int(op.options.get("axis", 0)))
        if op.options.get("fused_activation_function", "NONE") == "NONE"
        else None
    ),
    "STRIDED_SLICE": _strided_slice,
    "SLICE": _slice,
    "GATHER": _gather,
    "RANGE": _range,
    "FILL": lambda op, v: np.full([int(d) for d in v[0].reshape(-1)], v[1].reshape(-1)[0], v[1].dtype),
    "NEG": lambda op, v: np.negative(v[0]),
    "ABS": lambda op, v: np.abs(v[0]),
    "SQUARE": lambda op, v: np.square(v[0]),
    "REDUCE_PROD": _reduce(np.prod),
    "SUM": _reduce(np.sum),
    "REDUCE_MAX": _reduce(np.max),
    "REDUCE_MIN": _reduce(np.min),
    "TRANSPOSE": lambda op, v: np.transpose(v[0], [int(p) for p in v[1].reshape(-1)]),
    "TILE": lambda op, v: np.tile(v[0], [int(m) for m in v[1].reshape(-1)]),
    "BROADCAST_TO": lambda op, v: np.broadcast_to(v[0], [int(d) for d in v[1].reshape(-1)]).copy(),
    "ZEROS_LIKE": lambda op, v: np.zeros_like(v[0]),
    "BROADCAST_ARGS": lambda op, v: np.asarray(
        np.broadcast_shapes(tuple(v[0].tolist()), tuple(v[1].tolist()))
    ),
    "ONES_LIKE": lambda op, v: np.ones_like(v[0]),
    "SCATTER_ND": _scatter_nd,
    "SPARSE_TO_DENSE": _sparse_to_dense,
    "SELECT": _select,
    "SELECT_V2": _select,  # a causal attention mask: where(constant triangle, 0, -inf)
    "WHERE": lambda op, v: np.argwhere(v[0]),  # the coordinates of the true (non-zero) elements
}
RESHAPES = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
CASTS = ("CAST",)


def evaluate(
    op: Operator, values: list[np.ndarray], out_shape: tuple[int, ...], out_dtype: str
) -> np.ndarray | None:
    """The op's single output from known input values (None: not handled here)."""
    if op.opcode in RESHAPES:
        return _reshape(op, values, out_shape)
    if op.opcode in CASTS:
        return values[0].astype(out_dtype) if out_dtype in ("float32", "int32", "int64", "bool") else None
    fn = EVALUATORS.get(op.opcode)
    out = fn(op, values) if fn is not None else None
    if out is None:
        return None
    out = np.asarray(out)
    if out_dtype in ("float32", "int32", "int64", "bool") and out.dtype != out_dtype:
        out = out.astype(out_dtype)
    return out


def _split_v(v: list[np.ndarray]) -> list[np.ndarray]:
    x, sizes, axis = v[0], [int(n) for n in v[1].reshape(-1)], int(v[2].reshape(-1)[0])
    if -1 in sizes:  # one size may be left for the rest
        sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


MULTI_EVALUATORS: dict[str, Callable[[Operator, list[np.ndarray]], list[np.ndarray]]] = {
    "SPLIT": lambda op, v: np.split(
        v[1], int(op.options.get("num_splits", 1)), axis=int(v[0].reshape(-1)[0])
    ),
    "SPLIT_V": lambda op, v: _split_v(v),
    "UNPACK": lambda op, v: [
        np.take(v[0], i, axis=int(op.options.get("axis", 0)))
        for i in range(v[0].shape[int(op.options.get("axis", 0))])
    ],
}


def evaluate_multi(op: Operator, values: list[np.ndarray], out_dtypes: list[str]) -> list[np.ndarray] | None:
    """The outputs of a SPLIT / SPLIT_V / UNPACK from known input values (None: not handled here)."""
    fn = MULTI_EVALUATORS.get(op.opcode)
    if fn is None:
        return None
    outs = fn(op, values)
    if len(outs) != len(out_dtypes):
        return None
    return [
        np.asarray(o).astype(d) if d in ("float32", "int32", "int64", "bool") else np.asarray(o)
        for o, d in zip(outs, out_dtypes)
    ]


def shape_of(in_shape: tuple[int, ...], out_dtype: str) -> np.ndarray:
    """SHAPE of a tensor with a known static shape."""
    return np.asarray(in_shape, out_dtype)

"""Numpy evaluations of ops whose inputs are all known: what `passes.fold_constants` folds.

Mostly the small integer chains a dynamic-shape export leaves behind (SHAPE -> STRIDED_SLICE ->
PACK -> RESHAPE), plus the elementwise and array ops around them. Each evaluator gets the op and
its input values and returns the output value (a list of them for `multi`), or None when it does
not handle the case (the op is then converted as usual). Shape-only ops and CAST, which need the
output's shape or type, are evaluated in `passes.fold` itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tfl_rebuild.rebuild.ops.registry import folds
from tfl_rebuild.tflite.ir import Operator


def _binary(fn: Callable) -> Callable[[Operator, list[np.ndarray]], np.ndarray | None]:
    def evaluate(op: Operator, v: list[np.ndarray]) -> np.ndarray | None:
        if op.options.get("fused_activation_function", "NONE") != "NONE":
            return None
        with np.errstate(all="ignore"):
            return fn(v[0], v[1])

    return evaluate


for _name, _fn in (
    ("ADD", np.add),
    ("SUB", np.subtract),
    ("MUL", np.multiply),
    ("MAXIMUM", np.maximum),
    ("MINIMUM", np.minimum),
    ("FLOOR_DIV", np.floor_divide),
    ("FLOOR_MOD", np.mod),
    ("LESS", np.less),
    ("LESS_EQUAL", np.less_equal),
    ("GREATER", np.greater),
    ("GREATER_EQUAL", np.greater_equal),
    ("EQUAL", np.equal),
    ("NOT_EQUAL", np.not_equal),
    ("LOGICAL_AND", np.logical_and),
    ("LOGICAL_OR", np.logical_or),
):
    folds(_name)(_binary(_fn))


@folds("DIV")
def _div(op: Operator, v: list[np.ndarray]) -> np.ndarray | None:
    a, b = v
    if op.options.get("fused_activation_function", "NONE") != "NONE" or (
        a.dtype.kind in "iu" and np.any(b == 0)
    ):
        return None
    if a.dtype.kind in "iu":  # TFLite integer DIV truncates toward zero
        return (np.trunc(a / b)).astype(a.dtype)
    return np.divide(a, b).astype(a.dtype)


@folds("STRIDED_SLICE")
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


@folds("SLICE")
def _slice(op: Operator, v: list[np.ndarray]) -> np.ndarray:
    x, begin, size = v[0], v[1].reshape(-1).tolist(), v[2].reshape(-1).tolist()
    return x[tuple(slice(int(b), None if s < 0 else int(b) + int(s)) for b, s in zip(begin, size))]


@folds("GATHER")
def _gather(op: Operator, v: list[np.ndarray]) -> np.ndarray | None:
    if int(op.options.get("batch_dims", 0)):
        return None
    return np.take(v[0], v[1].astype(np.int64), axis=int(op.options.get("axis", 0)))


@folds("RANGE")
def _range(op: Operator, v: list[np.ndarray]) -> np.ndarray:
    start, limit, delta = (a.reshape(-1)[0] for a in v[:3])
    return np.arange(start, limit, delta).astype(v[0].dtype)


@folds("SCATTER_ND")
def _scatter_nd(op: Operator, v: list[np.ndarray]) -> np.ndarray:
    indices, updates, shape = v
    out = np.zeros([int(d) for d in shape.reshape(-1)], updates.dtype)
    k = indices.shape[-1]
    rows = tuple(indices.reshape(-1, k).astype(np.int64).T)
    np.add.at(out, rows, updates.reshape((-1, *out.shape[k:])))  # repeated indices sum, as TFLite's kernel
    return out


@folds("SPARSE_TO_DENSE")
def _sparse_to_dense(op: Operator, v: list[np.ndarray]) -> np.ndarray:
    indices, shape, values, default = v[:4]
    out = np.full([int(d) for d in shape.reshape(-1)], default.reshape(-1)[0], values.dtype)
    rows = indices.reshape(-1, 1) if indices.ndim < 2 else indices
    vals = np.broadcast_to(values.reshape(-1), (len(rows),))
    for row, value in zip(rows.astype(np.int64).tolist(), vals):  # in order: a repeated index keeps the last
        out[tuple(row)] = value
    return out


@folds("SELECT", "SELECT_V2")  # SELECT_V2: e.g. a causal attention mask, where(constant triangle, 0, -inf)
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


folds("REDUCE_PROD")(_reduce(np.prod))
folds("SUM")(_reduce(np.sum))
folds("REDUCE_MAX")(_reduce(np.max))
folds("REDUCE_MIN")(_reduce(np.min))


@folds("PACK")
def _pack(op: Operator, v: list[np.ndarray]) -> np.ndarray:
    return np.stack(v, axis=int(op.options.get("axis", 0)))


@folds("CONCATENATION")
def _concatenation(op: Operator, v: list[np.ndarray]) -> np.ndarray | None:
    if op.options.get("fused_activation_function", "NONE") != "NONE":
        return None
    return np.concatenate(v, axis=int(op.options.get("axis", 0)))


@folds("FILL")
def _fill(op: Operator, v: list[np.ndarray]) -> np.ndarray:
    return np.full([int(d) for d in v[0].reshape(-1)], v[1].reshape(-1)[0], v[1].dtype)


folds("NEG")(lambda op, v: np.negative(v[0]))
folds("ABS")(lambda op, v: np.abs(v[0]))
folds("SQUARE")(lambda op, v: np.square(v[0]))
folds("ZEROS_LIKE")(lambda op, v: np.zeros_like(v[0]))
folds("ONES_LIKE")(lambda op, v: np.ones_like(v[0]))
folds("TRANSPOSE")(lambda op, v: np.transpose(v[0], [int(p) for p in v[1].reshape(-1)]))
folds("TILE")(lambda op, v: np.tile(v[0], [int(m) for m in v[1].reshape(-1)]))
folds("BROADCAST_TO")(lambda op, v: np.broadcast_to(v[0], [int(d) for d in v[1].reshape(-1)]).copy())
folds("BROADCAST_ARGS")(
    lambda op, v: np.asarray(np.broadcast_shapes(tuple(v[0].tolist()), tuple(v[1].tolist())))
)
folds("WHERE")(lambda op, v: np.argwhere(v[0]))  # the coordinates of the true (non-zero) elements


def _split_v(op: Operator, v: list[np.ndarray]) -> list[np.ndarray]:
    x, sizes, axis = v[0], [int(n) for n in v[1].reshape(-1)], int(v[2].reshape(-1)[0])
    if -1 in sizes:  # one size may be left for the rest
        sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


folds("SPLIT_V", multi=True)(_split_v)
folds("SPLIT", multi=True)(
    lambda op, v: np.split(v[1], int(op.options.get("num_splits", 1)), axis=int(v[0].reshape(-1)[0]))
)


@folds("UNPACK", multi=True)
def _unpack(op: Operator, v: list[np.ndarray]) -> list[np.ndarray]:
    axis = int(op.options.get("axis", 0))
    return [np.take(v[0], i, axis=axis) for i in range(v[0].shape[axis])]

"""Index MIL ops: gather, scatter, one_hot, topk, argsort, cumsum, band_part."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import MilEvalError, op


@op("gather")
def _gather(a):
    x, idx = a.x, a.indices.astype(np.int64)
    axis, batch = int(a.scalar("axis", 0)) % x.ndim, int(a.scalar("batch_dims", 0))
    if batch == 0:
        return np.take(x, idx, axis=axis)
    return np.stack([_gather_batched(x[i], idx[i], axis - 1, batch - 1) for i in range(x.shape[0])])


def _gather_batched(x, idx, axis, batch):
    if batch == 0:
        return np.take(x, idx, axis=axis)
    return np.stack([_gather_batched(x[i], idx[i], axis - 1, batch - 1) for i in range(x.shape[0])])


@op("gather_along_axis")
def _gather_along_axis(a):
    return np.take_along_axis(
        a.x, a.indices.astype(np.int64) % a.x.shape[int(a.scalar("axis", 0))], axis=int(a.scalar("axis", 0))
    )


@op("gather_nd")
def _gather_nd(a):
    return _gather_nd_batched(a.x, a.indices.astype(np.int64), int(a.scalar("batch_dims", 0)))


def _gather_nd_batched(x, idx, batch):
    if batch:
        return np.stack([_gather_nd_batched(x[i], idx[i], batch - 1) for i in range(x.shape[0])])
    k = idx.shape[-1]
    out = x[tuple(idx.reshape(-1, k).T)]
    return out.reshape(idx.shape[:-1] + x.shape[k:])


_SCATTER = {
    "update": None,
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
}


@op("scatter_nd")
def _scatter_nd(a):
    mode = a.scalar("mode", "add")
    if mode not in _SCATTER:
        raise MilEvalError(f"scatter_nd mode {mode!r} is not supported")
    out = np.array(a.data, copy=True)
    idx = a.indices.astype(np.int64)
    k = idx.shape[-1]
    rows = tuple(idx.reshape(-1, k).T)
    updates = np.asarray(a.updates, out.dtype).reshape((-1, *out.shape[k:]))
    if _SCATTER[mode] is None:
        out[rows] = updates
    else:  # unbuffered, so repeated indices combine
        _SCATTER[mode].at(out, rows, updates)
    return out


@op("cumsum")
def _cumsum(a):
    x, axis = a.x, int(a.scalar("axis", 0))
    if a.scalar("reverse", False):
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis)
    if a.scalar("exclusive", False):
        y = y - x
    return np.flip(y, axis) if a.scalar("reverse", False) else y


@op("topk")
def _topk(a):
    x, k, axis = a.x, int(a.scalar("k", 1)), int(a.scalar("axis", -1))
    order = np.argsort(-x if not a.scalar("ascending", False) else x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int32)


@op("argsort")
def _argsort(a):
    x, axis = a.x, int(a.scalar("axis", -1))
    return np.argsort(x if a.scalar("ascending", False) else -x, axis=axis, kind="stable").astype(np.int32)


@op("one_hot")
def _one_hot(a):
    idx, depth = a.indices.astype(np.int64), int(a.scalar("one_hot_vector_size"))
    y = (idx[..., None] == np.arange(depth)).astype(np.float32)
    y = np.where(y > 0, a.scalar("on_value", 1.0), a.scalar("off_value", 0.0))
    return np.moveaxis(y, -1, int(a.scalar("axis", -1)))


@op("band_part")
def _band_part(a):
    x = a.x
    lower, upper = int(a.scalar("lower", -1)), int(a.scalar("upper", -1))
    m, n = x.shape[-2:]
    i, j = np.arange(m)[:, None], np.arange(n)[None, :]
    keep = ((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper))
    return np.where(keep, x, 0)

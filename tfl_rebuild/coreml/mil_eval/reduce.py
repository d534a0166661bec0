"""Reduction MIL ops: reduce_* over axes, reduce_argmax / reduce_argmin."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import op


def _reduce(fn):
    def run(a):
        x = a.x
        axes = a.ints("axes")
        axes = None if axes is None else tuple(ax % max(x.ndim, 1) for ax in axes)
        keep = bool(a.scalar("keep_dims", False))
        return fn(x.astype(np.float64) if x.dtype.kind == "f" else x, axes, keep)

    return run


_REDUCE = {
    "reduce_sum": lambda x, ax, k: x.sum(axis=ax, keepdims=k),
    "reduce_mean": lambda x, ax, k: x.mean(axis=ax, keepdims=k),
    "reduce_max": lambda x, ax, k: x.max(axis=ax, keepdims=k),
    "reduce_min": lambda x, ax, k: x.min(axis=ax, keepdims=k),
    "reduce_prod": lambda x, ax, k: x.prod(axis=ax, keepdims=k),
    "reduce_sum_square": lambda x, ax, k: (x * x).sum(axis=ax, keepdims=k),
    "reduce_l1_norm": lambda x, ax, k: np.abs(x).sum(axis=ax, keepdims=k),
    "reduce_l2_norm": lambda x, ax, k: np.sqrt((x * x).sum(axis=ax, keepdims=k)),
    "reduce_log_sum": lambda x, ax, k: np.log(x.sum(axis=ax, keepdims=k)),
    "reduce_log_sum_exp": lambda x, ax, k: _logsumexp(x, ax, k),
}


def _logsumexp(x, axes, keep):
    m = x.max(axis=axes, keepdims=True)
    y = np.log(np.exp(x - m).sum(axis=axes, keepdims=True)) + m
    return y if keep else np.squeeze(y, axis=axes)


for _name, _fn in _REDUCE.items():
    op(_name)(_reduce(_fn))


def _arg_reduce(fn):
    def run(a):
        x, axis = a.x, int(a.scalar("axis", -1))
        y = fn(x, axis=axis)
        return np.expand_dims(y, axis) if a.scalar("keep_dims", False) else y

    return run


op("reduce_argmax")(_arg_reduce(np.argmax))
op("reduce_argmin")(_arg_reduce(np.argmin))

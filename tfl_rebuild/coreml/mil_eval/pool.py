"""Pooling MIL ops: max_pool, avg_pool, l2_pool, 1-D, 2-D (NCHW) and 3-D (NCDHW)."""

from __future__ import annotations

import math

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import MilEvalError, op
from tfl_rebuild.coreml.mil_eval.windows import (
    as_2d,
    ceil_extra,
    sliding_windows,
    spatial_pads,
    tap_slice,
    taps,
)


def _pool(a, kind: str):
    x = a.x
    n_sp = x.ndim - 2
    if n_sp == 3:
        return _pool_3d(a, kind)
    if n_sp not in (1, 2):
        raise MilEvalError(f"{kind} pool with {n_sp} spatial dimensions is not supported")
    x = as_2d(x, n_sp)
    kernel = ([1] if n_sp == 1 else []) + a.ints("kernel_sizes")
    strides = ([1] if n_sp == 1 else []) + a.ints("strides", [1] * n_sp)
    pads = (
        spatial_pads(a, x.shape[2:], kernel, strides, [1, 1])
        if n_sp == 2
        else [(0, 0)] + spatial_pads(a, x.shape[3:], kernel[1:], strides[1:], [1])
    )
    if a.scalar("ceil_mode", False):  # extend the end so a partial last window counts
        pads = [
            (b, e + ceil_extra(n + b + e, k, s))
            for (b, e), n, k, s in zip(pads, x.shape[2:], kernel, strides)
        ]
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=fill)
    win = sliding_windows(xp, kernel, strides, [1, 1])
    if kind == "max":
        y = win.max(axis=(-2, -1))
    elif kind == "l2":
        y = np.sqrt((win.astype(np.float64) ** 2).sum(axis=(-2, -1)))
    elif a.scalar("exclude_padding_from_average", False):
        ones = np.pad(np.ones((1, 1) + x.shape[2:], np.float32), [(0, 0), (0, 0), *pads])
        count = sliding_windows(ones, kernel, strides, [1, 1]).sum(axis=(-2, -1))
        y = win.sum(axis=(-2, -1), dtype=np.float64) / count
    else:
        y = win.sum(axis=(-2, -1), dtype=np.float64) / (kernel[0] * kernel[1])
    return y[:, :, 0, :] if n_sp == 1 else y


def _pool_3d(a, kind: str):
    x = a.x
    kernel, strides = a.ints("kernel_sizes"), a.ints("strides", [1] * 3)
    pads = spatial_pads(a, x.shape[2:], kernel, strides, [1] * 3)
    if a.scalar("ceil_mode", False):  # extend the end so a partial last window counts
        pads = [
            (b, e + ceil_extra(n + b + e, k, s))
            for (b, e), n, k, s in zip(pads, x.shape[2:], kernel, strides)
        ]
    xp = np.pad(
        x.astype(np.float64), [(0, 0), (0, 0), *pads], constant_values=-np.inf if kind == "max" else 0.0
    )
    out = [(n - k) // s + 1 for n, k, s in zip(xp.shape[2:], kernel, strides)]
    win = np.stack([xp[tap_slice(t, [1] * 3, out, strides)] for t in taps(kernel)])
    if kind == "max":
        y = win.max(axis=0)
    elif kind == "l2":
        y = np.sqrt((win**2).sum(axis=0))
    elif a.scalar("exclude_padding_from_average", False):
        ones = np.pad(np.ones((1, 1, *x.shape[2:])), [(0, 0), (0, 0), *pads])
        y = win.sum(axis=0) / np.stack([ones[tap_slice(t, [1] * 3, out, strides)] for t in taps(kernel)]).sum(
            axis=0
        )
    else:
        y = win.sum(axis=0) / math.prod(kernel)
    return y.astype(np.float32)


op("max_pool")(lambda a: _pool(a, "max"))
op("avg_pool")(lambda a: _pool(a, "avg"))
op("l2_pool")(lambda a: _pool(a, "l2"))

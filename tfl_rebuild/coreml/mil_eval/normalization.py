"""Normalization MIL ops: batch, instance, layer, l2 and local response norm."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import op


def _channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


@op("batch_norm")
def _batch_norm(a):
    x = a.x
    mean, var = _channel(a.mean, x.ndim), _channel(a.variance, x.ndim)
    y = (x - mean) / np.sqrt(var + a.scalar("epsilon", 1e-5))
    gamma, beta = a.get("gamma"), a.get("beta")
    if gamma is not None:
        y = y * _channel(gamma, x.ndim)
    if beta is not None:
        y = y + _channel(beta, x.ndim)
    return y


@op("instance_norm")
def _instance_norm(a):
    x = a.x.astype(np.float64)
    axes = tuple(range(2, x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(
        x.var(axis=axes, keepdims=True) + a.scalar("epsilon", 1e-5)
    )
    gamma, beta = a.get("gamma"), a.get("beta")
    if gamma is not None:
        y = y * _channel(gamma, x.ndim)
    if beta is not None:
        y = y + _channel(beta, x.ndim)
    return y


@op("layer_norm")
def _layer_norm(a):
    x = a.x.astype(np.float64)
    axes = a.ints("axes")
    axes = tuple(range(x.ndim)) if axes is None else tuple(ax % x.ndim for ax in axes)
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(
        x.var(axis=axes, keepdims=True) + a.scalar("epsilon", 1e-5)
    )
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    gamma, beta = a.get("gamma"), a.get("beta")
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


@op("l2_norm")
def _l2_norm(a):
    x = a.x.astype(np.float64)
    axes = tuple(range(max(x.ndim - 3, 0), x.ndim))
    return x / np.sqrt((x**2).sum(axis=axes, keepdims=True) + a.scalar("epsilon", 1e-6))


@op("local_response_norm")
def _local_response_norm(a):
    x = a.x.astype(np.float64)
    size = int(a.scalar("size"))
    sq = np.pad(x**2, [(0, 0), ((size - 1) // 2, size // 2)] + [(0, 0)] * (x.ndim - 2))
    acc = sum(sq[:, i : i + x.shape[1]] for i in range(size))
    return x / (a.scalar("k", 1.0) + a.scalar("alpha", 1e-4) / size * acc) ** a.scalar("beta", 0.75)

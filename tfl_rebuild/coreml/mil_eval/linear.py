"""Linear algebra MIL ops: linear, matmul, einsum."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import op


@op("linear")
def _linear(a):
    y = np.matmul(a.x, a.weight.T)
    bias = a.get("bias")
    return y if bias is None else y + bias


@op("matmul")
def _matmul(a):
    x, y = a.x, a.y
    if a.scalar("transpose_x", False):
        x = np.swapaxes(x, -1, -2)
    if a.scalar("transpose_y", False):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@op("einsum")
def _einsum(a):
    return np.einsum(a.scalar("equation"), *a.values)

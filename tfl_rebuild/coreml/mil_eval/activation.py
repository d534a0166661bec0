"""Activation MIL ops (leaky_relu, elu, prelu, gelu, softmax ...); relu and sigmoid are unary ops."""

from __future__ import annotations

import math

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import op
from tfl_rebuild.coreml.mil_eval.elementwise import erf


@op("leaky_relu")
def _leaky_relu(a):
    x = a.x
    return np.where(x >= 0, x, x * a.scalar("alpha", 0.01))


@op("elu")
def _elu(a):
    x = a.x
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, a.scalar("alpha", 1.0) * (np.exp(np.minimum(x, 0)) - 1))


@op("prelu")
def _prelu(a):
    x, alpha = a.x, a.alpha.reshape(-1)
    alpha = alpha.reshape((1, -1) + (1,) * (x.ndim - 2))  # one slope per channel (axis 1)
    return np.where(x >= 0, x, x * alpha)


@op("clamped_relu")
def _clamped_relu(a):
    x, beta = a.x, a.scalar("beta")
    return np.where(x >= 0, np.minimum(beta, x), np.minimum(beta, a.scalar("alpha") * x))


@op("thresholded_relu")
def _thresholded_relu(a):
    x = a.x
    return np.where(x > a.scalar("alpha", 1.0), x, 0).astype(x.dtype)


@op("linear_activation")
def _linear_activation(a):
    return a.scalar("alpha") * a.x + a.scalar("beta", 0.0)


@op("scaled_tanh")
def _scaled_tanh(a):
    return a.scalar("alpha", 1.0) * np.tanh(a.scalar("beta", 1.0) * a.x)


@op("sigmoid_hard")
def _sigmoid_hard(a):
    return np.clip(a.scalar("alpha", 0.2) * a.x + a.scalar("beta", 0.5), 0, 1)


@op("softplus_parametric")
def _softplus_parametric(a):
    x = a.x
    shape = (1, -1) + (1,) * (x.ndim - 2)
    alpha, beta = a.alpha.reshape(shape), a.beta.reshape(shape)
    return alpha * np.logaddexp(0, beta * x)


@op("gelu")
def _gelu(a):
    x, mode = a.x, a.scalar("mode", "EXACT")
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


@op("softmax")
def _softmax(a):
    x = a.x.astype(np.float64)
    axis = a.scalar("axis", -1)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)

"""Elementwise MIL ops: binary and unary math, comparisons, logic, clip, cast, select."""

from __future__ import annotations

import math

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import op

_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "pow": np.power,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


def _binary(fn):
    return lambda a: fn(a.x, a.y)


for _name, _fn in _BINARY.items():
    op(_name)(_binary(_fn))


@op("real_div")
def _real_div(a):
    x, y = a.x, a.y
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        return np.floor_divide(x, y)  # MIL real_div of int32 stays int32
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(x, y)


def erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


_UNARY = {
    "abs": np.abs,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "erf": erf,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "logical_not": np.logical_not,
    "round": np.round,
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0, x),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "identity": lambda x: x,
}


def _unary(fn):
    def run(a):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return fn(a.x)

    return run


for _name, _fn in _UNARY.items():
    op(_name)(_unary(_fn))


@op("inverse")
def _inverse(a):
    with np.errstate(divide="ignore"):
        return 1.0 / (a.x + a.scalar("epsilon", 1e-4))


@op("log")
def _log(a):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(a.x + a.scalar("epsilon", 1e-45))


@op("rsqrt")
def _rsqrt(a):
    with np.errstate(divide="ignore"):
        return 1.0 / np.sqrt(a.x + a.scalar("epsilon", 1e-12))


@op("clip")
def _clip(a):
    return np.minimum(np.maximum(a.x, a.scalar("alpha")), a.scalar("beta"))


@op("threshold")
def _threshold(a):
    return np.maximum(a.x, a.scalar("alpha"))


@op("cast")
def _cast(a):
    dtype = {
        "fp16": np.float16,
        "fp32": np.float32,
        "int32": np.int32,
        "bool": np.bool_,
        "int16": np.int16,
        "int8": np.int8,
        "uint8": np.uint8,
        "uint16": np.uint16,
    }[a.scalar("dtype")]
    return a.x.astype(dtype)  # the output var's dtype does the fp16 rounding


@op("select")
def _select(a):
    return np.where(a.cond, a.a, a.b)

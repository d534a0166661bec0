"""A numpy run of one small float subgraph: the cond and body of a recurrent layer's WHILE loop,
or the ops of a GroupNormalization between its reshapes.

`passes.lift_rnn` recognises a Keras LSTM / GRU / SimpleRNN cell by its numbers: it runs the loop
body on probe values and compares it with the Keras cell computed from the weights it read, so a
gate order or a bias put in the wrong place cannot lift. The kernels are constant folding's
(`ops/folding.py`) plus the few a cell adds (matmul, activations, fused activations). Anything
else (an op with no kernel here, a quantized tensor, a shape misfit) gives None: no lift.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from tfl_rebuild.rebuild.ops.registry import Trait, folder, has_trait
from tfl_rebuild.tflite.ir import Subgraph
from tfl_rebuild.tflite.weights import value

EVAL_LIMIT = 1 << 22  # elements of all constants in a subgraph this evaluator takes on


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "NONE": lambda x: x,
    "RELU": lambda x: np.maximum(x, 0),
    "RELU6": lambda x: np.clip(x, 0, 6),
    "RELU_N1_TO_1": lambda x: np.clip(x, -1, 1),
    "TANH": np.tanh,
}


def _fully_connected(op, v: list) -> np.ndarray | None:
    x, w = v[0], v[1]
    if w is None or w.ndim != 2 or x.size % w.shape[1]:
        return None
    y = x.reshape(-1, w.shape[1]) @ w.T
    if len(v) > 2 and v[2] is not None:
        y = y + v[2]
    if op.options.get("keep_num_dims"):
        y = y.reshape(*x.shape[:-1], w.shape[0])
    return y


# What lift_rnn asks of body ops: the matmul of a weight, the widening of an fp16 weight, and the
# ops that move elements between the layer's [B, T, F] tensors and the loop's time-major ones.
MATMUL_OPS = ("FULLY_CONNECTED",)
DEQUANTIZE_OPS = ("DEQUANTIZE",)
LAYOUT_OPS = ("TRANSPOSE", "REVERSE_V2", "STRIDED_SLICE")
CONCAT_OPS = ("CONCATENATION",)  # a Bidirectional layer's merge
REVERSE_OPS = ("REVERSE_V2",)  # and its backward steps put back in input order

KERNELS: dict[str, Callable] = {
    "FULLY_CONNECTED": _fully_connected,
    "LOGISTIC": lambda op, v: _sigmoid(v[0]),
    "TANH": lambda op, v: np.tanh(v[0]),
    "RELU": lambda op, v: np.maximum(v[0], 0),
    "DEQUANTIZE": lambda op, v: v[0].astype(np.float32),
    "REVERSE_V2": lambda op, v: np.flip(v[0], [int(a) for a in v[1].reshape(-1)]),
    # and the moments of a normalization (passes.lift_group_norm), float only
    "MEAN": lambda op, v: _float_mean(op, v),
    "RSQRT": lambda op, v: (1.0 / np.sqrt(v[0])).astype(v[0].dtype),
    "SQUARED_DIFFERENCE": lambda op, v: np.square(v[0] - v[1]),
}


def _float_mean(op, v: list) -> np.ndarray | None:
    if v[0].dtype.kind != "f" or v[1] is None:
        return None
    axes = tuple(int(a) for a in v[1].reshape(-1))
    return np.mean(v[0], axis=axes, keepdims=bool(op.options.get("keep_dims", False))).astype(v[0].dtype)


def apply(op, values: list, out_shape: tuple[int, ...] | None = None) -> list[np.ndarray] | None:
    """The op's outputs, its fused activation applied (out_shape: a shape-only op's, when it has
    no shape input)."""
    act = op.options.get("fused_activation_function", "NONE")
    if act not in ACTIVATIONS:
        return None
    plain = op
    if act != "NONE":
        plain = dataclasses.replace(op, options={**op.options, "fused_activation_function": "NONE"})
    if has_trait(op, Trait.SHAPE_ONLY):
        if len(values) > 1 and values[1] is not None and values[1].dtype.kind in "iu":
            outs = [values[0].reshape([int(d) for d in values[1].reshape(-1)])]
        elif out_shape is not None:
            outs = [values[0].reshape(out_shape)]
        else:
            return None
    elif op.opcode in KERNELS:
        out = KERNELS[op.opcode](plain, values)
        outs = None if out is None else [out]
    else:
        f = folder(op)
        if f is None or any(v is None for v in values):
            return None
        out = f.fn(plain, values)
        outs = None if out is None else (list(out) if f.multi else [out])
    if outs is None or len(outs) != len(op.outputs):
        return None
    return [ACTIVATIONS[act](np.asarray(o)) for o in outs]


def constants(sg: Subgraph) -> dict[int, np.ndarray] | None:
    """The subgraph's constants (fp16 widened), or None when one is quantized or they are too big."""
    found, total = {}, 0
    for t in sg.tensors:
        if t.data is not None:
            if t.quantized or t.dtype not in ("float32", "float16", "int32", "int64", "bool"):
                return None
            total += t.data.size
            found[t.index] = value(t)
    return found if total <= EVAL_LIMIT else None


def run(sg: Subgraph, inputs: list[np.ndarray], consts: dict[int, np.ndarray]) -> list[np.ndarray] | None:
    """The subgraph's outputs from its inputs, or None when this evaluator cannot run it."""
    if len(inputs) != len(sg.inputs):
        return None
    env = dict(consts)
    env.update(zip(sg.inputs, inputs))
    try:
        with np.errstate(all="ignore"):
            for op in sg.operators:
                values = [env.get(i) if i >= 0 else None for i in op.inputs]
                if values and values[0] is None:
                    return None
                outs = apply(op, values, tuple(sg.tensors[op.outputs[0]].shape) if op.outputs else None)
                if outs is None:
                    return None
                env.update(zip(op.outputs, outs))
        return [env[o] for o in sg.outputs]
    except (ValueError, IndexError, TypeError, KeyError):
        return None

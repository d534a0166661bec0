"""Graph rewrites before conversion, in order: constants, then ops that vanish in a float rebuild.

1. Every constant tensor gets its value: densified, dequantized (fp16, int8/uint8/int16).
2. DEQUANTIZE / DENSIFY of a constant fold into a constant (fp16 and sparse weights).
3. QUANTIZE / DEQUANTIZE of activations become aliases: the rebuild computes in float, and
   quantized tensors are reproduced by fake-quant layers instead (see `fake_quant_params`).
"""

from __future__ import annotations

import numpy as np

from .inspect import NON_DATA
from .ir import Model, Operator, Tensor
from .ops.registry import ConvertContext
from .weights import value

FOLD_CONSTANT = ("DEQUANTIZE", "DENSIFY")
PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE")


def prepare(model: Model, subgraph: int = 0) -> tuple[ConvertContext, list[Operator]]:
    sg = model.subgraphs[subgraph]
    constants: dict[int, np.ndarray] = {
        t.index: value(t) for t in sg.tensors if t.data is not None and t.dtype not in NON_DATA
    }
    ctx = ConvertContext(sg, constants)
    remaining = []
    for op in sg.operators:
        if op.opcode in FOLD_CONSTANT and op.inputs and ctx.is_const(op.inputs[0]):
            constants[op.outputs[0]] = ctx.const(op.inputs[0]).astype(np.float32)
        elif op.opcode in PASS_THROUGH and op.inputs and len(op.outputs) == 1:
            ctx.alias[op.outputs[0]] = op.inputs[0]
        else:
            remaining.append(op)
    return ctx, remaining


QUANTIZED_ACTIVATIONS = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def fake_quant_params(t: Tensor) -> tuple[float, int, int, int] | None:
    """(scale, zero point, qmin, qmax) for a per-tensor quantized activation, else None."""
    if t.data is not None or not t.quantized or t.dtype not in QUANTIZED_ACTIVATIONS:
        return None
    q = t.quantization
    if q.per_channel:
        return None
    return (float(q.scale[0]), int(q.zero_point[0]), *QUANTIZED_ACTIVATIONS[t.dtype])

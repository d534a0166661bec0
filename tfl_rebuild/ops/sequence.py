"""Sequence models and control flow: LSTM / RNN ops, WHILE and IF over their subgraphs.

WHILE and IF call other subgraphs of the model. A converter names them with `SubgraphRef`; codegen
emits each referenced subgraph once as its own `build_<name>(w)` function returning a keras.Model,
and the loop / branch layer runs those models (keras.ops.while_loop / keras.ops.cond).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Operator
from .registry import ConversionError, ConvertContext, LayerSpec, converter


@dataclass(frozen=True)
class SubgraphRef:
    """A constructor argument that is another subgraph of the model, built as a keras.Model."""

    index: int


def _subgraph(op: Operator, key: str) -> SubgraphRef:
    index = op.options.get(key)
    if not isinstance(index, int) or index <= 0:
        raise ConversionError(f"{op.opcode} op {op.index}: bad {key} {index!r}")
    return SubgraphRef(index)


def _operands(op: Operator, ctx: ConvertContext, tensors: tuple[int, ...]) -> list:
    """Tensor ids, with constant operands replaced by Constant layers (a loop's initial counter,
    a weight passed into the body): a called keras.Model takes tensors, not stored arrays."""
    computed = [t for t in tensors if t >= 0 and not ctx.is_const(t)]
    if not computed:
        raise ConversionError(f"{op.opcode} op {op.index}: every operand is a constant")
    refs: list = []
    for t in tensors:
        if t < 0:
            raise ConversionError(f"{op.opcode} op {op.index}: an omitted operand")
        if ctx.is_const(t):
            value = np.asarray(ctx.const(t))
            if value.dtype == np.float64:
                value = value.astype(np.float32)
            refs.append(LayerSpec("Constant", {"shape": list(value.shape), "dtype": str(value.dtype)},
                                  (computed[0],), weights=(("value", value),), custom=True))
        else:
            refs.append(t)
    return refs


@converter("WHILE", range(1, 2), note="cond and body subgraphs become keras.Models run by keras.ops.while_loop")
def while_loop(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    if len(op.inputs) != len(op.outputs):
        raise ConversionError(f"WHILE op {op.index}: {len(op.inputs)} loop inputs but {len(op.outputs)} outputs")
    refs = _operands(op, ctx, op.inputs)
    loop = LayerSpec("WhileLoop", {"cond": _subgraph(op, "cond_subgraph_index"),
                                   "body": _subgraph(op, "body_subgraph_index")},
                     tuple(refs), op.outputs, custom=True)
    return [r for r in refs if isinstance(r, LayerSpec)] + [loop]


@converter("IF", range(1, 2), note="then / else subgraphs become keras.Models run by keras.ops.cond")
def if_(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    refs = _operands(op, ctx, op.inputs)
    branch = LayerSpec("IfElse", {"then_branch": _subgraph(op, "then_subgraph_index"),
                                  "else_branch": _subgraph(op, "else_subgraph_index")},
                       tuple(refs), op.outputs, custom=True)
    return [r for r in refs if isinstance(r, LayerSpec)] + [branch]


def dynamic_slice(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    """SLICE whose begin or size is computed (a loop body writing step i of a TensorList)."""
    refs = _operands(op, ctx, op.inputs[:3])
    return [r for r in refs if isinstance(r, LayerSpec)] + [LayerSpec("DynamicSlice", {}, tuple(refs), op.outputs,
                                                                      custom=True)]

"""The graph passes before conversion, as one ordered list (`PIPELINE`), and `prepare` that runs them.

Before the list, every constant tensor gets its value (densified, dequantized), DEQUANTIZE /
DENSIFY of a constant fold into a constant, and QUANTIZE / DEQUANTIZE of activations become
aliases: the rebuild computes in float, and fake-quant layers reproduce quantized tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from tfl_rebuild.rebuild.ops.registry import MISFIT, ConversionError, ConvertContext
from tfl_rebuild.rebuild.passes.fold import drop_identity_reshapes, drop_unused, fold_constants
from tfl_rebuild.rebuild.passes.fuse import fuse_dilated_convs, fuse_silu
from tfl_rebuild.rebuild.passes.lift import lift
from tfl_rebuild.rebuild.passes.lift_1d import lift_1d
from tfl_rebuild.rebuild.passes.lift_attention import lift_attention
from tfl_rebuild.rebuild.passes.lift_batch_norm import lift_batch_norm
from tfl_rebuild.rebuild.passes.lift_group_norm import lift_group_norm
from tfl_rebuild.rebuild.passes.lift_input import lift_input
from tfl_rebuild.rebuild.passes.lift_layer_norm import lift_layer_norm
from tfl_rebuild.rebuild.passes.lift_rnn import lift_rnn
from tfl_rebuild.rebuild.passes.lift_unit_norm import lift_unit_norm
from tfl_rebuild.rebuild.passes.quantize import rounds
from tfl_rebuild.rebuild.passes.unit_batch import drop_unit_batch
from tfl_rebuild.tflite.analysis import NON_DATA
from tfl_rebuild.tflite.ir import Model, Operator
from tfl_rebuild.tflite.weights import value

Pass = Callable[[ConvertContext, list[Operator]], list[Operator]]

PIPELINE: list[Pass] = [
    fold_constants,  # first: later passes see constants and real shapes
    drop_identity_reshapes,  # after folding: a free-batch export's reshape targets are constants then
    fuse_dilated_convs,  # after folding (block shape and paddings are constants), before the lifts:
    # a dilated Conv1D or SeparableConv2D lifts whole
    # Lifting: the converter's decompositions of Keras layers become the layer again, only whole,
    # float, unquantized patterns.
    lift_1d,  # after folding: Conv1D and 1-D pooling regions
    lift_attention,  # MultiHeadAttention
    lift_group_norm,  # GroupNormalization (before lift: its region holds a LayerNormalization-like part)
    lift_batch_norm,  # BatchNormalization no conv absorbed, by its names
    lift_unit_norm,  # UnitNormalization
    lift_input,  # after folding: Rescaling / Normalization of a model input (constants per channel)
    lift_rnn,  # after folding: LSTM / GRU / SimpleRNN from WHILE loops (loop inputs are constants)
    lift_layer_norm,  # LayerNormalization
    lift,  # SeparableConv2D, Embedding, Dense on rank >= 3, biases, Softmax(axis), activation=
    fuse_silu,
    drop_unit_batch,  # after the fusions: rank-6 regions are judged on the ops that stay
    drop_unused,  # last: ops whose results nothing reads any more (a reshape read only by a folded SHAPE)
]

FOLD_CONSTANT = ("DEQUANTIZE", "DENSIFY")
PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE")


def prepare(
    model: Model, subgraph: int = 0, keep_quantize: bool = False
) -> tuple[ConvertContext, list[Operator]]:
    """keep_quantize: QUANTIZE ops that round onto a new grid stay (a fake-quant rebuild rounds there).

    An op whose inputs or outputs do not fit what its schema promises (a missing input, an index past
    the tensors: a corrupt file the reader lets through) stops a pass as a one-line ConversionError."""
    where = ["constant folding"]  # the pass running, for the message
    try:
        return _prepare(model, subgraph, keep_quantize, where)
    except MISFIT as exc:
        detail = str(exc).splitlines()[0] if str(exc).strip() else ""
        raise ConversionError(
            f"{os.path.basename(model.path) or '<bytes>'}: an op's inputs or outputs do not fit its "
            f"schema (pass {where[0]}: {type(exc).__name__}{': ' + detail if detail else ''})"
        ) from exc


def _prepare(
    model: Model, subgraph: int, keep_quantize: bool, where: list[str]
) -> tuple[ConvertContext, list[Operator]]:
    sg = model.subgraphs[subgraph]
    constants: dict[int, np.ndarray] = {
        t.index: value(t) for t in sg.tensors if t.data is not None and t.dtype not in NON_DATA
    }
    # An empty constant (a RESHAPE to a scalar's shape []) has no bytes, so no buffer data either.
    produced = {o for op in sg.operators for o in op.outputs} | set(sg.inputs)
    constants.update(
        {
            t.index: np.zeros(t.shape, t.dtype)
            for t in sg.tensors
            if t.data is None
            and t.shape
            and 0 in t.shape
            and t.index not in produced
            and t.dtype in ("int32", "int64", "float32")
        }
    )
    ctx = ConvertContext(sg, constants, subgraphs=model.subgraphs)
    remaining = []
    for op in sg.operators:
        if op.opcode in FOLD_CONSTANT and op.inputs and ctx.is_const(op.inputs[0]):
            constants[op.outputs[0]] = ctx.const(op.inputs[0]).astype(np.float32)
        elif (
            op.opcode in PASS_THROUGH
            and op.inputs
            and len(op.outputs) == 1
            and not (keep_quantize and rounds(sg, op))
        ):
            ctx.alias[op.outputs[0]] = op.inputs[0]
        else:
            remaining.append(op)
    for step in PIPELINE:
        where[0] = step.__name__
        remaining = step(ctx, remaining)
    return ctx, remaining

"""Whether the rebuilt model may take any batch: the batch axis traced from the inputs to the outputs.

The model's graph is at batch 1. It takes any batch when each of its rows can be computed alone:
every input and every computed tensor leads with that axis of 1, and every op keeps the rows
apart (`ops.batch.keeps_rows`: a Reshape of the axes after it, a reduction not over it ...). Then
the model, run on B rows, returns the B rows' results, as TFLite run on each row alone does.
Anything else (a tensor computed from constants alone, an op that merges rows, control flow, an
op with no rule) keeps the batch fixed at 1, which is faithful; the reason goes in the header.
"""

from __future__ import annotations

from tfl_rebuild.rebuild.ops.batch import keeps_rows
from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext
from tfl_rebuild.tflite.ir import Operator


def fixed_batch_reason(ctx: ConvertContext, ops: list[Operator]) -> str | None:
    """None when the batch axis runs through the whole graph, else why the batch stays 1 (one line,
    tensor names as repr)."""
    sg = ctx.subgraph
    if not sg.inputs:
        return "the model has no inputs"
    for t in sg.inputs:
        shape = ctx.shape(t)
        if not shape or shape[0] != 1:
            return f"input {_name(ctx, t)} of shape {list(shape)} has no leading batch axis of 1"
    for op in ops:
        data = [ctx.resolve(i) for i in op.inputs if i >= 0 and not ctx.is_const(i)]
        outs = [o for o in op.outputs if o >= 0 and not ctx.is_const(o)]
        if not outs:
            continue
        kind = op.opcode if op.opcode != "CUSTOM" else f"CUSTOM {repr((op.custom_code or '')[:40])}"
        what = f"{kind} {_name(ctx, outs[0])}"
        if not data:
            return f"{what} is computed from constants alone"
        for t in (*data, *outs):
            shape = ctx.shape(t)
            if not shape or shape[0] != 1:
                return f"{what}: tensor {_name(ctx, t)} of shape {list(shape)} has no batch axis"
        try:
            reason = keeps_rows(op, ctx)
        except (ConversionError, KeyError, IndexError, TypeError, ValueError):
            reason = "its attributes are not understood"
        if reason is not None:
            return f"{what}: {reason}"
    for t in sg.outputs:
        if ctx.is_const(t):
            return f"output {_name(ctx, t)} is a constant"
    return None


def _name(ctx: ConvertContext, t: int) -> str:
    """A tensor name for the header note: repr()-escaped (one printable line), cut to 60 characters."""
    name = ctx.tensor(t).name
    return repr(name if len(name) <= 60 else name[:57] + "...")

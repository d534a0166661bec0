"""Whether the rebuilt model may take any batch: the batch axis traced from the inputs to the outputs.

The model's graph is at batch 1. It takes any batch when each example can be computed alone:
every input and output leads with the batch axis of 1, every computed tensor leads with one
example's rows (1, or more after a reshape folded axes into them, as a Dense on [1, 8, 16] runs
on [8, 16]), and every op keeps the examples apart (`ops.batch.keeps_rows`: a reshape, a
reduction not over axis 0 ...). Then the model, run on B examples, returns their B results, as
TFLite run on each example alone does.
Anything else (a tensor computed from constants alone, an op that merges rows, control flow, an
op with no rule) keeps the batch fixed at 1, which is faithful; the reason goes in the header.
"""

from __future__ import annotations

from tfl_rebuild.rebuild.ops.batch import keeps_rows, refolds
from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext
from tfl_rebuild.tflite.ir import Operator


def fixed_batch_reason(ctx: ConvertContext, ops: list[Operator]) -> str | None:
    """None when the batch axis runs through the whole graph, else why the batch stays 1 (one line,
    tensor names as repr)."""
    sg = ctx.subgraph
    if not sg.inputs:
        return "the model has no inputs"
    rows: dict[int, int] = {}  # computed tensor -> rows of axis 0 one example takes
    for t in sg.inputs:
        shape = ctx.shape(t)
        if not shape or shape[0] != 1:
            return f"input {_name(ctx, t)} of shape {list(shape)} has no leading batch axis of 1"
        rows[ctx.resolve(t)] = 1
    for op in ops:
        data = [ctx.resolve(i) for i in op.inputs if i >= 0 and not ctx.is_const(i)]
        outs = [ctx.resolve(o) for o in op.outputs if o >= 0 and not ctx.is_const(o)]
        if not outs:
            continue
        kind = op.opcode if op.opcode != "CUSTOM" else f"CUSTOM {repr((op.custom_code or '')[:40])}"
        what = f"{kind} {_name(ctx, outs[0])}"
        if not data:
            return f"{what} is computed from constants alone"
        for t in (*data, *outs):
            shape = ctx.shape(t)
            if t not in rows and t not in outs:
                return f"{what} reads {_name(ctx, t)}, which is not computed from the inputs"
            if not shape or not all(d > 0 for d in shape):
                return f"{what}: tensor {_name(ctx, t)} of shape {list(shape)} has no batch axis"
        counts = {rows[t] for t in data}
        if len(counts) > 1:
            return f"{what} joins tensors of {' and '.join(map(str, sorted(counts)))} rows per example"
        try:
            reason = keeps_rows(op, ctx)
        except (ConversionError, KeyError, IndexError, TypeError, ValueError):
            reason = "its attributes are not understood"
        if reason is not None:
            return f"{what}: {reason}"
        n = counts.pop()
        for o in outs:
            if ctx.shape(o)[0] != n and not refolds(op):
                return f"{what}: {ctx.shape(o)[0]} rows out of {n} per example"
            rows[o] = ctx.shape(o)[0]
    for t in sg.outputs:
        t = ctx.resolve(t)
        if ctx.is_const(t):
            return f"output {_name(ctx, t)} is a constant"
        if rows.get(t) != 1:
            return f"output {_name(ctx, t)} of shape {list(ctx.shape(t))} has no leading batch axis of 1"
    return None


def _name(ctx: ConvertContext, t: int) -> str:
    """A tensor name for the header note: repr()-escaped (one printable line), cut to 60 characters."""
    name = ctx.tensor(t).name
    return repr(name if len(name) <= 60 else name[:57] + "...")

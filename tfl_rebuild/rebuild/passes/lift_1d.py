"""1-D regions: Keras' Conv1D and 1-D pooling, which TensorFlow runs as their 2-D ops on [B, 1, L, C].

Keras writes each Conv1D / MaxPooling1D / AveragePooling1D as a reshape to [B, 1, L, C], the 2-D op
and a reshape back; the converter then drops the reshape pairs between consecutive ones, so a
stack of them is one region of [B, 1, L, C] tensors from a reshape [B, L, C] -> [B, 1, L, C] (the
entry) to reshapes out. A region is rebuilt on the same values without the unit axis: its ops
become lifted Conv1D / MaxPooling1D / AveragePooling1D ops, elementwise ops stay as they are, the
entry and exits to [B, L, C] become aliases, and any other exit (a Flatten) reshapes the 3-D value.

A region lifts only whole: every op reading one of its tensors is a 1-high stride-1 undilated
CONV_2D with a constant kernel, a 1-high stride-1 MAX_POOL_2D or AVERAGE_POOL_2D, an elementwise
op whose other inputs are region tensors or constants of rank <= 1, or a reshape out; its tensors
are float and no model output. A PAD of the length axis alone by (k - 1) * dilation before, 0
after, read only by the entry that only a VALID convolution reads, makes that convolution causal.
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext, Trait, has_trait
from tfl_rebuild.rebuild.passes.lift import Graph
from tfl_rebuild.tflite.ir import Operator

POOL_1D = {"MAX_POOL_2D": "MaxPooling1D", "AVERAGE_POOL_2D": "AveragePooling1D"}


def _entry(g: Graph, op: Operator) -> bool:
    """A reshape [B, L, C] -> [B, 1, L, C] of a float tensor."""
    if op.opcode not in ("RESHAPE", "EXPAND_DIMS") or len(op.outputs) != 1:
        return False
    x, y = g.ctx.shape(op.inputs[0]), g.ctx.shape(op.outputs[0])
    return len(x) == 3 and tuple(y) == (x[0], 1, *x[1:]) and g.is_float(op.inputs[0])


def _member(g: Graph, op: Operator, region: set[int], final: bool = True) -> str | None:
    """What `op`, reading a region tensor, becomes: a lifted layer, "keep" (elementwise), "exit"
    (a reshape out), or None when the region cannot lift. Not `final` (while the region grows),
    an elementwise op's other [B, 1, L, C] inputs may still join it."""
    o = op.options
    ins = [g.ctx.resolve(i) for i in op.inputs if i >= 0]
    if op.opcode == "CONV_2D":
        if g.hybrid(op):  # its run-time quantized input is the 4-D tensor the region loses
            return None
        if ins[0] not in region or any(i in region for i in ins[1:]) or not g.ctx.is_const(op.inputs[1]):
            return None
        if (
            g.ctx.shape(op.inputs[1])[1] != 1
            or o.get("stride_h", 1) != 1
            or o.get("dilation_h_factor", 1) != 1
        ):
            return None
        return "Conv1D"
    if op.opcode in POOL_1D:
        return POOL_1D[op.opcode] if o.get("filter_height", 1) == 1 and o.get("stride_h", 1) == 1 else None
    if op.opcode in ("RESHAPE", "SQUEEZE"):
        return "exit" if ins[0] in region and not any(i in region for i in ins[1:]) else None
    if has_trait(op, Trait.ELEMENTWISE) and len(op.outputs) == 1:

        def fits(i: int) -> bool:
            if g.ctx.is_const(i):
                return np.ndim(g.ctx.const(i)) <= 1
            shape = g.ctx.shape(i)
            return i in region or (not final and len(shape) == 4 and shape[1] == 1)

        return "keep" if all(fits(i) for i in ins) else None
    return None


def _grow(g: Graph, entry: Operator) -> tuple[set[int], list[tuple[Operator, str]]] | None:
    """The region's 4-D tensors and its ops (with what each becomes), or None when it cannot lift."""
    region = {g.ctx.resolve(entry.outputs[0])}
    members: list[tuple[Operator, str]] = []
    seen: set[int] = set()
    todo = [g.ctx.resolve(entry.outputs[0])]
    while todo:
        t = todo.pop()
        if t in g.outputs or not g.is_float(t):
            return None
        for op in g.readers.get(t, []):
            if id(op) in seen:
                continue
            seen.add(id(op))
            kind = _member(g, op, region, final=False)
            if kind is None:
                return None
            members.append((op, kind))
            if kind != "exit":
                out = g.ctx.resolve(op.outputs[0])
                shape = g.ctx.shape(out)
                if len(shape) != 4 or shape[1] != 1:
                    return None
                region.add(out)
                todo.append(out)
    # An elementwise op may have read a region tensor before its other input joined: check again.
    if any(_member(g, op, region) != kind for op, kind in members):
        return None
    return region, members


def _causal_pad(g: Graph, entry: Operator, members: list[tuple[Operator, str]]) -> Operator | None:
    """The PAD before `entry` that makes its only reader, a VALID convolution, causal."""
    pad = g.made_by(entry.inputs[0], "PAD")
    readers = g.readers.get(g.ctx.resolve(entry.outputs[0]), [])
    if pad is None or len(readers) != 1 or not g.ctx.is_const(pad.inputs[1]):
        return None
    conv = readers[0]
    if conv.opcode != "CONV_2D" or conv.options.get("padding") != "VALID":
        return None
    pad_readers = g.readers.get(g.ctx.resolve(pad.outputs[0]), [])
    if len(pad_readers) != 1 or pad.outputs[0] in g.outputs or not g.is_float(pad.inputs[0]):
        return None
    span = (g.ctx.shape(conv.inputs[1])[2] - 1) * int(conv.options.get("dilation_w_factor", 1))
    pads = np.asarray(g.ctx.const(pad.inputs[1])).reshape(-1, 2).tolist()
    return pad if span > 0 and pads == [[0, 0], [span, 0], [0, 0]] else None


def lift_1d(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    """Every whole 1-D region, rebuilt as 1-D layers on 3-D tensors."""
    g = Graph(ctx, ops)
    replaced: dict[int, Operator] = {}
    dropped: set[int] = set()
    for entry in ops:
        if id(entry) in dropped or id(entry) in replaced or not _entry(g, entry):
            continue
        grown = _grow(g, entry)
        if grown is None or any(id(op) in replaced or id(op) in dropped for op, _ in grown[1]):
            continue
        region, members = grown
        pad = _causal_pad(g, entry, members)
        x = pad.inputs[0] if pad is not None else entry.inputs[0]
        for t in region:
            b, _, n, c = ctx.shape(t)
            ctx.shapes[t] = (b, n, c)
        ctx.alias[ctx.resolve(entry.outputs[0])] = ctx.resolve(x)
        dropped.add(id(entry))
        if pad is not None:
            dropped.add(id(pad))
        for op, kind in members:
            if kind == "exit":
                out = ctx.resolve(op.outputs[0])
                if ctx.shape(out) == ctx.shape(op.inputs[0]):  # [B, L, C] again: nothing to do
                    ctx.alias[out] = ctx.resolve(op.inputs[0])
                    dropped.add(id(op))
                continue
            if kind == "keep":
                continue
            reads_entry = g.same(op.inputs[0], entry.outputs[0])
            causal = pad is not None and reads_entry
            absorbed = [*(["PAD"] if causal else []), *([entry.opcode] if reads_entry else []), op.opcode]
            replaced[id(op)] = Operator(
                index=op.index,
                opcode=kind,
                version=1,
                inputs=op.inputs,
                outputs=op.outputs,
                options={**op.options, "causal": causal, "lifted_from": absorbed},
            )
    return [replaced.get(id(op), op) for op in ops if id(op) not in dropped]

"""Rank-6 regions without their unit batch axis, so that Core ML (rank <= 5) can take them.

PyTorch exports reach rank 6 on the way between two 4-D tensors: PixelShuffle / PixelUnshuffle
(reshape [1, H, W, C, r, r], transpose, reshape), Swin's window partition, nearest upsampling as
reshape [1, H, 1, W, 1, C] * ones [1, H, 2, W, 2, C], transpose. Keras runs those as they are, but
coremltools refuses any tensor above rank 5 ("Core ML only supports tensors with rank <= 5").
Their leading axis is the batch of 1, so each such region is rebuilt on the same values without it:
the reshape into the region and out of it become batch-changing reshapes, a transpose drops axis
0 from its permutation, a rank-6 constant operand drops its leading 1, a Dense on the last axis
stays, and a strided slice out of the region drops its first entry. The values and their order
are unchanged (verification compares tensors flattened); only the region's shapes lose an axis.

A region is left as it is (and Core ML will name the problem) when any op touching it is not
shape-only, elementwise (registry traits) or one of the few below, when its leading axis is not 1, when it is a model input or output, or when a
constant it changes is also read outside it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext, Trait, has_trait
from tfl_rebuild.rebuild.ops.shape import transpose_perm
from tfl_rebuild.tflite.ir import Operator

MAX_RANK = 5  # Core ML's


def drop_unit_batch(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    high = {
        t
        for op in ops
        for t in (*op.inputs, *op.outputs)
        if t >= 0 and not ctx.is_const(t) and len(ctx.shape(t)) > MAX_RANK
    }
    if not high:
        return ops
    regions = _regions(ctx, ops, high)
    readers: dict[int, list[Operator]] = {}
    for op in ops:
        for i in op.inputs:
            if i >= 0:
                readers.setdefault(ctx.resolve(i), []).append(op)
    replaced: dict[int, Operator] = {}
    for tensors, members in regions:
        plan = _plan(ctx, tensors, members, readers)
        if plan is None:
            continue
        constants, options = plan
        for t in tensors:
            ctx.shapes[t] = tuple(ctx.shape(t)[1:])
        ctx.constants.update(constants)
        for op in members:
            if id(op) in options:
                replaced[id(op)] = dataclasses.replace(op, options=options[id(op)])
    return [replaced.get(id(op), op) for op in ops]


def _regions(
    ctx: ConvertContext, ops: list[Operator], high: set[int]
) -> list[tuple[set[int], list[Operator]]]:
    """Connected groups of rank > 5 tensors (joined by the ops reading or writing them), with those ops."""
    parent = {t: t for t in high}

    def find(t: int) -> int:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    touching = []
    for op in ops:
        ts = [ctx.resolve(t) for t in (*op.inputs, *op.outputs) if t >= 0 and ctx.resolve(t) in high]
        if ts:
            touching.append((op, ts))
            for t in ts[1:]:
                parent[find(t)] = find(ts[0])
    groups: dict[int, tuple[set[int], list[Operator]]] = {}
    for op, ts in touching:
        tensors, members = groups.setdefault(find(ts[0]), (set(), []))
        tensors.update(ts)
        members.append(op)
    return list(groups.values())


def _plan(
    ctx: ConvertContext, tensors: set[int], members: list[Operator], readers: dict[int, list[Operator]]
):
    """The constants and options that change when `tensors` lose their leading axis, or None when
    the region cannot be rebuilt so."""
    sg = ctx.subgraph
    boundary = {ctx.resolve(t) for t in (*sg.inputs, *sg.outputs)}
    if any(t in boundary or len(ctx.shape(t)) != MAX_RANK + 1 or ctx.shape(t)[0] != 1 for t in tensors):
        return None
    constants: dict[int, np.ndarray] = {}
    options: dict[int, dict] = {}
    for op in members:
        ins = [ctx.resolve(i) for i in op.inputs if i >= 0]
        outs = [ctx.resolve(o) for o in op.outputs if o >= 0]
        if has_trait(op, Trait.SHAPE_ONLY):
            continue  # converters read the (overridden) shapes of input and output, not the shape operand
        if op.opcode == "STRIDED_SLICE" and ins[0] in tensors:
            dropped = _slice_without_unit_axis(ctx, op, outs[0] in tensors)
            if dropped is None:
                return None
            constants.update(dropped[0])
            options[id(op)] = dropped[1]
            continue
        if not all(o in tensors for o in outs):
            return None  # a reduction or a slice out of the region: not one of the ops handled
        if has_trait(op, Trait.ELEMENTWISE) or op.opcode == "BROADCAST_TO":  # trailing axes alone
            for c in ins:
                if ctx.is_const(c) and np.ndim(ctx.const(c)) == MAX_RANK + 1:
                    constants[c] = np.asarray(ctx.const(c))[0]  # a rank-6 operand has a leading 1 too
        elif op.opcode == "TRANSPOSE" and ctx.is_const(ins[1]):
            perm = transpose_perm(op, ctx)
            if perm[0] != 0:
                return None  # the batch axis moves: it is not a unit axis riding along
            options[id(op)] = {**op.options, "perm": [p - 1 for p in perm[1:]]}  # its constant may be shared
        elif op.opcode == "TILE" and ctx.is_const(ins[1]):
            multiples = np.asarray(ctx.const(ins[1])).reshape(-1)
            constants[ins[1]] = multiples[1:]
        elif op.opcode == "FULLY_CONNECTED" and op.options.get("keep_num_dims") and ins[0] in tensors:
            continue  # along the last axis alone (a Dense on Swin's windows)
        elif op.opcode == "CONCATENATION":
            axis = int(op.options.get("axis", 0)) % (MAX_RANK + 1)
            if axis == 0 or any(ctx.is_const(i) for i in ins):
                return None
            options[id(op)] = {**op.options, "axis": axis - 1}
        else:
            return None
    # A changed constant must not be read outside the region (it keeps its meaning there).
    for c in constants:
        if any(all(r is not m for m in members) for r in readers.get(c, [])):
            return None
    return constants, options


MASKS = ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")


def _slice_without_unit_axis(ctx: ConvertContext, op: Operator, out_in_region: bool):
    """A STRIDED_SLICE of a region tensor as ({begin, end, strides: without entry 0}, options with
    each mask shifted past it) when its entry 0 takes the unit axis whole, or drops it (shrink)
    when its output leaves the region; None otherwise (an ellipsis or a new axis renumbers entries)."""
    o = op.options
    if any(int(o.get(m, 0)) for m in ("ellipsis_mask", "new_axis_mask")) or not all(
        ctx.is_const(i) for i in op.inputs[1:4]
    ):
        return None
    begin, end, strides = (np.asarray(ctx.const(i)).reshape(-1) for i in op.inputs[1:4])
    if not len(begin) == len(end) == len(strides) == MAX_RANK + 1:
        return None
    shrink = bool(int(o.get("shrink_axis_mask", 0)) & 1)
    if shrink:
        takes_all = int(begin[0]) in (0, -1) and not out_in_region
    else:
        b = None if int(o.get("begin_mask", 0)) & 1 else int(begin[0])
        e = None if int(o.get("end_mask", 0)) & 1 else int(end[0])
        if o.get("offset") and e is not None:
            e += b or 0
        takes_all = int(strides[0]) != 0 and range(1)[b : e : int(strides[0])] == range(1) and out_in_region
    if not takes_all:
        return None
    constants = {ctx.resolve(i): v[1:] for i, v in zip(op.inputs[1:4], (begin, end, strides))}
    return constants, {**o, **{m: int(o.get(m, 0)) >> 1 for m in MASKS}}

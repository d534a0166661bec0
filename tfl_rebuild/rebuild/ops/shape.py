"""Shape and layout ops: RESHAPE, SQUEEZE, EXPAND_DIMS, TRANSPOSE, CONCATENATION, PAD*, SLICE,
STRIDED_SLICE, SPACE_TO_BATCH_ND, BATCH_TO_SPACE_ND."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.activation import with_activation
from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext, LayerSpec, Trait, converter
from tfl_rebuild.tflite.ir import Operator


def reshape_to(x: int, out: int, ctx: ConvertContext, outputs: tuple[int, ...]) -> LayerSpec:
    """keras.layers.Reshape when the batch axis stays, BatchReshape when it moves. BatchReshape takes
    -1 for the first axis: the same shape here, and at any batch each example's rows (contiguous
    in memory) become its rows of the new shape (passes.batch_axis).

    Complex tensors are held as float pairs in a trailing axis of 2 (see spectral.py), kept last."""
    in_shape, out_shape = ctx.shape(x), ctx.shape(out)
    if any(d < 0 for d in out_shape):
        raise ConversionError(f"tensor {ctx.tensor(out).name!r}: dynamic output shape {list(out_shape)}")
    if ctx.tensor(out).dtype == "complex64":
        in_shape, out_shape = (*in_shape, 2), (*out_shape, 2)
    if in_shape and out_shape and in_shape[0] == out_shape[0]:
        return LayerSpec("Reshape", {"target_shape": out_shape[1:]}, (x,), outputs)
    shape = list(out_shape)
    if shape and all(d > 0 for d in shape):
        shape[0] = -1
    return LayerSpec("BatchReshape", {"shape": shape}, (x,), outputs, custom=True)


def reshape(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x, out = op.inputs[0], op.outputs[0]
    in_shape, out_shape = ctx.shape(x), ctx.shape(out)
    if (
        len(in_shape) > 2
        and ctx.tensor(out).dtype != "complex64"
        and tuple(out_shape) == (in_shape[0], int(np.prod(in_shape[1:])))
    ):  # keras.layers.Flatten: every axis but the batch into one
        return LayerSpec("Flatten", {}, (x,), op.outputs)
    return reshape_to(x, out, ctx, op.outputs)


for _name in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
    converter(_name, range(1, 3), traits=[Trait.SHAPE_ONLY, Trait.COMPLEX_OK])(reshape)


def transpose_perm(op: Operator, ctx: ConvertContext) -> list[int]:
    """A TRANSPOSE's permutation: its option "perm" where a pass set one (passes.unit_batch: its
    constant may be shared with transposes the pass leaves alone), else its constant operand."""
    if "perm" in op.options:
        return [int(p) for p in op.options["perm"]]
    return [int(p) for p in np.asarray(ctx.const(op.inputs[1])).reshape(-1)]


@converter("TRANSPOSE", range(1, 7), traits=[Trait.MOVES_VALUES])
def transpose(op: Operator, ctx: ConvertContext) -> LayerSpec:
    perm = transpose_perm(op, ctx)
    if perm and perm[0] == 0:
        return LayerSpec("Permute", {"dims": tuple(perm[1:])}, (op.inputs[0],), op.outputs)
    return LayerSpec("Transpose", {"perm": perm}, (op.inputs[0],), op.outputs, custom=True)


@converter("CONCATENATION", range(1, 5), traits=[Trait.BATCH_PRESERVING])
def concatenation(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    inputs = [i for i in op.inputs if i >= 0]
    axis = int(op.options.get("axis", -1))
    consts = [i for i in inputs if ctx.is_const(i)]
    if not consts:
        spec = LayerSpec("Concatenate", {"axis": axis}, tuple(inputs), op.outputs, call_list=True)
    else:
        values = [ctx.const(i).astype(np.float32) for i in consts]
        spec = LayerSpec(
            "Concat",
            {
                "axis": axis,
                "layout": "".join("c" if ctx.is_const(i) else "i" for i in inputs),
                "constant_shapes": [list(v.shape) for v in values],
            },
            tuple(i for i in inputs if not ctx.is_const(i)),
            op.outputs,
            weights=tuple((f"constant_{k}", v) for k, v in enumerate(values)),
            custom=True,
        )
    return with_activation(op, spec)


def pad(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x = op.inputs[0]
    pads = [[int(a), int(b)] for a, b in np.asarray(ctx.const(op.inputs[1])).reshape(-1, 2)]
    mode = {"REFLECT": "reflect", "SYMMETRIC": "symmetric"}.get(op.options.get("mode"), "constant")
    if op.opcode != "MIRROR_PAD":
        mode = "constant"
    value = 0.0
    if op.opcode == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = float(np.asarray(ctx.const(op.inputs[2])).reshape(-1)[0])
    if mode == "constant" and value == 0.0 and len(pads) == 4 and pads[0] == [0, 0] and pads[3] == [0, 0]:
        return LayerSpec("ZeroPadding2D", {"padding": (tuple(pads[1]), tuple(pads[2]))}, (x,), op.outputs)
    kwargs = {"paddings": pads, "mode": mode}
    if not np.isfinite(value):  # max pooling with explicit padding (ai-edge-torch): PADV2 by -inf
        kwargs["constant_values"] = str(value)  # "-inf" / "inf" / "nan": the layer parses it
    elif value:
        kwargs["constant_values"] = value
    return LayerSpec("Pad", kwargs, (x,), op.outputs, custom=True)


for _name in ("PAD", "PADV2", "MIRROR_PAD"):
    converter(_name, range(1, 5))(pad)


def _axis_slice(index, dim: int) -> list:
    """A Python index on one axis -> [start, stop, step] with no negative-stop ambiguity."""
    if isinstance(index, int):
        i = index % dim
        return [i, i + 1, 1]
    start, stop, step = index.indices(dim)
    if step < 0 and stop < 0:
        stop = None  # "run past index 0": -1 would mean the last element
    return [start, stop, step]


CROPPING = {3: "Cropping1D", 4: "Cropping2D", 5: "Cropping3D"}


def _cropping(
    slices: list[list], shape: tuple[int, ...], x: int, outputs: tuple[int, ...]
) -> LayerSpec | None:
    """keras.layers.Cropping1D/2D/3D for a slice that keeps the batch and the channels whole and
    cuts a stride-1 span of each axis between them; None for any other slice."""
    if len(shape) not in CROPPING or any(d < 0 for d in shape):
        return None
    spans = []
    for (start, stop, step), dim in zip(slices, shape):
        stop = dim if stop is None else stop
        if step != 1 or not 0 <= start <= stop <= dim:
            return None
        spans.append((start, dim - stop))
    if spans[0] != (0, 0) or spans[-1] != (0, 0) or all(s == (0, 0) for s in spans):
        return None
    inner = spans[1:-1]
    cropping = inner[0] if len(inner) == 1 else tuple(inner)
    return LayerSpec(CROPPING[len(shape)], {"cropping": cropping}, (x,), outputs)


@converter("STRIDED_SLICE", range(1, 9), traits=[Trait.MOVES_VALUES])
def strided_slice(op: Operator, ctx: ConvertContext) -> LayerSpec | list[LayerSpec]:
    x = op.inputs[0]
    shape = ctx.shape(x)
    begin, end, strides = (np.asarray(ctx.const(i)).reshape(-1).tolist() for i in op.inputs[1:4])
    o = op.options

    def bit(mask: str, i: int) -> bool:
        return bool(int(o.get(mask, 0)) >> i & 1)

    # Walk the slice spec: an ellipsis covers the input axes no other entry names, a new axis
    # names none (it becomes a reshape at the end), every other entry slices the next input axis.
    slices, squeeze, new_axis, axis = [], [], False, 0
    ellipsis_seen = False
    for i in range(len(begin)):
        if bit("ellipsis_mask", i) and not ellipsis_seen:
            ellipsis_seen = True
            named = sum(1 for j in range(len(begin)) if j != i and not bit("new_axis_mask", j))
            for _ in range(max(len(shape) - named, 0)):
                slices.append([0, shape[axis], 1])
                axis += 1
            continue
        if bit("new_axis_mask", i):
            new_axis = True
            continue
        if axis >= len(shape):
            raise ConversionError(
                f"STRIDED_SLICE op {op.index}: {len(begin)} slice entries for rank {len(shape)}"
            )
        dim = shape[axis]
        if bit("shrink_axis_mask", i):
            slices.append(_axis_slice(int(begin[i]), dim))
            squeeze.append(axis)
        else:
            b = None if bit("begin_mask", i) else int(begin[i])
            e = None if bit("end_mask", i) else int(end[i])
            if o.get("offset") and e is not None:
                e += b or 0
            slices.append(_axis_slice(slice(b, e, int(strides[i])), dim))
        axis += 1
    slices += [[0, shape[a], 1] for a in range(axis, len(shape))]
    kwargs = {"slices": _whole_batch(slices, shape)}
    if squeeze:
        kwargs["squeeze"] = squeeze
    if not new_axis:
        crop = None if squeeze else _cropping(slices, shape, x, op.outputs)
        return crop or LayerSpec("Slice", kwargs, (x,), op.outputs, custom=True)
    out_shape = list(ctx.shape(op.outputs[0]))
    if any(d < 0 for d in out_shape):
        raise ConversionError(f"STRIDED_SLICE op {op.index}: dynamic output shape {out_shape}")
    spec = LayerSpec("Slice", kwargs, (x,), custom=True)
    return [spec, LayerSpec("BatchReshape", {"shape": out_shape}, (spec,), op.outputs, custom=True)]


@converter("SLICE", range(1, 7), traits=[Trait.MOVES_VALUES])
def slice_(op: Operator, ctx: ConvertContext) -> LayerSpec:
    if not (ctx.is_const(op.inputs[1]) and ctx.is_const(op.inputs[2])):  # e.g. a TensorList write in a loop
        from tfl_rebuild.rebuild.ops.sequence import dynamic_slice

        return dynamic_slice(op, ctx)
    x = op.inputs[0]
    begin = np.asarray(ctx.const(op.inputs[1])).reshape(-1).tolist()
    size = np.asarray(ctx.const(op.inputs[2])).reshape(-1).tolist()
    slices = [[int(b), None if s < 0 else int(b) + int(s), 1] for b, s in zip(begin, size)]
    crop = _cropping(slices, ctx.shape(x), x, op.outputs) if len(slices) == ctx.rank(x) else None
    return crop or LayerSpec(
        "Slice", {"slices": _whole_batch(slices, ctx.shape(x))}, (x,), op.outputs, custom=True
    )


def _whole_batch(slices: list[list], shape) -> list[list]:
    """The whole first axis as [0, None, 1], not [0, 1, 1]: the same rows at batch 1, and every row at
    any other batch (passes.batch_axis)."""
    if slices and shape and slices[0][0] == 0 and slices[0][1] in (shape[0], None) and slices[0][2] == 1:
        return [[0, None, 1], *slices[1:]]
    return slices


def _block_pairs(ctx: ConvertContext, i: int) -> list[list[int]]:
    return [[int(a), int(b)] for a, b in np.asarray(ctx.const(i)).reshape(-1, 2)]


@converter("SPACE_TO_BATCH_ND", range(1, 5))
def space_to_batch_nd(op: Operator, ctx: ConvertContext) -> LayerSpec:
    # (With a convolution between it and a BATCH_TO_SPACE_ND, passes.fuse made a dilated conv.)
    block = [int(b) for b in np.asarray(ctx.const(op.inputs[1])).reshape(-1)]
    return LayerSpec(
        "SpaceToBatch",
        {"block_shape": block, "paddings": _block_pairs(ctx, op.inputs[2])},
        (op.inputs[0],),
        op.outputs,
        custom=True,
    )


@converter("BATCH_TO_SPACE_ND", range(1, 5))
def batch_to_space_nd(op: Operator, ctx: ConvertContext) -> LayerSpec:
    block = [int(b) for b in np.asarray(ctx.const(op.inputs[1])).reshape(-1)]
    return LayerSpec(
        "BatchToSpace",
        {"block_shape": block, "crops": _block_pairs(ctx, op.inputs[2])},
        (op.inputs[0],),
        op.outputs,
        custom=True,
    )

"""UnitNormalization: the ops Keras 3 writes for it become the layer.

keras.layers.UnitNormalization is x * rsqrt(max(sum x^2, eps^2)) with eps 1e-12; TensorFlow writes
it as SQUARE, SUM (keep_dims), RSQRT, MINIMUM(1e12), MUL, or with RSQRT(MAXIMUM(sum, 1e-24)). Only
that epsilon is the layer: keras.ops.normalize's default (1e-7) stays in the faithful form.
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext
from tfl_rebuild.rebuild.passes.lift import Graph, Lifted, keep_dims_axes, lift, lifted_op, operands, plain
from tfl_rebuild.tflite.ir import Operator

UNIT_NORM_EPSILON = 1e-12  # keras.layers.UnitNormalization: x * rsqrt(max(sum x^2, eps^2)), eps 1e-12


def _inv_norm(g: Graph, t: int) -> tuple[list[Operator], Operator] | None:
    """1 / max(norm, 1e-12) as Keras 3 writes it, MINIMUM(RSQRT(s), 1e12) or RSQRT(MAXIMUM(s,
    1e-24)), with s a SUM: (those ops, the SUM)."""
    clip = g.made_by(t, "MINIMUM")
    if clip is not None:
        for a, b in operands(clip):
            rsqrt, bound = g.made_by(a, "RSQRT"), g.scalar(b)
            if (
                rsqrt is not None
                and bound is not None
                and np.isclose(bound, 1 / UNIT_NORM_EPSILON, rtol=1e-6)
            ):
                total = g.made_by(rsqrt.inputs[0], "SUM")
                return ([clip, rsqrt], total) if total is not None else None
        return None
    rsqrt = g.made_by(t, "RSQRT")
    floor = g.made_by(rsqrt.inputs[0], "MAXIMUM") if rsqrt is not None else None
    for a, b in operands(floor) if floor is not None else ():
        total, bound = g.made_by(a, "SUM"), g.scalar(b)
        if total is not None and bound is not None and np.isclose(bound, UNIT_NORM_EPSILON**2, rtol=1e-6):
            return [rsqrt, floor], total
    return None


def _unit_norm(g: Graph, end: Operator) -> Lifted | None:
    """MUL(x, 1 / max(norm, 1e-12)) with norm^2 = SUM(SQUARE(x), axes): Keras' UnitNormalization."""
    if not plain(end, "MUL") or len(end.inputs) != 2:
        return None
    for x, inv in operands(end):
        found = _inv_norm(g, inv)
        if found is None or g.ctx.is_const(x):
            continue
        ops, total = found
        square = g.made_by(total.inputs[0], "SQUARE")
        axes = keep_dims_axes(g, total)
        chain = [square, total, *ops, end]
        if square is None or not g.same(square.inputs[0], x) or not axes or 0 in axes:
            continue
        if g.is_float(x) and g.enclosed(chain):
            # named as the layer's scope: its RSQRT is ".../unit_normalization/Rsqrt"
            rsqrt = next(op for op in ops if op.opcode == "RSQRT")
            return lifted_op(
                end, "UnitNormalization", (x,), {"axes": axes, "name_tensor": rsqrt.outputs[0]}, chain
            )
    return None


def lift_unit_norm(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    """Every UnitNormalization pattern, as one lifted op."""
    return lift(ctx, ops, (_unit_norm,))

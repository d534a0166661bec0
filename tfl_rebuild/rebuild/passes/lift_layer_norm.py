"""LayerNormalization: the ops TensorFlow writes for it become the layer.

MEAN(x) -> SQUARED_DIFFERENCE(x, mean) -> MEAN -> ADD eps -> RSQRT [-> MUL gamma] = inv;
x * inv + (-mean * inv [+ beta]) (NEG before or after the MUL; or beta - mean * inv), both MEANs
over the same non-batch axes with keep_dims. Whole, float and enclosed only (passes.lift).
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext
from tfl_rebuild.rebuild.passes.lift import Graph, Lifted, keep_dims_axes, lift, lifted_op, operands, plain
from tfl_rebuild.tflite.ir import Operator


def _param(g: Graph, t: int, shape: tuple[int, ...]) -> bool:
    """Whether constant `t` broadcasts to `shape` (the input's shape, 1 off the normalized axes)."""
    if not g.ctx.is_const(t):
        return False
    v = np.asarray(g.ctx.const(t))
    try:
        return v.dtype.kind == "f" and np.broadcast_shapes(v.shape, shape) == shape
    except ValueError:
        return False


def _layer_norm(g: Graph, end: Operator) -> Lifted | None:
    if not plain(end, "ADD") or len(end.inputs) != 2:
        return None
    for scaled_t, res_t in operands(end):
        scaled = g.made_by(scaled_t, "MUL")
        if scaled is None:
            continue
        for x, inv_t in operands(scaled):
            found = _inv(g, inv_t)
            if found is None:
                continue
            inv_ops, mean, eps, gamma = found
            if not g.same(mean.inputs[0], x):
                continue
            res = _shift(g, res_t, mean, inv_t)
            if res is None:
                continue
            res_ops, beta = res
            axes = keep_dims_axes(g, mean)
            shape = g.ctx.shape(x)
            bshape = tuple(d if a in axes else 1 for a, d in enumerate(shape))
            chain = [*inv_ops, *res_ops, scaled, end]
            if (
                0 in axes
                or any(p >= 0 and not _param(g, p, bshape) for p in (gamma, beta))
                or not g.is_float(x)
                or not g.enclosed(chain)
            ):
                continue
            options = {"axes": axes, "epsilon": eps}
            return lifted_op(end, "LayerNormalization", (x, gamma, beta), options, chain)
    return None


def _inv(g: Graph, t: int) -> tuple[list[Operator], Operator, float, int] | None:
    """inv = RSQRT(MEAN(SQUARED_DIFFERENCE(x, mean)) + eps) [* gamma]: (ops, mean op, eps, gamma or -1)."""
    gamma, ops = -1, []
    rsqrt = g.made_by(t, "RSQRT")
    if rsqrt is None:
        mul = g.made_by(t, "MUL")
        if mul is None:
            return None
        for r, c in operands(mul):
            if g.made_by(r, "RSQRT") is not None and g.ctx.is_const(c):
                rsqrt, gamma, ops = g.made_by(r, "RSQRT"), c, [mul]
                break
        else:
            return None
    add = g.made_by(rsqrt.inputs[0], "ADD")
    if add is None:
        return None
    for v, e in operands(add):
        eps = g.scalar(e)
        var = g.made_by(v, "MEAN")
        if eps is None or var is None or eps < 0:
            continue
        sqd = g.made_by(var.inputs[0], "SQUARED_DIFFERENCE")
        if sqd is None:
            continue
        for x, m in operands(sqd):
            mean = g.made_by(m, "MEAN")
            if mean is None or not g.same(mean.inputs[0], x):
                continue
            axes = keep_dims_axes(g, mean)
            if axes is None or axes != keep_dims_axes(g, var):
                continue
            return [mean, sqd, var, add, rsqrt, *ops], mean, eps, gamma
    return None


def _shift(g: Graph, t: int, mean: Operator, inv: int) -> tuple[list[Operator], int] | None:
    """-mean * inv [+ beta], as MUL(NEG(mean), inv), NEG(MUL(mean, inv)) or SUB(beta, MUL(mean, inv)):
    (ops, beta or -1)."""
    m = mean.outputs[0]

    def neg_times_inv(u: int) -> list[Operator] | None:
        mul = g.made_by(u, "MUL")
        if mul is not None:
            for a, b in operands(mul):
                neg = g.made_by(a, "NEG")
                if neg is not None and g.same(neg.inputs[0], m) and g.same(b, inv):
                    return [neg, mul]
        neg = g.made_by(u, "NEG")
        if neg is not None:
            inner = times_inv(neg.inputs[0])
            if inner is not None:
                return [*inner, neg]
        return None

    def times_inv(u: int) -> list[Operator] | None:
        mul = g.made_by(u, "MUL")
        if mul is not None and any(g.same(a, m) and g.same(b, inv) for a, b in operands(mul)):
            return [mul]
        return None

    found = neg_times_inv(t)
    if found is not None:
        return found, -1
    add = g.made_by(t, "ADD")
    if add is not None:
        for u, beta in operands(add):
            found = neg_times_inv(u)
            if found is not None and g.ctx.is_const(beta):
                return [*found, add], beta
    sub = g.made_by(t, "SUB")
    if sub is not None and g.ctx.is_const(sub.inputs[0]):
        found = times_inv(sub.inputs[1])
        if found is not None:
            return [*found, sub], sub.inputs[0]
    return None


def lift_layer_norm(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    return lift(ctx, ops, matchers=(_layer_norm,))

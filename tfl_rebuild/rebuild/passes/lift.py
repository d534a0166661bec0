"""Lifting: the converter's decompositions of Keras layers become the layer again.

Each matcher starts at the op that ends a pattern and walks back through producers. A pattern
lifts only when it matches whole: every tensor inside it is float32, unquantized, not a model
output and read by no op outside it, so nothing else needs the tensors that go. The lifted op
replaces the pattern's last op in place, keeps its index and outputs (verification maps the layer
to that tensor), reads the pattern's data input and its constants, and has the Keras class name as
opcode (its converter is in `ops/lifted.py`). Anything less keeps the faithful form.

- LayerNormalization: MEAN(x) -> SQUARED_DIFFERENCE(x, mean) -> MEAN -> ADD eps -> RSQRT
  [-> MUL gamma] = inv; x * inv + (-mean * inv [+ beta]) (NEG before or after the MUL; or
  beta - mean * inv), both MEANs over the same non-batch axes with keep_dims.
- SeparableConv2D: DEPTHWISE_CONV_2D without activation and with a zero (or no) bias, read only by
  a 1x1 stride-1 undilated ungrouped CONV_2D.

Conv1D and 1-D pooling, whose patterns span regions rather than chains, are in `lift_1d`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext
from tfl_rebuild.tflite.ir import Operator


@dataclass
class Graph:
    """Who produces and who reads each (resolved) tensor of the prepared ops."""

    ctx: ConvertContext
    ops: list[Operator]
    producer: dict[int, Operator] = field(default_factory=dict)
    readers: dict[int, list[Operator]] = field(default_factory=dict)
    outputs: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        r = self.ctx.resolve
        for op in self.ops:
            for o in op.outputs:
                if o >= 0:
                    self.producer[r(o)] = op
            for i in op.inputs:
                if i >= 0:
                    self.readers.setdefault(r(i), []).append(op)
        self.outputs = {r(t) for t in self.ctx.subgraph.outputs}

    def made_by(self, t: int, *opcodes: str) -> Operator | None:
        """The op producing `t` when it is one of `opcodes` with one output and no fused activation."""
        op = self.producer.get(self.ctx.resolve(t))
        if (
            op is None
            or op.opcode not in opcodes
            or len(op.outputs) != 1
            or op.options.get("fused_activation_function", "NONE") != "NONE"
        ):
            return None
        return op

    def same(self, a: int, b: int) -> bool:
        return self.ctx.resolve(a) == self.ctx.resolve(b)

    def is_float(self, t: int) -> bool:
        tensor = self.ctx.tensor(self.ctx.resolve(t))
        return tensor.dtype == "float32" and not tensor.quantized

    def scalar(self, t: int) -> float | None:
        if not self.ctx.is_const(t):
            return None
        v = np.asarray(self.ctx.const(t))
        return float(v.reshape(-1)[0]) if v.size == 1 else None

    def enclosed(self, chain: list[Operator]) -> bool:
        """Whether every tensor the chain computes, but its last op's, is float and read only inside it."""
        ids = {id(op) for op in chain}
        for op in chain[:-1]:
            for o in op.outputs:
                t = self.ctx.resolve(o)
                if t in self.outputs or not self.is_float(t):
                    return False
                if any(id(u) not in ids for u in self.readers.get(t, [])):
                    return False
        return all(self.is_float(o) for o in chain[-1].outputs)


Lifted = tuple[Operator, list[Operator]]  # the lifted op, and the ops it stands for


def lifted_op(
    end: Operator, layer: str, inputs: tuple[int, ...], options: dict, chain: list[Operator]
) -> Lifted:
    """The lifted op standing for `chain`, in the place of its last op `end`."""
    op = Operator(
        index=end.index,
        opcode=layer,
        version=1,
        inputs=inputs,
        outputs=end.outputs,
        options={**options, "lifted_from": [c.opcode for c in sorted(chain, key=lambda c: c.index)]},
    )
    return op, chain


def _operands(op: Operator) -> list[tuple[int, int]]:
    """The two inputs of a commutative binary op, in both orders."""
    a, b = op.inputs[:2]
    return [(a, b), (b, a)]


def _axes(g: Graph, mean: Operator) -> list[int] | None:
    if not mean.options.get("keep_dims") or len(mean.inputs) < 2 or not g.ctx.is_const(mean.inputs[1]):
        return None
    rank = g.ctx.rank(mean.inputs[0])
    return sorted({int(a) % rank for a in np.asarray(g.ctx.const(mean.inputs[1])).reshape(-1)})


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
    if (
        end.opcode != "ADD"
        or len(end.inputs) != 2
        or end.options.get("fused_activation_function", "NONE") != "NONE"
    ):
        return None
    for scaled_t, res_t in _operands(end):
        scaled = g.made_by(scaled_t, "MUL")
        if scaled is None:
            continue
        for x, inv_t in _operands(scaled):
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
            axes = _axes(g, mean)
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
        for r, c in _operands(mul):
            if g.made_by(r, "RSQRT") is not None and g.ctx.is_const(c):
                rsqrt, gamma, ops = g.made_by(r, "RSQRT"), c, [mul]
                break
        else:
            return None
    add = g.made_by(rsqrt.inputs[0], "ADD")
    if add is None:
        return None
    for v, e in _operands(add):
        eps = g.scalar(e)
        var = g.made_by(v, "MEAN")
        if eps is None or var is None or eps < 0:
            continue
        sqd = g.made_by(var.inputs[0], "SQUARED_DIFFERENCE")
        if sqd is None:
            continue
        for x, m in _operands(sqd):
            mean = g.made_by(m, "MEAN")
            if mean is None or not g.same(mean.inputs[0], x):
                continue
            axes = _axes(g, mean)
            if axes is None or axes != _axes(g, var):
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
            for a, b in _operands(mul):
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
        if mul is not None and any(g.same(a, m) and g.same(b, inv) for a, b in _operands(mul)):
            return [mul]
        return None

    found = neg_times_inv(t)
    if found is not None:
        return found, -1
    add = g.made_by(t, "ADD")
    if add is not None:
        for u, beta in _operands(add):
            found = neg_times_inv(u)
            if found is not None and g.ctx.is_const(beta):
                return [*found, add], beta
    sub = g.made_by(t, "SUB")
    if sub is not None and g.ctx.is_const(sub.inputs[0]):
        found = times_inv(sub.inputs[1])
        if found is not None:
            return [*found, sub], sub.inputs[0]
    return None


def _zero_bias(g: Graph, op: Operator, slot: int) -> bool:
    if len(op.inputs) <= slot or op.inputs[slot] < 0:
        return True
    return g.ctx.is_const(op.inputs[slot]) and not np.any(np.asarray(g.ctx.const(op.inputs[slot])))


def _separable(g: Graph, end: Operator) -> Lifted | None:
    if end.opcode != "CONV_2D" or not g.ctx.is_const(end.inputs[1]):
        return None
    dw = g.made_by(end.inputs[0], "DEPTHWISE_CONV_2D")
    o = end.options
    if (
        dw is None
        or not g.ctx.is_const(dw.inputs[1])
        or not _zero_bias(g, dw, 2)
        or tuple(g.ctx.shape(end.inputs[1])[1:3]) != (1, 1)
        or g.ctx.shape(end.inputs[1])[3] != g.ctx.shape(dw.outputs[0])[-1]  # groups=1
        or any(o.get(k, 1) != 1 for k in ("stride_h", "stride_w", "dilation_h_factor", "dilation_w_factor"))
        or not g.is_float(dw.inputs[0])
        or g.ctx.rank(dw.inputs[0]) != 4
        or not g.enclosed([dw, end])
    ):
        return None
    bias = end.inputs[2] if len(end.inputs) > 2 else -1
    options = {k: v for k, v in dw.options.items() if k != "fused_activation_function"}
    options["fused_activation_function"] = o.get("fused_activation_function", "NONE")
    return lifted_op(
        end, "SeparableConv2D", (dw.inputs[0], dw.inputs[1], end.inputs[1], bias), options, [dw, end]
    )


MATCHERS = (_layer_norm, _separable)


def lift(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    """Replace each whole match of a pattern by its lifted op (later matches see earlier results)."""
    for match in MATCHERS:
        g = Graph(ctx, ops)
        replaced: dict[int, Operator] = {}  # id of a pattern's last op -> the lifted op
        dropped: set[int] = set()
        for op in ops:
            if id(op) in dropped:
                continue
            found = match(g, op)
            if found is None:
                continue
            new, chain = found
            if any(id(c) in dropped or id(c) in replaced for c in chain):
                continue
            replaced[id(op)] = new
            dropped.update(id(c) for c in chain if c is not op)
        ops = [replaced.get(id(op), op) for op in ops if id(op) not in dropped]
    return ops

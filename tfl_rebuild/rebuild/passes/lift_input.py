"""Rescaling and Normalization: constant arithmetic on a model input becomes the preprocessing layer.

- Rescaling: MUL(x, scale) -> ADD(offset) (or SUB of it) on a model input x; a MUL alone only
  when its tensor's name says "rescaling" (`x * w` or `x + 1` alone is arithmetic, not a layer).
- Normalization: SUB(x, mean) -> MUL(1 / std) or DIV(std), on a model input x; the variance is
  std ** 2 (Keras divides by max(sqrt(variance), epsilon), and a std below epsilon stays faithful).

Each constant is a scalar or one value per channel (last axis), at most `MAX_VALUES` of them: they
are written at the call as literals. A scalar Rescaling before a convolution is often folded into
its weights by the converter; nothing is left to lift then.
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.lifted import short_float
from tfl_rebuild.rebuild.ops.registry import ConvertContext
from tfl_rebuild.rebuild.passes.lift import Graph, Lifted, lift, lifted_op
from tfl_rebuild.tflite.ir import Operator

MAX_VALUES = 16  # per-channel values written at the call
EPSILON = 1e-7  # keras.backend.epsilon(), Normalization's floor on the std


def _channels(g: Graph, x: int, c: int) -> np.ndarray | None:
    """Constant `c` as one float per channel of x (a scalar as one), when it only varies there."""
    if not g.ctx.is_const(c):
        return None
    v = np.asarray(g.ctx.const(c))
    shape = g.ctx.shape(x)
    if v.dtype.kind != "f" or not shape or v.ndim > len(shape) or any(d != 1 for d in v.shape[:-1]):
        return None
    flat = v.reshape(-1).astype(np.float32)
    if flat.size not in (1, shape[-1]) or flat.size > MAX_VALUES or not np.all(np.isfinite(flat)):
        return None
    return flat


def _literal(v: np.ndarray) -> float | list[float]:
    return short_float(v[0]) if v.size == 1 or np.all(v == v[0]) else [short_float(a) for a in v]


def _plain(op: Operator | None, *opcodes: str) -> bool:
    return (
        op is not None
        and op.opcode in opcodes
        and len(op.inputs) == 2
        and len(op.outputs) == 1
        and op.options.get("fused_activation_function", "NONE") == "NONE"
    )


def _on_input(g: Graph, op: Operator, first_only: bool = False) -> tuple[int, np.ndarray] | None:
    """(the model input, the constant per channel) of a binary op of a model input and a constant."""
    pairs = [(op.inputs[0], op.inputs[1])] if first_only else [op.inputs[:2], op.inputs[1::-1]]
    inputs = {g.ctx.resolve(t) for t in g.ctx.subgraph.inputs}
    for x, c in pairs:
        if g.ctx.resolve(x) in inputs and g.is_float(x):
            v = _channels(g, x, c)
            if v is not None:
                return x, v
    return None


def _shift(g: Graph, op: Operator, x: int) -> np.ndarray | None:
    """The offset of ADD(x, c) or SUB(x, c) (as -c)."""
    if _plain(op, "ADD"):
        for t, c in (op.inputs[:2], op.inputs[1::-1]):
            if g.same(t, x):
                return _channels(g, x, c)
    if _plain(op, "SUB") and g.same(op.inputs[0], x):
        v = _channels(g, x, op.inputs[1])
        return None if v is None else -v
    return None


def _only_reader(g: Graph, op: Operator) -> Operator | None:
    readers = g.readers.get(g.ctx.resolve(op.outputs[0]), [])
    return readers[0] if len(readers) == 1 and g.ctx.resolve(op.outputs[0]) not in g.outputs else None


def _rescaling(g: Graph, end: Operator) -> Lifted | None:
    """MUL(x, scale) [-> ADD / SUB offset] on a model input x (Normalization's SUB -> MUL were
    lifted before this runs)."""
    offset = None
    if _plain(end, "MUL"):
        found = _on_input(g, end)
        after = _only_reader(g, end)
        if found is None or (after is not None and _shift(g, after, end.outputs[0]) is not None):
            return None  # a MUL followed by an offset: the pattern ends at the ADD
        if "rescaling" not in g.ctx.tensor(g.ctx.resolve(end.outputs[0])).name.lower():
            return None  # a product alone is any arithmetic unless the names say Rescaling
        (x, scale), chain = found, [end]
    elif _plain(end, "ADD", "SUB"):
        mul = g.made_by(end.inputs[0], "MUL")
        if mul is None and end.opcode == "ADD":
            mul = g.made_by(end.inputs[1], "MUL")
        found = _on_input(g, mul) if _plain(mul, "MUL") else None
        if found is None:  # an offset alone is plain arithmetic, not a written Rescaling
            return None
        (x, scale), chain = found, [mul, end]
        offset = _shift(g, end, mul.outputs[0])
        if offset is None:
            return None
    else:
        return None
    if not g.enclosed(chain):
        return None
    options = {"scale": _literal(scale), "name_tensor": end.outputs[0]}
    if offset is not None:
        options["offset"] = _literal(offset)
    return lifted_op(end, "Rescaling", (x,), options, chain)


def _normalization(g: Graph, end: Operator) -> Lifted | None:
    if not _plain(end, "MUL", "DIV"):
        return None
    for s, c in [end.inputs[:2]] if end.opcode == "DIV" else [end.inputs[:2], end.inputs[1::-1]]:
        sub = g.made_by(s, "SUB")
        if not _plain(sub, "SUB"):
            continue
        found = _on_input(g, sub, first_only=True)
        if found is None:
            continue
        x, mean = found
        factor = _channels(g, x, c)
        if factor is None or not np.all(factor > 0):
            continue
        std = factor if end.opcode == "DIV" else 1.0 / factor.astype(np.float64)
        if np.any(std < EPSILON) or not g.enclosed([sub, end]):
            continue
        n = g.ctx.shape(x)[-1]
        options = {
            "mean": [short_float(m) for m in np.broadcast_to(mean, (n,))],
            "variance": [short_float(v) for v in np.broadcast_to(std**2, (n,))],
            "name_tensor": end.outputs[0],
        }
        return lifted_op(end, "Normalization", (x,), options, [sub, end])
    return None


def lift_input(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    """Every Normalization, then every Rescaling, on a model input as one lifted op."""
    return lift(ctx, ops, (_normalization, _rescaling))

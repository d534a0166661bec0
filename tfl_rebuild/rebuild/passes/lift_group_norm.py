"""GroupNormalization: the arithmetic Keras writes for it between two reshapes becomes the layer.

Keras 3 splits the channels into groups, RESHAPE [B, *S, C] -> [B, *S, G, C/G], normalizes over
the spatial axes and each group's channels, applies gamma and beta in the grouped shape and
reshapes back. The op sequence in between depends on scale / center (and on what the converter
folds), so the region is read by its numbers, as lift_rnn reads a loop body: every op between the
two reshapes must depend only on the grouped input and constants; its constants give epsilon (a
scalar added), gamma (multiplied) and beta (added), one channel each; and the region, run with
numpy on two probe inputs, must give Keras' GroupNormalization of them with those values.
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext
from tfl_rebuild.rebuild.ops.step_eval import apply
from tfl_rebuild.rebuild.passes.lift import Graph, Lifted, lift, lifted_op
from tfl_rebuild.tflite.ir import Operator

MAX_REGION = 32  # ops between the reshapes (Keras writes 10 to 13)
PROBE_TOL = 1e-4  # max |region - Keras formula| relative to max |region output|
PROBE_LIMIT = 1 << 22  # elements of a probe: a bigger layer stays faithful (its probes cost too much)


def _region(g: Graph, end: Operator) -> tuple[Operator, list[Operator]] | None:
    """(the splitting RESHAPE, the ops between it and `end`, in order) when they read nothing else."""
    ops: dict[int, Operator] = {}
    start, todo = None, [end.inputs[0]]
    while todo:
        t = g.ctx.resolve(todo.pop())
        if g.ctx.is_const(t):
            continue
        op = g.producer.get(t)
        if op is None:
            return None
        if op.opcode == "RESHAPE" and tuple(g.ctx.shape(op.inputs[0])) == tuple(g.ctx.shape(end.outputs[0])):
            if start is not None and start is not op:
                return None
            start = op
            continue
        if op.index not in ops:
            ops[op.index] = op
            if len(ops) > MAX_REGION:
                return None
            todo.extend(i for i in op.inputs if i >= 0)
    if start is None or not ops:
        return None
    return start, [ops[k] for k in sorted(ops)]


def _keras_group_norm(x: np.ndarray, groups: int, eps: float, gamma, beta) -> np.ndarray:
    shape = x.shape
    grouped = x.astype(np.float64).reshape(*shape[:-1], groups, shape[-1] // groups)
    axes = (*range(1, grouped.ndim - 2), grouped.ndim - 1)
    mean, var = grouped.mean(axes, keepdims=True), grouped.var(axes, keepdims=True)
    return ((grouped - mean) / np.sqrt(var + eps)).reshape(shape) * gamma + beta


def _run(
    g: Graph, start: Operator, region: list[Operator], end: Operator, x: np.ndarray
) -> np.ndarray | None:
    env = {g.ctx.resolve(start.outputs[0]): x.reshape(g.ctx.shape(start.outputs[0]))}
    for op in region:
        values = [
            None if i < 0 else (g.ctx.const(i) if g.ctx.is_const(i) else env.get(g.ctx.resolve(i)))
            for i in op.inputs
        ]
        outs = apply(op, values, tuple(g.ctx.shape(op.outputs[0])))
        if outs is None:
            return None
        env.update((g.ctx.resolve(o), v) for o, v in zip(op.outputs, outs))
    y = env.get(g.ctx.resolve(end.inputs[0]))
    return None if y is None else np.asarray(y, np.float64).reshape(x.shape)


def _group_norm(g: Graph, end: Operator) -> Lifted | None:
    if end.opcode != "RESHAPE" or not end.inputs or not g.is_float(end.outputs[0]):
        return None
    found = _region(g, end)
    if found is None:
        return None
    start, region = found
    x, shape, grouped = (
        start.inputs[0],
        tuple(g.ctx.shape(end.outputs[0])),
        tuple(g.ctx.shape(start.outputs[0])),
    )
    if (
        len(shape) < 3
        or int(np.prod(shape)) > PROBE_LIMIT
        or grouped[:-2] != shape[:-1]
        or grouped[-2] * grouped[-1] != shape[-1]
        or grouped[-2] < 1
    ):
        return None
    if not any(op.opcode == "MEAN" for op in region) or not g.enclosed([start, *region, end]):
        return None
    channels, groups = shape[-1], grouped[-2]
    scalars, per_channel = [], {"MUL": [], "ADD": []}
    for op in region:
        for i in op.inputs:
            if i < 0 or not g.ctx.is_const(i) or np.asarray(g.ctx.const(i)).dtype.kind != "f":
                continue
            v = np.asarray(g.ctx.const(i))
            if v.size == 1 and op.opcode == "ADD":
                scalars.append(float(v.reshape(-1)[0]))
            elif v.size == channels and op.opcode in per_channel:
                per_channel[op.opcode].append(i)
    if len(scalars) != 1 or len(per_channel["MUL"]) > 1 or len(per_channel["ADD"]) > 1:
        return None
    gamma_t, beta_t = (per_channel[k][0] if per_channel[k] else -1 for k in ("MUL", "ADD"))
    gamma = np.ones(channels) if gamma_t < 0 else np.asarray(g.ctx.const(gamma_t), np.float64).reshape(-1)
    beta = np.zeros(channels) if beta_t < 0 else np.asarray(g.ctx.const(beta_t), np.float64).reshape(-1)
    rng = np.random.default_rng(0)
    for probe in (rng.normal(0.0, 1.0, shape), rng.uniform(-3.0, 5.0, shape)):
        probe = probe.astype(np.float32)
        got = _run(g, start, region, end, probe)
        want = _keras_group_norm(probe, groups, scalars[0], gamma, beta)
        if got is None or np.max(np.abs(got - want)) > PROBE_TOL * max(np.max(np.abs(want)), 1.0):
            return None
    options = {"groups": groups, "epsilon": scalars[0], "name_tensor": start.outputs[0]}
    return lifted_op(end, "GroupNormalization", (x, gamma_t, beta_t), options, [start, *region, end])


def lift_group_norm(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    """Every GroupNormalization region, as one lifted op."""
    return lift(ctx, ops, (_group_norm,))

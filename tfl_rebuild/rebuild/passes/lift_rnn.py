"""LSTM, GRU and SimpleRNN: the WHILE loop Keras 3 recurrent layers convert to becomes the layer.

The main graph side is matched by shape: the loop variables start as counters at 0, a zero state or
two [B, U], an output list [1 or T, B, U] and the time-major input [T, B, F], made from the layer's
[B, T, F] input by RESHAPE / TRANSPOSE (and REVERSE_V2 along time: go_backwards); the list is read
back by RESHAPE / TRANSPOSE / STRIDED_SLICE steps as [B, U] (the last step) or [B, T, U] (every
step, return_sequences). Moves of elements are checked on indices, as in `lift_attention`.

The cell is matched by its numbers. Its weights are read from the body (the matmul whose input
comes from the sequence is the kernel, the one from the state the recurrent kernel, Keras' gate
order as Keras wrote it; the constant vectors of n * units the biases), then the body runs on
probe values (`ops.step_eval`) and must give what the Keras cell computes from those weights at
three steps: the states, the counters + 1, the list with the step written; the cond must stop at
T. LSTM, GRU (reset_after true and false) and SimpleRNN (tanh or relu) with Keras' default
activations lift; anything else, quantized weights included, keeps the faithful WhileLoop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tfl_rebuild.rebuild.ops import step_eval
from tfl_rebuild.rebuild.ops.registry import ConvertContext, Trait, has_trait
from tfl_rebuild.rebuild.passes.lift import Graph, Lifted, lift, lifted_op, plain
from tfl_rebuild.tflite.ir import Operator, Subgraph

F32 = np.float32
MAX_LAYOUT_OPS = 3  # RESHAPE / TRANSPOSE / REVERSE_V2 / STRIDED_SLICE steps around the loop
TOLERANCE = 1e-4  # of the probe's magnitude: float32 rounding, not a wrong gate (~0.1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


ACTIVATION = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0)}


@dataclass
class Cell:
    """A Keras recurrent layer's class, constructor arguments, weights, and its step in numpy."""

    layer: str
    kwargs: dict
    weights: tuple[tuple[str, np.ndarray], ...]
    step: Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]]


def _lstm(k: np.ndarray, rk: np.ndarray, b: np.ndarray) -> Cell:
    def step(x, states):
        h, c = states
        i, f, g, o = np.split(x @ k + h @ rk + b, 4, axis=-1)
        c2 = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return [_sigmoid(o) * np.tanh(c2), c2]

    weights = (("kernel", k), ("recurrent_kernel", rk), ("bias", b))
    return Cell("LSTM", {"units": rk.shape[0]}, weights, step)


def _gru(k: np.ndarray, rk: np.ndarray, b: np.ndarray, reset_after: bool) -> Cell:
    def step(x, states):
        h = states[0]
        xz, xr, xh = np.split(x @ k + (b[0] if reset_after else b), 3, axis=-1)
        if reset_after:
            hz, hr, hh = np.split(h @ rk + b[1], 3, axis=-1)
            z, r = _sigmoid(xz + hz), _sigmoid(xr + hr)
            cand = np.tanh(xh + r * hh)
        else:
            rz, rr, rh = np.split(rk, 3, axis=-1)
            z, r = _sigmoid(xz + h @ rz), _sigmoid(xr + h @ rr)
            cand = np.tanh(xh + (r * h) @ rh)
        return [z * h + (1.0 - z) * cand]

    weights = (("kernel", k), ("recurrent_kernel", rk), ("bias", b))
    kwargs = {"units": rk.shape[0]} if reset_after else {"units": rk.shape[0], "reset_after": False}
    return Cell("GRU", kwargs, weights, step)


def _simple_rnn(k: np.ndarray, rk: np.ndarray, b: np.ndarray, activation: str) -> Cell:
    def step(x, states):
        return [ACTIVATION[activation](x @ k + states[0] @ rk + b)]

    kwargs = {"units": rk.shape[0], **({} if activation == "tanh" else {"activation": activation})}
    return Cell("SimpleRNN", kwargs, (("kernel", k), ("recurrent_kernel", rk), ("bias", b)), step)


@dataclass
class Loop:
    """A WHILE's loop variables by role (slots), and its body's constants."""

    op: Operator
    cond: Subgraph
    body: Subgraph
    consts: dict[int, np.ndarray]
    counters: list[int]
    states: list[int]
    out_list: int
    seq: int
    invariants: dict[int, np.ndarray]  # slot -> a constant the body passes on unchanged (fp16 biases)


def _loop(g: Graph, op: Operator) -> Loop | None:
    """A WHILE's loop variables sorted into the roles of a recurrent layer's loop, or None."""
    if op.opcode != "WHILE" or len(op.inputs) != len(op.outputs):
        return None
    subs = g.ctx.subgraphs
    ci, bi = op.options.get("cond_subgraph_index"), op.options.get("body_subgraph_index")
    if not all(isinstance(i, int) and 0 < i < len(subs) for i in (ci, bi)):
        return None
    body, cond = subs[bi], subs[ci]
    if len(body.inputs) != len(op.inputs) or len(body.outputs) != len(op.inputs):
        return None
    if len(cond.inputs) != len(op.inputs):
        return None
    if any(tuple(g.ctx.shape(o)) != tuple(g.ctx.shape(i)) for i, o in zip(op.inputs, op.outputs)):
        return None  # a loop variable changing shape is not a recurrent layer's
    counters, states, lists, seqs = [], [], [], []
    invariants: dict[int, np.ndarray] = {}
    for slot, t in enumerate(op.inputs):
        if t < 0:
            return None
        if not g.ctx.is_const(t):
            seqs.append(slot)
            continue
        v = np.asarray(g.ctx.const(t))
        if v.dtype.kind in "iu" and v.ndim == 0 and int(v) == 0:
            counters.append(slot)
        elif v.dtype.kind == "f" and v.ndim == 2 and not np.any(v):
            states.append(slot)
        elif v.dtype.kind == "f" and v.ndim == 3:
            lists.append(slot)
        elif body.outputs[slot] == body.inputs[slot]:
            invariants[slot] = v
        else:
            return None
    if len(seqs) != 1 or len(lists) != 1 or not counters or len(states) not in (1, 2):
        return None
    if g.ctx.rank(op.inputs[seqs[0]]) != 3 or not g.is_float(op.inputs[seqs[0]]):
        return None
    consts = step_eval.constants(body)
    if consts is None or step_eval.constants(cond) is None:
        return None
    consts.update({body.inputs[slot]: v for slot, v in invariants.items()})
    return Loop(op, cond, body, consts, counters, states, lists[0], seqs[0], invariants)


def _dependence(loop: Loop) -> dict[int, set[int]]:
    """The loop-variable slots each body tensor depends on."""
    deps = {t: {slot} for slot, t in enumerate(loop.body.inputs)}
    for op in loop.body.operators:
        d = set().union(*(deps.get(i, set()) for i in op.inputs if i >= 0))
        for o in op.outputs:
            deps[o] = d
    return deps


def _const(loop: Loop, producers: dict[int, Operator], t: int) -> np.ndarray | None:
    """A body constant, through a DEQUANTIZE of an fp16 constant."""
    if t in loop.consts:
        return loop.consts[t]
    op = producers.get(t)
    if op is not None and op.opcode in step_eval.DEQUANTIZE_OPS and op.inputs and op.inputs[0] in loop.consts:
        return loop.consts[op.inputs[0]].astype(F32)
    return None


def _cells(loop: Loop, units: int) -> list[Cell]:
    """The Keras cells the body's weights could be, to be told apart by running it."""
    deps = _dependence(loop)
    producers = {o: op for op in loop.body.operators for o in op.outputs}
    h_slots = set(loop.states)
    kernels, recurrents, b_in, b_rec, b_add = [], [], [], [], []
    for op in loop.body.operators:
        if op.opcode in step_eval.MATMUL_OPS and len(op.inputs) >= 2:
            w = _const(loop, producers, op.inputs[1])
            if w is None or w.ndim != 2:
                continue
            bias = _const(loop, producers, op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            src = deps.get(op.inputs[0], set())
            if loop.seq in src and not src & h_slots:
                kernels.append(w.T)
                b_in += [bias] if bias is not None else []
            elif src & h_slots:  # GRU(reset_after=False): (r * h) @ rk_h, r read from x too
                recurrents.append(w.T)
                b_rec += [bias] if bias is not None else []
            else:
                return []
        elif has_trait(op, Trait.ELEMENTWISE) and op.opcode not in step_eval.DEQUANTIZE_OPS:
            for i in op.inputs:  # vectors the width of the gates (the running check rules out others)
                v = _const(loop, producers, i) if i >= 0 else None
                if v is not None and v.dtype.kind == "f" and v.size > 1 and v.size == max(v.shape):
                    b_add.append(v.reshape(-1))
    if not kernels or not recurrents:
        return []
    try:
        k = np.concatenate(kernels, axis=1).astype(F32)
        rk = np.concatenate(recurrents, axis=1).astype(F32)
    except ValueError:
        return []
    n = k.shape[1] // units
    if k.shape[1] != n * units or rk.shape != (units, n * units):
        return []
    b_add = [v for v in b_add if v.size == n * units]
    vectors = [np.asarray(v, F32).reshape(-1) for v in (*b_in, *b_rec, *b_add)]
    if any(v.size != n * units for v in vectors):
        return []
    total = np.sum(vectors, axis=0).astype(F32) if vectors else np.zeros(n * units, F32)
    if n == 4 and len(loop.states) == 2:
        return [_lstm(k, rk, total)]
    if n == 1 and len(loop.states) == 1:
        return [_simple_rnn(k, rk, total, a) for a in ACTIVATION]
    if n == 3 and len(loop.states) == 1:
        split = []
        for ins, recs in (((*b_in, *b_add), b_rec), (b_in, (*b_rec, *b_add))):
            pair = [np.sum(vs, axis=0) if vs else np.zeros(n * units) for vs in (ins, recs)]
            split.append(_gru(k, rk, np.stack(pair).astype(F32), True))
        return [*split, _gru(k, rk, total, False)]
    return []


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return False
    return float(np.max(np.abs(got - want), initial=0.0)) <= TOLERANCE * (1.0 + float(np.max(np.abs(want))))


def _runs_as(loop: Loop, cell: Cell, state_order: list[int], shapes: dict[str, tuple]) -> bool:
    """Whether the body computes `cell` at three steps of a probe, and the cond stops at T."""
    steps, batch, _ = shapes["seq"]
    rng = np.random.default_rng(0)
    values = [None] * len(loop.body.inputs)
    values[loop.seq] = rng.standard_normal(shapes["seq"]).astype(F32)
    values[loop.out_list] = rng.standard_normal(shapes["list"]).astype(F32)
    for slot, v in loop.invariants.items():
        values[slot] = v
    for slot in loop.states:
        values[slot] = (0.5 * rng.standard_normal(shapes["state"])).astype(F32)
    dtypes = {slot: np.dtype(loop.body.tensors[loop.body.inputs[slot]].dtype) for slot in loop.counters}
    for t in sorted({0, steps // 2, steps - 1}):
        for slot in loop.counters:
            values[slot] = np.asarray(t, dtypes[slot])
        outs = step_eval.run(loop.body, list(values), loop.consts)
        if outs is None:
            return False
        with np.errstate(all="ignore"):
            want = cell.step(values[loop.seq][t].astype(np.float64), [values[s] for s in state_order])
        if not all(_close(outs[s], w) for s, w in zip(state_order, want)):
            return False
        if any(np.asarray(outs[s]).reshape(-1).tolist() != [t + 1] for s in loop.counters):
            return False
        if not np.array_equal(outs[loop.seq], values[loop.seq]):
            return False
        written = np.array(values[loop.out_list], np.float64)
        if written.shape[0] == 1:
            written = want[0].reshape(1, *written.shape[1:])
        else:
            written[t] = want[0].reshape(written.shape[1:])
        if not _close(outs[loop.out_list], written):
            return False
    cond_consts = step_eval.constants(loop.cond) or {}
    for t, going in ((0, True), (steps - 1, True), (steps, False)):
        for slot in loop.counters:
            values[slot] = np.asarray(t, dtypes[slot])
        outs = step_eval.run(loop.cond, list(values), cond_consts)
        if outs is None or len(outs) != 1 or np.asarray(outs[0]).size != 1 or bool(outs[0]) != going:
            return False
    return batch > 0


def _moves(g: Graph, ops: list[Operator], src: np.ndarray) -> np.ndarray | None:
    """The indices `src` moved by the layout ops, in order (None: an op it cannot run)."""
    idx = src
    for op in ops:
        values = [idx, *(g.ctx.const(i) if g.ctx.is_const(i) else None for i in op.inputs[1:])]
        outs = step_eval.apply(op, values, tuple(g.ctx.shape(op.outputs[0])))
        if outs is None:
            return None
        idx = outs[0]
    return idx


def _input_side(g: Graph, loop: Loop) -> tuple[int, bool, list[Operator]] | None:
    """(the layer's [B, T, F] input, go_backwards, the layout ops only the loop reads)."""
    seq = loop.op.inputs[loop.seq]
    steps, batch, feats = g.ctx.shape(seq)
    ops: list[Operator] = []
    t = seq
    while len(ops) < MAX_LAYOUT_OPS:
        op = g.producer.get(g.ctx.resolve(t))
        if op is None or len(op.outputs) != 1 or not op.inputs:
            return None
        if not has_trait(op, Trait.SHAPE_ONLY) and op.opcode not in step_eval.LAYOUT_OPS:
            return None
        ops.insert(0, op)
        t = op.inputs[0]
        if tuple(g.ctx.shape(t)) != (batch, steps, feats):
            continue
        idx = np.arange(batch * steps * feats).reshape(batch, steps, feats)
        moved = _moves(g, ops, idx)
        if moved is None or moved.shape != (steps, batch, feats):
            continue
        forward = idx.transpose(1, 0, 2)
        for backwards, want in ((False, forward), (True, forward[::-1])):
            if np.array_equal(moved, want):
                owned: list[Operator] = []
                for o in reversed(ops):  # claim ops from the loop back while only the loop reads them
                    readers = g.readers.get(g.ctx.resolve(o.outputs[0]), [])
                    if any(r is not loop.op and all(r is not w for w in owned) for r in readers):
                        break
                    owned.append(o)
                return t, backwards, owned[::-1]
    return None


def _output_side(g: Graph, loop: Loop) -> tuple[list[Operator], bool, bool] | None:
    """(the ops reading the list back as [B, U] or [B, T, U], return_sequences, the steps put in
    reverse order on the way (a Bidirectional's backward layer))."""
    t = loop.op.outputs[loop.out_list]
    length, batch, units = g.ctx.shape(t)
    idx = np.arange(length * batch * units).reshape(length, batch, units)
    wants = [(idx[-1], False)] if length == 1 else [(idx.transpose(1, 0, 2), False)]
    if length > 1:
        wants.append((idx[::-1].transpose(1, 0, 2), True))
    ops: list[Operator] = []
    while len(ops) < MAX_LAYOUT_OPS:
        readers = g.readers.get(g.ctx.resolve(t), [])
        if len(readers) != 1 or g.ctx.resolve(t) in g.outputs:
            return None
        op = readers[0]
        if len(op.outputs) != 1 or g.ctx.resolve(op.inputs[0]) != g.ctx.resolve(t):
            return None
        if not has_trait(op, Trait.SHAPE_ONLY) and op.opcode not in step_eval.LAYOUT_OPS:
            return None
        ops.append(op)
        moved = _moves(g, ops, idx)
        if moved is None:
            return None
        for want, flipped in wants:
            if moved.shape == want.shape and np.array_equal(moved, want):
                return ops, length > 1, flipped
        t = op.outputs[0]
    return None


def _cell(g: Graph, loop: Loop) -> Cell | None:
    """The Keras cell the loop's body computes, or None."""
    seq_shape = tuple(g.ctx.shape(loop.op.inputs[loop.seq]))
    list_shape = tuple(g.ctx.shape(loop.op.inputs[loop.out_list]))
    state_shapes = {tuple(g.ctx.shape(loop.op.inputs[s])) for s in loop.states}
    steps, batch, _ = seq_shape
    if len(state_shapes) != 1 or list_shape[0] not in (1, steps) or min(seq_shape) < 1:
        return None
    (state_shape,) = state_shapes
    if state_shape[0] != batch or list_shape[1:] != state_shape:
        return None
    shapes = {"seq": seq_shape, "list": list_shape, "state": state_shape}
    orders = [loop.states, loop.states[::-1]] if len(loop.states) == 2 else [loop.states]
    for cell in _cells(loop, state_shape[1]):
        if any(_runs_as(loop, cell, o, shapes) for o in orders):
            return cell
    return None


MAX_STACK = 16  # recurrent layers feeding each other's loops time-major


def _stack(g: Graph, loop: Loop, depth: int = 0) -> tuple[int, list[Operator], list[dict]] | None:
    """(the first layer's [B, T, F] input, the ops before this loop, the layers first to last):
    this loop's layer, after the layers whose whole output list its sequence is (stacked
    return_sequences layers, which the converter joins time-major)."""
    cell = _cell(g, loop)
    if cell is None or depth > MAX_STACK:
        return None
    layer = {"layer": cell.layer, "kwargs": dict(cell.kwargs), "weights": cell.weights}
    layer["name_tensor"] = loop.op.outputs[loop.out_list]
    inside = _input_side(g, loop)
    if inside is not None:
        x, backwards, in_ops = inside
        if backwards:
            layer["kwargs"]["go_backwards"] = True
        return x, in_ops, [layer]
    seq = g.ctx.resolve(loop.op.inputs[loop.seq])
    before = g.producer.get(seq)
    prev = _loop(g, before) if before is not None else None
    if (
        prev is None
        or g.ctx.resolve(prev.op.outputs[prev.out_list]) != seq
        or g.ctx.shape(seq)[0] != g.ctx.shape(prev.op.inputs[prev.seq])[0]
        or g.ctx.shape(seq)[0] < 2
        or seq in g.outputs
        or any(r is not loop.op for r in g.readers.get(seq, []))
    ):
        return None
    found = _stack(g, prev, depth + 1)
    if found is None:
        return None
    x, ops, layers = found
    layers[-1]["kwargs"]["return_sequences"] = True
    return x, [*ops, prev.op], [*layers, layer]


def _recurrent(g: Graph, end: Operator) -> Lifted | None:
    loop = _loop(g, end)
    if loop is None:
        return None
    stack = _stack(g, loop)
    outside = _output_side(g, loop)
    if stack is None or outside is None:
        return None
    x, in_ops, layers = stack
    out_ops, sequences, flipped = outside
    chain = [*in_ops, end, *out_ops]
    if not g.is_float(x) or not g.enclosed(chain, any_dtype=True):
        return None
    if sequences:
        layers[-1]["kwargs"]["return_sequences"] = True
    options = {"layers": layers, "flipped": flipped, "name_tensor": layers[-1]["name_tensor"]}
    return lifted_op(out_ops[-1], "Recurrent", (x,), options, chain)


def _bidirectional(g: Graph, end: Operator) -> Lifted | None:
    """CONCATENATION on the last axis of a forward and a go_backwards lifted layer of one class on
    one input (the backward one's steps put back in input order when it returns sequences)."""
    if (
        not plain(end, *step_eval.CONCAT_OPS)
        or len(end.inputs) != 2
        or int(end.options.get("axis", 0)) % max(g.ctx.rank(end.outputs[0]), 1)
        != g.ctx.rank(end.outputs[0]) - 1
    ):
        return None
    fw, bw = (g.producer.get(g.ctx.resolve(t)) for t in end.inputs)
    flip = bw if bw is not None and bw.opcode in step_eval.REVERSE_OPS else None
    if flip is not None:  # the backward steps put back in input order after the layer
        axes = (
            g.ctx.const(flip.inputs[1]) if len(flip.inputs) > 1 and g.ctx.is_const(flip.inputs[1]) else None
        )
        if axes is None or np.asarray(axes).reshape(-1).tolist() not in ([1], [-2]):
            return None
        bw = g.producer.get(g.ctx.resolve(flip.inputs[0]))
    if any(op is None or op.opcode != "Recurrent" or len(op.options["layers"]) != 1 for op in (fw, bw)):
        return None
    (f,), (b,) = fw.options["layers"], bw.options["layers"]
    sequences = bool(f["kwargs"].get("return_sequences"))
    chain = [fw, bw, *([flip] if flip is not None else []), end]
    if (
        not g.same(fw.inputs[0], bw.inputs[0])
        or f["layer"] != b["layer"]
        or not b["kwargs"].get("go_backwards")
        or {k: v for k, v in b["kwargs"].items() if k != "go_backwards"} != f["kwargs"]
        or fw.options["flipped"]
        or (bw.options["flipped"] or flip is not None) != sequences
        or (bw.options["flipped"] and flip is not None)
        or not g.enclosed(chain)
    ):
        return None
    options = {"forward": f, "backward": b, "name_tensor": end.outputs[0]}
    return lifted_op(end, "Bidirectional", (fw.inputs[0],), options, chain)


def lift_rnn(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    """Every recurrent layer's WHILE loop whose body computes a Keras cell, as one lifted op (a stack
    of them as one); then a forward and a backward one concatenated, as one Bidirectional."""
    return lift(ctx, ops, (_recurrent, _bidirectional))

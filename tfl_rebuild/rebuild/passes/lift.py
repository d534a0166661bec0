"""Lifting: the converter's decompositions of Keras layers become the layer again.

Each matcher starts at the op that ends a pattern and walks back through producers. A pattern
lifts only when it matches whole: every tensor inside it is float32, unquantized, not a model
output and read by no op outside it, so nothing else needs the tensors that go. The lifted op
replaces the pattern's last op in place, keeps its index and outputs (verification maps the layer
to that tensor), reads the pattern's data input and its constants, and has the Keras class name as
opcode (its converter is in `ops/lifted.py`). Anything less keeps the faithful form.

- SeparableConv2D: DEPTHWISE_CONV_2D without activation and with a zero (or no) bias, read only by
  a 1x1 stride-1 undilated ungrouped CONV_2D.
- Dense on rank >= 3: RESHAPE x [..., C] -> [rows, C], FULLY_CONNECTED, RESHAPE back to
  [..., units] (a free-batch export of Keras' Dense on a sequence) is the FULLY_CONNECTED with
  keep_num_dims on x.
- Embedding: GATHER of a constant float [N, D] table along axis 0 by integer ids, after Keras'
  wrap of negative ids SELECT(LESS(ids, 0), ADD(ids, N), ids) or without it.
- A layer's bias: ADD of a float constant along the last axis after a layer with no or a zero bias
  (registry bias_input: Dense, Conv2D, DepthwiseConv2D, lifted Conv1D / SeparableConv2D), its
  fused activation going along.
- Softmax(axis=k): TRANSPOSE(SOFTMAX(TRANSPOSE(x, p)), p inverted) with p moving axis k >= 1 last
  (TFLite's SOFTMAX works along the last axis: Keras' Softmax(axis=1) is written so).
- activation=: an activation op Keras names (relu, sigmoid, tanh, exact gelu, softmax, elu, hard_silu)
  reading the only output of an unfused layer taking activation= (trait keras-activation: Dense,
  convolutions, lifted Conv1D / SeparableConv2D) moves into that layer (option keras_activation),
  unless the tensor names put the activation under a scope of its own (a separate Activation layer).

Conv1D and 1-D pooling, whose patterns span regions rather than chains, are in `lift_1d`;
LayerNormalization in `lift_layer_norm`, MultiHeadAttention in `lift_attention`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from tfl_rebuild.rebuild.ops.activation import KERAS_ACTIVATION_OPS
from tfl_rebuild.rebuild.ops.registry import (
    MISFIT,
    ConvertContext,
    Trait,
    bias_input,
    has_trait,
    hybrid_input,
)
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
        return op if op is not None and plain(op, *opcodes) else None

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

    def hybrid(self, op: Operator) -> bool:
        """Whether op is a hybrid (dynamic-range) kernel: int8 weights, its input quantized at run time.
        Verification reproduces that rounding on the op's input tensor, which a lifted layer may no
        longer have as its input: chains with one are not lifted (an activation= alone excepted)."""
        slot = hybrid_input(op)
        return slot is not None and any(
            k != slot and i >= 0 and self.ctx.tensor(i).dtype == "int8" for k, i in enumerate(op.inputs)
        )

    def enclosed(self, chain: list[Operator], any_dtype: bool = False, hybrid_ok: bool = False) -> bool:
        """Whether every tensor the chain computes, but its last op's, is read only inside it, all
        of them are float (unquantized, of any type with `any_dtype`), and (unless `hybrid_ok`) no op
        in it is a hybrid kernel."""
        ids = {id(op) for op in chain}
        if not hybrid_ok and any(self.hybrid(op) for op in chain):
            return False

        def ok(t: int) -> bool:
            tensor = self.ctx.tensor(t)
            return not tensor.quantized if any_dtype else self.is_float(t)

        for op in chain[:-1]:
            for o in op.outputs:
                t = self.ctx.resolve(o)
                if t in self.outputs or not ok(t):
                    return False
                if any(id(u) not in ids for u in self.readers.get(t, [])):
                    return False
        return all(ok(self.ctx.resolve(o)) for o in chain[-1].outputs)


Lifted = tuple[Operator, list[Operator]]  # the lifted op, and the ops it stands for


def lifted_op(
    end: Operator, layer: str, inputs: tuple[int, ...], options: dict, chain: list[Operator]
) -> Lifted:
    """The lifted op standing for `chain`, in the place of its last op `end`; named (codegen) after
    the first op's tensor unless `options` says which: the last one is often a model output."""
    first = min(chain, key=lambda c: c.index)
    if first.outputs and first.outputs[0] >= 0:
        options = {"name_tensor": first.outputs[0], **options}
    op = Operator(
        index=end.index,
        opcode=layer,
        version=1,
        inputs=inputs,
        outputs=end.outputs,
        options={**options, "lifted_from": [c.opcode for c in sorted(chain, key=lambda c: c.index)]},
    )
    return op, chain


def plain(op: Operator, *opcodes: str) -> bool:
    """`op` is one of `opcodes`, with one output and no fused activation."""
    return (
        op.opcode in opcodes
        and len(op.outputs) == 1
        and op.options.get("fused_activation_function", "NONE") == "NONE"
    )


def operands(op: Operator) -> list[tuple[int, int]]:
    """The two inputs of a commutative binary op, in both orders."""
    a, b = op.inputs[:2]
    return [(a, b), (b, a)]


def keep_dims_axes(g: Graph, mean: Operator) -> list[int] | None:
    if not mean.options.get("keep_dims") or len(mean.inputs) < 2 or not g.ctx.is_const(mean.inputs[1]):
        return None
    rank = g.ctx.rank(mean.inputs[0])
    return sorted({int(a) % rank for a in np.asarray(g.ctx.const(mean.inputs[1])).reshape(-1)})


def per_channel(g: Graph, t: int, n: int, rank: int) -> bool:
    """Whether `t` is a float constant along the last axis of a rank-`rank` result ([n] or
    [1, ..., 1, n]): a bias, or a folded batch norm's scale or shift."""
    if not g.ctx.is_const(t):
        return False
    v = np.asarray(g.ctx.const(t))
    return v.dtype.kind == "f" and v.ndim <= rank and v.shape[-1:] == (n,) and v.size == n


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


def _perm(g: Graph, op: Operator) -> list[int] | None:
    if len(op.inputs) < 2 or not g.ctx.is_const(op.inputs[1]):
        return None
    perm = [int(v) for v in np.asarray(g.ctx.const(op.inputs[1])).reshape(-1)]
    return perm if sorted(perm) == list(range(len(perm))) else None


def _softmax_axis(g: Graph, end: Operator) -> Lifted | None:
    """TRANSPOSE(SOFTMAX(TRANSPOSE(x, p)), q) with q undoing p: a softmax along x's axis p[-1]."""
    if end.opcode != "TRANSPOSE":
        return None
    softmax = g.made_by(end.inputs[0], "SOFTMAX")
    if softmax is None or _keras_activation(softmax) is None:
        return None
    first = g.made_by(softmax.inputs[0], "TRANSPOSE")
    p, q = (_perm(g, first) if first else None), _perm(g, end)
    if (
        p is None
        or q is None
        or len(p) != len(q)
        or [p[i] for i in q] != list(range(len(p)))
        or p[-1] == 0  # along the batch axis: no Keras layer means that
        or not g.is_float(first.inputs[0])
        or not g.enclosed([first, softmax, end])
    ):
        return None
    options = {**softmax.options, "axis": p[-1], "name_tensor": softmax.outputs[0]}
    new = dataclasses.replace(softmax, inputs=(first.inputs[0],), outputs=end.outputs, options=options)
    return new, [first, softmax, end]


def _activation(g: Graph, end: Operator) -> Lifted | None:
    """An activation op by Keras name read from the only output of a layer taking activation=."""
    name = _keras_activation(end)
    if name is None:
        return None
    layer = g.producer.get(g.ctx.resolve(end.inputs[0]))
    if (
        layer is None
        or not has_trait(layer, Trait.KERAS_ACTIVATION)
        or len(layer.outputs) != 1
        or layer.options.get("fused_activation_function", "NONE") != "NONE"
        or layer.options.get("keras_activation")
        or (layer.opcode == "FULLY_CONNECTED" and not g.ctx.is_const(layer.inputs[1]))
        or not _one_layer(g, layer.outputs[0], end.outputs[0])
        or not g.enclosed([layer, end], hybrid_ok=True)
    ):
        return None
    options = {**layer.options, "keras_activation": name, "name_tensor": layer.outputs[0]}
    return dataclasses.replace(layer, outputs=end.outputs, options=options), [layer, end]


# Scopes TensorFlow opens inside a layer ('conv1d/convolution/BatchToSpaceND' is the conv1d's output).
TF_INNER_SCOPES = frozenset({"convolution", "Tensordot"})


def _scope(g: Graph, t: int) -> str | None:
    """The name scope of tensor t ("model/dense_1" of "model/dense_1/MatMul"), None without one."""
    name = g.ctx.tensor(t).name.split(";")[0]
    return name.rsplit("/", 1)[0] if "/" in name else None


def _one_layer(g: Graph, layer_out: int, act_out: int) -> bool:
    """Whether the names say the activation was part of the layer (Dense(activation="gelu") puts
    ".../dense/Gelu/..." under the dense scope) rather than a layer of its own (".../activation/...").
    A name without a scope (a model output's "Identity") says nothing, and the layers stay apart: the
    fixtures' Dense + Softmax heads were written as two layers."""
    act, layer = _scope(g, act_out), _scope(g, layer_out)
    if act is not None and layer is not None and layer.startswith(act + "/"):  # the layer's inner scope
        layer = act if layer[len(act) + 1 :].split("/")[0] in TF_INNER_SCOPES else layer
    return act is not None and layer is not None and (act == layer or act.startswith(layer + "/"))


def _embedding(g: Graph, end: Operator) -> Lifted | None:
    """GATHER of a constant [N, D] float table along axis 0 by ids, with Keras' wrap of negative
    ids (SELECT(LESS(ids, 0), ADD(ids, N), ids)) or without."""
    if end.opcode != "GATHER" or len(end.inputs) != 2 or end.options.get("batch_dims", 0):
        return None
    table, ids = end.inputs
    if (
        int(end.options.get("axis", 0)) != 0
        or not g.ctx.is_const(table)
        or g.ctx.is_const(ids)
        or np.ndim(g.ctx.const(table)) != 2
        or g.ctx.tensor(g.ctx.resolve(table)).quantized
        or np.asarray(g.ctx.const(table)).dtype.kind != "f"
        or not g.is_float(end.outputs[0])
    ):
        return None
    chain = [end]
    select = g.made_by(ids, "SELECT", "SELECT_V2")
    if select is not None and len(select.inputs) == 3:
        cond, wrapped, raw = select.inputs
        less, add = g.made_by(cond, "LESS"), g.made_by(wrapped, "ADD")
        n = np.shape(g.ctx.const(table))[0]
        if (
            less is not None
            and add is not None
            and g.same(less.inputs[0], raw)
            and g.scalar(less.inputs[1]) == 0
            and any(g.same(a, raw) and g.scalar(b) == n for a, b in operands(add))
            and g.enclosed([less, add, select, end], any_dtype=True)
        ):
            chain, ids = [less, add, select, end], raw
    if g.ctx.tensor(g.ctx.resolve(ids)).dtype not in ("int32", "int64"):
        return None
    return lifted_op(end, "Embedding", (ids, table), {}, chain)


def _keras_activation(op: Operator | None) -> str | None:
    """The Keras name of an activation op a layer's activation= computes the same (else None)."""
    if (
        op is None
        or len(op.inputs) != 1
        or (op.opcode == "GELU" and op.options.get("approximate"))
        or (op.opcode == "SOFTMAX" and (float(op.options.get("beta", 1.0)) != 1.0 or "axis" in op.options))
    ):
        return None
    return KERAS_ACTIVATION_OPS.get(op.opcode)


def _dense_nd(g: Graph, end: Operator) -> Lifted | None:
    """RESHAPE(FULLY_CONNECTED(RESHAPE(x, [rows, C])), [*lead, units]) with x [*lead, C] (or a
    reshape of x to that shape the model computes too): Dense on x. An activation op between the
    FULLY_CONNECTED and the last RESHAPE (Keras' Dense(activation=) on a 4D input) is the Dense's
    activation: rowwise it computes the same."""
    if end.opcode != "RESHAPE" or not end.inputs:
        return None
    fc = g.producer.get(g.ctx.resolve(end.inputs[0]))
    act, name = None, _keras_activation(fc)
    if name is not None:
        act, fc = fc, g.producer.get(g.ctx.resolve(fc.inputs[0]))
        if fc is None or fc.options.get("fused_activation_function", "NONE") != "NONE":
            return None
    if (
        fc is None
        or fc.opcode != "FULLY_CONNECTED"
        or len(fc.outputs) != 1
        or fc.options.get("keep_num_dims")
        or len(fc.inputs) < 2
        or not g.ctx.is_const(fc.inputs[1])
    ):
        return None
    start = g.made_by(fc.inputs[0], "RESHAPE")
    if start is None or not start.inputs or g.ctx.is_const(start.inputs[0]):
        return None
    x, chain = start.inputs[0], [start, fc, *([act] if act else []), end]
    units = np.shape(g.ctx.const(fc.inputs[1]))[0]
    x = _as_rows_of(g, x, tuple(g.ctx.shape(end.outputs[0]))[:-1], end)
    shape_x, flat = tuple(g.ctx.shape(x)), tuple(g.ctx.shape(start.outputs[0]))
    if (
        len(shape_x) < 3
        or flat != (int(np.prod(shape_x[:-1])), shape_x[-1])
        or tuple(g.ctx.shape(end.outputs[0])) != (*shape_x[:-1], units)
        or not g.enclosed(chain, hybrid_ok=True)
    ):
        return None
    options = {**fc.options, "keep_num_dims": True, "name_tensor": start.outputs[0]}
    if act is not None:
        options["keras_activation"] = name
    new = dataclasses.replace(fc, inputs=(x, *fc.inputs[1:]), outputs=end.outputs, options=options)
    return new, chain


def _as_rows_of(g: Graph, x: int, lead: tuple[int, ...], before: Operator) -> int:
    """`x`, or the reshape of it to [*lead, C] that the model computes anyway, ahead of `before`: the
    converter reshapes a Reshape layer's input straight to the Dense's rows ([1, 8, 8, 16] ->
    [64, 16] for Reshape((64, 16)) then Dense), and the Dense reads that layer's output."""
    shape = tuple(g.ctx.shape(x))
    if shape[:-1] == lead:
        return x
    order = {id(op): k for k, op in enumerate(g.ops)}
    for op in g.readers.get(g.ctx.resolve(x), []):
        if (
            op.opcode in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
            and len(op.outputs) == 1
            and tuple(g.ctx.shape(op.outputs[0])) == (*lead, shape[-1])
            and order.get(id(op), len(order)) < order.get(id(before), -1)
        ):
            return op.outputs[0]
    return x


def _bias_add(g: Graph, end: Operator) -> Lifted | None:
    """ADD(a layer with no bias or a zero one, a float constant along its last axis): the layer's
    bias (Keras' Dense on a rank >= 3 input adds its bias apart, after the reshape back; a free-batch
    dilated convolution adds it after BATCH_TO_SPACE_ND). The ADD's fused activation goes along."""
    if end.opcode != "ADD" or len(end.inputs) != 2:
        return None
    for a, b in operands(end):
        layer = g.producer.get(g.ctx.resolve(a))
        slot = bias_input(layer) if layer is not None else None
        if (
            slot is None
            or len(layer.outputs) != 1
            or not g.ctx.is_const(b)
            or not _zero_bias(g, layer, slot)
            or layer.options.get("fused_activation_function", "NONE") != "NONE"
            or layer.options.get("keras_activation")
            or not g.ctx.is_const(layer.inputs[1])
        ):
            continue
        units = g.ctx.shape(layer.outputs[0])[-1]
        if not per_channel(g, b, units, g.ctx.rank(end.outputs[0])) or not g.enclosed([layer, end]):
            continue
        options = {
            **layer.options,
            "fused_activation_function": end.options.get("fused_activation_function", "NONE"),
            "name_tensor": layer.options.get("name_tensor", layer.outputs[0]),
        }
        inputs = [*layer.inputs, *[-1] * (slot + 1 - len(layer.inputs))]
        inputs[slot] = b
        new = dataclasses.replace(layer, inputs=tuple(inputs), outputs=end.outputs, options=options)
        return new, [layer, end]
    return None


MATCHERS = (_separable, _embedding, _dense_nd, _bias_add, _softmax_axis, _activation)


def lift(ctx: ConvertContext, ops: list[Operator], matchers=MATCHERS) -> list[Operator]:
    """Replace each whole match of a pattern by its lifted op (later matches see earlier results)."""
    for match in matchers:
        g = Graph(ctx, ops)
        replaced: dict[int, Operator] = {}  # id of a pattern's last op -> the lifted op
        dropped: set[int] = set()
        for op in ops:
            if id(op) in dropped:
                continue
            try:
                found = match(g, op)
            except MISFIT:  # an op without the inputs its schema promises (a mutated file): no match,
                found = None  # its converter names the misfit
            if found is None:
                continue
            new, chain = found
            if any(id(c) in dropped or id(c) in replaced for c in chain):
                continue
            replaced[id(op)] = new
            dropped.update(id(c) for c in chain if c is not op)
        ops = [replaced.get(id(op), op) for op in ops if id(op) not in dropped]
    return ops

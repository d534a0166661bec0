"""Converters of the recurrent layers `passes.lift_rnn` recognised in WHILE loops.

The pass read the weights from the loop body (another subgraph than the one converted) and checked
them against the body's numbers, so a lifted op carries them in its options, already in Keras'
layout and gate order (LSTM i, f, c, o; GRU z, r, h), with each layer's class and constructor
arguments. "Recurrent" stands for a layer, or a stack of them the converter joined time-major
("LSTM" is also a TFLite opcode); "Bidirectional" for a forward and a backward one concatenated.
"""

from __future__ import annotations

from tfl_rebuild.rebuild.ops.registry import ConvertContext, InnerLayer, LayerSpec, lifted
from tfl_rebuild.rebuild.ops.sequence import UNROLL_MAX_STEPS
from tfl_rebuild.tflite.ir import Operator


def _kwargs(layer: dict, steps: int) -> dict:
    kwargs = dict(layer["kwargs"])
    if 0 < steps <= UNROLL_MAX_STEPS:  # as ops.sequence: Core ML converts the unrolled steps
        kwargs["unroll"] = True
    return kwargs


@lifted("Recurrent")
def recurrent(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    steps = ctx.shape(op.inputs[0])[1]
    specs: list[LayerSpec] = []
    src: int | LayerSpec = op.inputs[0]
    for layer in op.options["layers"]:
        spec = LayerSpec(
            layer["layer"],
            _kwargs(layer, steps),
            (src,),
            weights=tuple(layer["weights"]),
            name_tensor=layer["name_tensor"],
        )
        specs.append(spec)
        src = spec
    if op.options["flipped"]:  # the steps back in input order
        specs.append(LayerSpec("Reverse", {"axes": [1]}, (src,), custom=True))
    specs[-1].outputs = op.outputs
    specs[-1].name_tensor = None
    return specs


@lifted("Bidirectional")
def bidirectional(op: Operator, ctx: ConvertContext) -> LayerSpec:
    steps = ctx.shape(op.inputs[0])[1]
    forward, backward = op.options["forward"], op.options["backward"]
    weights = tuple((f"forward_{n}", a) for n, a in forward["weights"]) + tuple(
        (f"backward_{n}", a) for n, a in backward["weights"]
    )
    layer = InnerLayer(forward["layer"], _kwargs(forward, steps))
    return LayerSpec("Bidirectional", {"layer": layer}, (op.inputs[0],), op.outputs, weights=weights)

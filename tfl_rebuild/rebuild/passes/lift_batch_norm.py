"""BatchNormalization that no conv could absorb (after a Concatenate or an Add: DenseNet's and
ResNetV2's pre-activation blocks) becomes the layer again.

The converter folds its moving statistics into one scale and one shift per channel and writes
MUL(x, scale) then ADD(., shift), named ".../batch_normalization/batchnorm/mul_1" and
".../batchnorm/add_1" (the ADD may carry a fused ReLU). Only the names tell this from any other
per-channel arithmetic, so both must say it, in one layer scope. The layer comes back with the folded
values: gamma = scale, beta = shift, moving mean 0, moving variance 1 and epsilon 0, which computes
x * scale + shift exactly as TFLite does.
"""

from __future__ import annotations

from tfl_rebuild.rebuild.ops.registry import ConvertContext
from tfl_rebuild.rebuild.passes.lift import Graph, Lifted, lift, lifted_op, operands, per_channel
from tfl_rebuild.tflite.ir import Operator

MUL_NAME, ADD_NAME = "/batchnorm/mul_1", "/batchnorm/add_1"


def _batch_norm(g: Graph, end: Operator) -> Lifted | None:
    if end.opcode != "ADD" or len(end.inputs) != 2:
        return None
    for scaled, shift in operands(end):
        mul = g.made_by(scaled, "MUL")
        if mul is None or len(mul.inputs) != 2:
            continue
        name = g.ctx.tensor(mul.outputs[0]).name.split(";")[0]
        scope = name[: -len(MUL_NAME)] if name.endswith(MUL_NAME) else None
        if scope is None or scope + ADD_NAME not in g.ctx.tensor(end.outputs[0]).name.split(";"):
            continue
        channels, rank = g.ctx.shape(end.outputs[0])[-1], g.ctx.rank(end.outputs[0])
        for x, scale in operands(mul):
            if (
                not g.ctx.is_const(x)
                and per_channel(g, scale, channels, rank)
                and per_channel(g, shift, channels, rank)
                and g.is_float(x)
                and tuple(g.ctx.shape(x)) == tuple(g.ctx.shape(end.outputs[0]))
                and g.enclosed([mul, end])
            ):
                act = end.options.get("fused_activation_function", "NONE")
                # the layer is named after the MUL's scope; a fused ReLU after the ADD's first name
                options = {
                    "fused_activation_function": act,
                    "name_tensor": mul.outputs[0] if act == "NONE" else end.outputs[0],
                    "layer_tensor": mul.outputs[0],
                }
                return lifted_op(end, "BatchNormalization", (x, scale, shift), options, [mul, end])
    return None


def lift_batch_norm(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    """Every folded BatchNormalization the names vouch for, as one lifted op."""
    return lift(ctx, ops, (_batch_norm,))

"""Activations: standalone activation ops and the fused activations of other ops (one helper)."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext, LayerSpec, Ref, Trait, converter
from tfl_rebuild.tflite.ir import Operator

# Fused activations Keras layers accept as `activation=`.
KERAS_ACTIVATION = {"RELU": "relu", "RELU6": "relu6", "TANH": "tanh"}
# Activation ops that are a Keras activation by name (passes.lift moves one into the layer before it).
KERAS_ACTIVATION_OPS = {
    "RELU": "relu",  # unfused where the layer's op was rewritten (a dilated Conv1D of a free batch)
    "LOGISTIC": "sigmoid",
    "TANH": "tanh",
    "GELU": "gelu",  # exact only: Keras' "gelu" by name is not the tanh approximation
    "SOFTMAX": "softmax",  # beta 1, the last axis
    "ELU": "elu",
    "HARD_SWISH": "hard_silu",
}


def activation_layer(kind: str, inputs: tuple[Ref, ...], outputs: tuple[int, ...]) -> LayerSpec:
    """A layer computing one TFLite activation function."""
    if kind == "RELU":
        return LayerSpec("ReLU", {}, inputs, outputs)
    if kind == "RELU6":
        return LayerSpec("ReLU", {"max_value": 6.0}, inputs, outputs)
    if kind == "RELU_N1_TO_1":
        return LayerSpec("Clip", {"low": -1.0, "high": 1.0}, inputs, outputs, custom=True)
    if kind == "RELU_0_TO_1":
        return LayerSpec("Clip", {"low": 0.0, "high": 1.0}, inputs, outputs, custom=True)
    if kind == "TANH":
        return LayerSpec("Activation", {"activation": "tanh"}, inputs, outputs)
    if kind == "SIGN_BIT":
        return LayerSpec("UnaryOp", {"op": "sign"}, inputs, outputs, custom=True)
    raise ConversionError(f"unknown fused activation {kind}")


def with_activation(op: Operator, spec: LayerSpec, takes_activation: bool = False) -> list[LayerSpec]:
    """Attach the op's fused activation to `spec`: as `activation=` when the layer takes one and
    Keras has it, otherwise as a following layer that then produces the op's outputs."""
    lifted = op.options.get("keras_activation")  # passes.lift: the activation op after it, by Keras name
    if lifted:
        if takes_activation:
            spec.kwargs["activation"] = lifted
            return [spec]
        outputs, spec.outputs = spec.outputs, ()
        return [spec, LayerSpec("Activation", {"activation": lifted}, (spec,), outputs)]
    kind = op.options.get("fused_activation_function", "NONE")
    if kind == "NONE":
        return [spec]
    if takes_activation and kind in KERAS_ACTIVATION:
        spec.kwargs["activation"] = KERAS_ACTIVATION[kind]
        return [spec]
    outputs, spec.outputs = spec.outputs, ()
    return [spec, activation_layer(kind, (spec,), outputs)]


def _x(op: Operator) -> tuple[int, ...]:
    return (op.inputs[0],)


@converter("RELU", range(1, 4), traits=[Trait.ELEMENTWISE])
def relu(op: Operator, ctx: ConvertContext) -> LayerSpec:
    return activation_layer("RELU", _x(op), op.outputs)


@converter("RELU6", range(1, 4), traits=[Trait.ELEMENTWISE])
def relu6(op: Operator, ctx: ConvertContext) -> LayerSpec:
    return activation_layer("RELU6", _x(op), op.outputs)


@converter("RELU_N1_TO_1", range(1, 3), traits=[Trait.ELEMENTWISE])
def relu_n1_to_1(op: Operator, ctx: ConvertContext) -> LayerSpec:
    return activation_layer("RELU_N1_TO_1", _x(op), op.outputs)


@converter("RELU_0_TO_1", range(1, 3), traits=[Trait.ELEMENTWISE])
def relu_0_to_1(op: Operator, ctx: ConvertContext) -> LayerSpec:
    return activation_layer("RELU_0_TO_1", _x(op), op.outputs)


def _activation(name: str):
    def convert(op: Operator, ctx: ConvertContext) -> LayerSpec:
        return LayerSpec("Activation", {"activation": name}, _x(op), op.outputs)

    return convert


@converter("LOGISTIC", range(1, 5), traits=[Trait.ELEMENTWISE])
def logistic(op: Operator, ctx: ConvertContext) -> LayerSpec:
    # passes.fuse_silu marks a LOGISTIC whose MUL by its own input it took over.
    return LayerSpec(
        "Activation", {"activation": "silu" if op.options.get("silu") else "sigmoid"}, _x(op), op.outputs
    )


for _op, _name, _trait in (
    ("TANH", "tanh", Trait.ELEMENTWISE),
    ("HARD_SWISH", "hard_silu", Trait.ELEMENTWISE),
    ("ELU", "elu", Trait.ELEMENTWISE),
    ("LOG_SOFTMAX", "log_softmax", Trait.LAST_AXIS),
):
    converter(_op, range(1, 5), traits=[_trait])(_activation(_name))


@converter("LEAKY_RELU", range(1, 3), traits=[Trait.ELEMENTWISE])
def leaky_relu(op: Operator, ctx: ConvertContext) -> LayerSpec:
    return LayerSpec("LeakyReLU", {"negative_slope": float(op.options.get("alpha", 0.2))}, _x(op), op.outputs)


@converter("GELU", range(1, 3), traits=[Trait.ELEMENTWISE])
def gelu(op: Operator, ctx: ConvertContext) -> LayerSpec:
    if op.options.get("approximate"):
        return LayerSpec("UnaryOp", {"op": "gelu_tanh"}, _x(op), op.outputs, custom=True)
    return LayerSpec("Activation", {"activation": "gelu"}, _x(op), op.outputs)


@converter("SOFTMAX", range(1, 4), traits=[Trait.LAST_AXIS])
def softmax(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    beta = float(op.options.get("beta", 1.0))
    if beta == 1.0:  # "axis": lifted from transposes around it (passes.lift)
        return [LayerSpec("Softmax", {"axis": int(op.options.get("axis", -1))}, _x(op), op.outputs)]
    scale = LayerSpec(
        "BinaryOp",
        {"op": "multiply", "constant_shape": []},
        _x(op),
        (),
        weights=(("constant", np.float32(beta)),),
        custom=True,
    )
    return [scale, LayerSpec("Softmax", {"axis": -1}, (scale,), op.outputs)]


@converter("PRELU", range(1, 3), traits=[Trait.BATCH_PRESERVING])
def prelu(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x, alpha = op.inputs[0], op.inputs[1]
    rank = ctx.rank(x)
    a = ctx.const(alpha).astype(np.float32)
    # Keras keeps alpha over the non-batch axes, with size 1 on the shared ones.
    a = (
        a.reshape((1,) * (rank - a.ndim) + a.shape)[0]
        if a.ndim >= rank
        else a.reshape((1,) * (rank - 1 - a.ndim) + a.shape)
    )
    shared = [i + 1 for i, d in enumerate(a.shape) if d == 1 and ctx.shape(x)[i + 1] != 1]
    return LayerSpec(
        "PReLU", {"shared_axes": shared} if shared else {}, (x,), op.outputs, weights=(("alpha", a),)
    )

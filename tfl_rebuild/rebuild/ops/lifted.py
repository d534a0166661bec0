"""Converters of lifted ops: the Keras layers `passes.lift` recognised in the converter's output.

Each lifted op has its Keras class name as opcode, its pattern's data input first and the
pattern's constants after it (-1 for one it lacks); options carry the attributes the matcher read.
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.activation import with_activation
from tfl_rebuild.rebuild.ops.registry import ConvertContext, LayerSpec, Trait, lifted
from tfl_rebuild.tflite.ir import Operator
from tfl_rebuild.tflite.weights import to_keras_layout


def short_float(v: float) -> float:
    """A float32 constant as the shortest decimal that reads back as it (1e-3, not 0.0010000000474974513)."""
    return float(str(np.float32(v)))


@lifted("LayerNormalization")
def layer_normalization(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x, gamma, beta = op.inputs
    shape = ctx.shape(x)
    axes = [int(a) for a in op.options["axes"]]
    bshape = tuple(d if a in axes else 1 for a, d in enumerate(shape))
    kshape = tuple(shape[a] for a in axes)

    def weight(t: int, fill: float) -> np.ndarray:
        if t < 0:
            return np.full(kshape, fill, np.float32)
        return np.broadcast_to(ctx.const(t).astype(np.float32), bshape).reshape(kshape).copy()

    # The converter drops an all-zero beta (an untrained layer's): without one, center=False computes
    # the same, and a trained layer with center=True has a beta.
    scale, center = gamma >= 0, beta >= 0
    weights = []
    if scale:
        weights.append(("gamma", weight(gamma, 1.0)))
    if center:
        weights.append(("beta", weight(beta, 0.0)))
    kwargs = {
        "axis": -1 if axes == [len(shape) - 1] else axes,
        "epsilon": short_float(op.options["epsilon"]),
        "center": center,
        "scale": scale,
    }
    return LayerSpec("LayerNormalization", kwargs, (x,), op.outputs, weights=tuple(weights))


@lifted("BatchNormalization")
def batch_normalization(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    """The converter's folded scale and shift as gamma and beta over a moving mean of 0 and a moving
    variance of 1, epsilon 0: x * scale + shift, as TFLite computes it (passes.lift_batch_norm)."""
    x, scale, shift = op.inputs
    channels = ctx.shape(x)[-1]
    weights = (
        ("gamma", ctx.const(scale).astype(np.float32).reshape(-1)),
        ("beta", ctx.const(shift).astype(np.float32).reshape(-1)),
        ("moving_mean", np.zeros(channels, np.float32)),
        ("moving_variance", np.ones(channels, np.float32)),
    )
    spec = LayerSpec(
        "BatchNormalization",
        {"epsilon": 0.0},
        (x,),
        op.outputs,
        weights=weights,
        name_tensor=op.options.get("layer_tensor"),  # its name when a fused ReLU follows
    )
    return with_activation(op, spec)


@lifted("GroupNormalization")
def group_normalization(op: Operator, ctx: ConvertContext) -> LayerSpec:
    """gamma and beta per channel; ones and zeros where the converter dropped them (Keras' defaults)."""
    x, gamma, beta = op.inputs
    channels = ctx.shape(x)[-1]

    def weight(t: int, fill: float) -> np.ndarray:
        return np.full(channels, fill, np.float32) if t < 0 else ctx.const(t).astype(np.float32).reshape(-1)

    kwargs = {"groups": int(op.options["groups"]), "epsilon": short_float(op.options["epsilon"])}
    weights = (("gamma", weight(gamma, 1.0)), ("beta", weight(beta, 0.0)))
    return LayerSpec("GroupNormalization", kwargs, (x,), op.outputs, weights=weights)


@lifted("UnitNormalization")
def unit_normalization(op: Operator, ctx: ConvertContext) -> LayerSpec:
    axes = [int(a) for a in op.options["axes"]]
    rank = ctx.rank(op.inputs[0])
    axis = -1 if axes == [rank - 1] else (axes[0] if len(axes) == 1 else axes)
    return LayerSpec("UnitNormalization", {"axis": axis}, (op.inputs[0],), op.outputs)


def _bias(ctx: ConvertContext, t: int, n: int) -> np.ndarray | None:
    """The bias as a vector of n, or None when there is none or it is all zeros (the converter
    writes zeros for use_bias=False)."""
    if t < 0:
        return None
    b = ctx.const(t).astype(np.float32).reshape(-1)
    return np.broadcast_to(b, (n,)).copy() if np.any(b) else None


def _stride_dilation(op: Operator, key: str) -> tuple[int, int]:
    return (int(op.options.get(f"{key}_h", 1)), int(op.options.get(f"{key}_w", 1)))


@lifted("SeparableConv2D", traits=[Trait.KERAS_ACTIVATION], bias_input=3)
def separable_conv_2d(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    x, dw, pw, bias = op.inputs
    cin = ctx.shape(x)[-1]
    depthwise = to_keras_layout(ctx.const(dw).astype(np.float32), "DEPTHWISE_CONV_2D", cin)
    pointwise = to_keras_layout(ctx.const(pw).astype(np.float32), "CONV_2D")
    kwargs = {
        "filters": pointwise.shape[-1],
        "kernel_size": depthwise.shape[:2],
        "strides": _stride_dilation(op, "stride"),
        "padding": "same" if op.options.get("padding", "SAME") == "SAME" else "valid",
        "depth_multiplier": depthwise.shape[3],
        "dilation_rate": (
            int(op.options.get("dilation_h_factor", 1)),
            int(op.options.get("dilation_w_factor", 1)),
        ),
    }
    b = _bias(ctx, bias, pointwise.shape[-1])
    kwargs["use_bias"] = b is not None
    weights = [("depthwise_kernel", depthwise), ("pointwise_kernel", pointwise)]
    if b is not None:
        weights.append(("bias", b))
    spec = LayerSpec("SeparableConv2D", kwargs, (x,), op.outputs, weights=tuple(weights))
    return with_activation(op, spec, takes_activation=True)


@lifted("Conv1D", traits=[Trait.KERAS_ACTIVATION], bias_input=2)
def conv_1d(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    x, w, bias = op.inputs
    kernel = ctx.const(w).astype(np.float32)  # [O, 1, K, I]
    filters, _, size, n_in = kernel.shape
    groups = ctx.shape(x)[-1] // n_in
    padding = (
        "causal" if op.options["causal"] else ("same" if op.options.get("padding") == "SAME" else "valid")
    )
    kwargs = {
        "filters": filters,
        "kernel_size": size,
        "strides": int(op.options.get("stride_w", 1)),
        "padding": padding,
        "dilation_rate": int(op.options.get("dilation_w_factor", 1)),
    }
    if groups > 1:
        kwargs["groups"] = groups
    b = _bias(ctx, bias, filters)
    kwargs["use_bias"] = b is not None
    weights = [("kernel", kernel[:, 0].transpose(1, 2, 0))]  # Keras [K, I, O]
    if b is not None:
        weights.append(("bias", b))
    spec = LayerSpec("Conv1D", kwargs, (x,), op.outputs, weights=tuple(weights))
    return with_activation(op, spec, takes_activation=True)


def _pool_1d(layer: str):
    def convert(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
        o = op.options
        kwargs = {
            "pool_size": int(o.get("filter_width", 1)),
            "strides": int(o.get("stride_w", 1)),
            "padding": "same" if o.get("padding", "VALID") == "SAME" else "valid",
        }
        return with_activation(op, LayerSpec(layer, kwargs, (op.inputs[0],), op.outputs))

    return convert


lifted("MaxPooling1D")(_pool_1d("MaxPooling1D"))
lifted("AveragePooling1D")(_pool_1d("AveragePooling1D"))


@lifted("Embedding")
def embedding(op: Operator, ctx: ConvertContext) -> LayerSpec:
    ids, table = op.inputs
    t = ctx.const(table).astype(np.float32)
    kwargs = {"input_dim": t.shape[0], "output_dim": t.shape[1]}
    return LayerSpec("Embedding", kwargs, (ids,), op.outputs, weights=(("embeddings", t),))


@lifted("MultiHeadAttention")
def multi_head_attention(op: Operator, ctx: ConvertContext) -> LayerSpec:
    """Weights in Keras' order: query, key, value, output (kernel, bias each); biases the converter
    dropped (all zeros) are zeros, and none at all is use_bias=False."""
    query, value, key = op.inputs[:3]
    kernels, biases = op.inputs[3::2], op.inputs[4::2]
    heads, key_dim, value_dim = (int(op.options[k]) for k in ("num_heads", "key_dim", "value_dim"))
    out_dim = ctx.shape(op.outputs[0])[-1]
    use_bias = any(b >= 0 for b in biases)
    weights = []
    for name, w, b, (h, d) in zip(
        ("query", "key", "value", "output"),
        kernels,
        biases,
        ((heads, key_dim),) * 2 + ((heads, value_dim),) * 2,
    ):
        k = ctx.const(w).astype(np.float32)  # [units, n_in]
        if name == "output":
            kernel, bias_shape = k.T.reshape(h, d, k.shape[0]), (k.shape[0],)
        else:
            kernel, bias_shape = k.T.reshape(k.shape[1], h, d), (h, d)
        weights.append((f"{name}_kernel", kernel))
        if use_bias:
            bias = (
                np.zeros(bias_shape, np.float32)
                if b < 0
                else ctx.const(b).astype(np.float32).reshape(bias_shape)
            )
            weights.append((f"{name}_bias", bias))
    kwargs = {"num_heads": heads, "key_dim": key_dim}
    if value_dim != key_dim:
        kwargs["value_dim"] = value_dim
    if out_dim != ctx.shape(query)[-1]:
        kwargs["output_shape"] = out_dim
    kwargs["use_bias"] = use_bias
    causal = {"use_causal_mask": True} if op.options.get("causal") else {}
    return LayerSpec(
        "MultiHeadAttention",
        kwargs,
        (query, value, key),
        op.outputs,
        weights=tuple(weights),
        call_kwargs=causal,
    )


@lifted("Rescaling")
def rescaling(op: Operator, ctx: ConvertContext) -> LayerSpec:
    kwargs = {"scale": op.options["scale"]}
    if "offset" in op.options:
        kwargs["offset"] = op.options["offset"]
    return LayerSpec("Rescaling", kwargs, (op.inputs[0],), op.outputs)


@lifted("Normalization")
def normalization(op: Operator, ctx: ConvertContext) -> LayerSpec:
    kwargs = {"mean": op.options["mean"], "variance": op.options["variance"]}
    return LayerSpec("Normalization", kwargs, (op.inputs[0],), op.outputs)

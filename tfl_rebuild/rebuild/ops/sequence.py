"""Sequence models and control flow: LSTM / RNN / SVDF ops, WHILE and IF over their subgraphs,
STABLEHLO_COMPOSITE over its decomposition.

WHILE, IF and STABLEHLO_COMPOSITE call other subgraphs of the model. A converter names them with
`SubgraphRef`; codegen emits each referenced subgraph once as its own `build_<name>(w)` function
returning a keras.Model, and the loop / branch / composite layer runs those models
(keras.ops.while_loop / keras.ops.cond / a plain call).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext, LayerSpec, Trait, converter
from tfl_rebuild.tflite.ir import Operator


@dataclass(frozen=True)
class SubgraphRef:
    """A constructor argument that is another subgraph of the model, built as a keras.Model."""

    index: int


def _subgraph(op: Operator, key: str) -> SubgraphRef:
    index = op.options.get(key)
    if not isinstance(index, int) or index <= 0:
        raise ConversionError(f"{op.opcode} op {op.index}: bad {key} {index!r}")
    return SubgraphRef(index)


def _operands(op: Operator, ctx: ConvertContext, tensors: tuple[int, ...]) -> list:
    """Tensor ids, with constant operands replaced by Constant layers (a loop's initial counter,
    a weight passed into the body): a called keras.Model takes tensors, not stored arrays."""
    computed = [t for t in tensors if t >= 0 and not ctx.is_const(t)]
    if not computed:
        raise ConversionError(f"{op.opcode} op {op.index}: every operand is a constant")
    refs: list = []
    for t in tensors:
        if t < 0:
            raise ConversionError(f"{op.opcode} op {op.index}: an omitted operand")
        if ctx.is_const(t):
            value = np.asarray(ctx.const(t))
            if value.dtype == np.float64:
                value = value.astype(np.float32)
            refs.append(
                LayerSpec(
                    "Constant",
                    {"shape": list(value.shape), "dtype": str(value.dtype)},
                    (computed[0],),
                    weights=(("value", value),),
                    custom=True,
                )
            )
        else:
            refs.append(t)
    return refs


@converter(
    "WHILE",
    range(1, 2),
    note="cond and body subgraphs become keras.Models run by keras.ops.while_loop",
    traits=[Trait.SIDE_EFFECTS],
)
def while_loop(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    if len(op.inputs) != len(op.outputs):
        raise ConversionError(
            f"WHILE op {op.index}: {len(op.inputs)} loop inputs but {len(op.outputs)} outputs"
        )
    refs = _operands(op, ctx, op.inputs)
    loop = LayerSpec(
        "WhileLoop",
        {"cond": _subgraph(op, "cond_subgraph_index"), "body": _subgraph(op, "body_subgraph_index")},
        tuple(refs),
        op.outputs,
        custom=True,
    )
    return [r for r in refs if isinstance(r, LayerSpec)] + [loop]


@converter(
    "IF",
    range(1, 2),
    note="then / else subgraphs become keras.Models run by keras.ops.cond",
    traits=[Trait.SIDE_EFFECTS],
)
def if_(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    refs = _operands(op, ctx, op.inputs)
    branch = LayerSpec(
        "IfElse",
        {
            "then_branch": _subgraph(op, "then_subgraph_index"),
            "else_branch": _subgraph(op, "else_subgraph_index"),
        },
        tuple(refs),
        op.outputs,
        custom=True,
    )
    return [r for r in refs if isinstance(r, LayerSpec)] + [branch]


@converter(
    "STABLEHLO_COMPOSITE",
    range(1, 2),
    note="the decomposition subgraph becomes a keras.Model run by a Composite layer",
)
def stablehlo_composite(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    """A named high-level op (ai-edge-torch's odml.rms_norm, odml.scaled_dot_product_attention,
    ...) that the runtime computes by calling its decomposition subgraph: so does the rebuild."""
    refs = _operands(op, ctx, op.inputs)
    call = LayerSpec(
        "Composite",
        {"decomposition": _subgraph(op, "decomposition_subgraph_index")},
        tuple(refs),
        op.outputs,
        custom=True,
    )
    return [r for r in refs if isinstance(r, LayerSpec)] + [call]


def dynamic_slice(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    """SLICE whose begin or size is computed (a loop body writing step i of a TensorList)."""
    refs = _operands(op, ctx, op.inputs[:3])
    return [r for r in refs if isinstance(r, LayerSpec)] + [
        LayerSpec("DynamicSlice", {}, tuple(refs), op.outputs, custom=True)
    ]


# --- fused recurrent ops -> Keras recurrent layers ----------------------------------------------

# The cell / output activation of the fused ops (their fused_activation_function) in Keras terms.
RECURRENT_ACTIVATION = {"NONE": "linear", "RELU": "relu", "RELU6": "relu6", "TANH": "tanh"}


def _activation(op: Operator) -> str:
    kind = op.options.get("fused_activation_function", "TANH")
    if kind not in RECURRENT_ACTIVATION:
        raise ConversionError(f"{op.opcode} op {op.index}: activation {kind} has no Keras equivalent")
    return RECURRENT_ACTIVATION[kind]


def _zero_state(op: Operator, ctx: ConvertContext, t: int) -> None:
    """Keras recurrent layers start from zeros, as TFLite's state variables do unless stored."""
    if t >= 0 and ctx.is_const(t) and np.any(np.asarray(ctx.const(t))):
        raise ConversionError(f"{op.opcode} op {op.index}: a non-zero initial state is not supported")


def _float(ctx: ConvertContext, t: int) -> np.ndarray:
    return np.asarray(ctx.const(t), dtype=np.float32)


# Sequences up to this many steps are unrolled: coremltools' TF frontend cannot convert the
# while_loop (with maximum_iterations) that Keras 3 recurrent layers trace to; the math is the same.
UNROLL_MAX_STEPS = 128


def _steps_kwargs(op: Operator, ctx: ConvertContext) -> dict:
    shape = ctx.shape(op.inputs[0])
    steps = shape[0 if op.options.get("time_major") else 1] if len(shape) == 3 else -1
    return {"return_sequences": True, **({"unroll": True} if 0 < steps <= UNROLL_MAX_STEPS else {})}


def _sequence_layer(
    op: Operator, ctx: ConvertContext, layer: str, kwargs: dict, weights: tuple
) -> list[LayerSpec]:
    """The Keras layer over the whole sequence (return_sequences, as the TFLite op outputs every
    step); a time-major op gets its input and output transposed around it."""
    kwargs = {**kwargs, **_steps_kwargs(op, ctx)}
    if not op.options.get("time_major"):
        return [LayerSpec(layer, kwargs, (op.inputs[0],), op.outputs, weights=weights)]
    batch_major = LayerSpec("Transpose", {"perm": [1, 0, 2]}, (op.inputs[0],), custom=True)
    rnn = LayerSpec(layer, kwargs, (batch_major,), weights=weights)
    return [batch_major, rnn, LayerSpec("Transpose", {"perm": [1, 0, 2]}, (rnn,), op.outputs, custom=True)]


LSTM_INPUTS = (
    24  # input, 4 input + 4 recurrent weights, 3 peepholes, 4 biases, projection (2), 2 states, 4 norms
)


def _lstm_weights(
    op: Operator,
    ctx: ConvertContext,
    ins: list[int],
    w: int,
    r: int,
    peep: int,
    b: int,
    proj: int,
    states: tuple[int, ...],
    extra: dict[str, tuple[int, ...]],
) -> tuple:
    """Keras (kernel, recurrent_kernel, bias) of one direction, whose TFLite operands start at input
    weights `w`, recurrent weights `r`, peepholes `peep`, biases `b` and projection `proj`."""
    missing = [
        k
        for k in (*range(w, w + 4), *range(r, r + 4), *range(b, b + 4))
        if ins[k] < 0 or not ctx.is_const(ins[k])
    ]
    extras = {"peephole weights": tuple(range(peep, peep + 3)), "a projection": (proj, proj + 1), **extra}
    why = [name for name, ks in extras.items() if any(ins[k] >= 0 for k in ks)]
    if missing:
        why.append("coupled input-forget gate or run-time weights")
    if op.options.get("cell_clip") or op.options.get("proj_clip"):
        why.append("cell / projection clipping")
    if why:
        raise ConversionError(
            f"{op.opcode} op {op.index}: {', '.join(why)} has no keras.layers.LSTM equivalent"
        )
    for state in states:
        _zero_state(op, ctx, ins[state])
    # TFLite keeps one [units, in] matrix per gate (i, f, c, o); Keras one [in, 4 * units] kernel in that order.
    kernel = np.concatenate([_float(ctx, ins[k]).T for k in range(w, w + 4)], axis=1)
    recurrent = np.concatenate([_float(ctx, ins[k]).T for k in range(r, r + 4)], axis=1)
    bias = np.concatenate([_float(ctx, ins[k]) for k in range(b, b + 4)])
    return kernel, recurrent, bias


def _lstm_kwargs(op: Operator, recurrent: np.ndarray) -> dict:
    return {"units": recurrent.shape[0], "activation": _activation(op), "recurrent_activation": "sigmoid"}


@converter(
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
    range(1, 5),
    note="keras.layers.LSTM (no peephole / projection / layer norm / CIFG / clipping)",
)
def unidirectional_sequence_lstm(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    ins = list(op.inputs) + [-1] * (LSTM_INPUTS - len(op.inputs))
    kernel, recurrent, bias = _lstm_weights(
        op, ctx, ins, 1, 5, 9, 12, 16, (18, 19), {"layer normalization": (20, 21, 22, 23)}
    )
    return _sequence_layer(
        op,
        ctx,
        "LSTM",
        _lstm_kwargs(op, recurrent),
        (("kernel", kernel), ("recurrent_kernel", recurrent), ("bias", bias)),
    )


BIDIRECTIONAL_LSTM_INPUTS = 48  # two directions of the above (no norms), 4 states, auxiliary input + weights


@converter(
    "BIDIRECTIONAL_SEQUENCE_LSTM",
    range(1, 4),
    note="forward keras.layers.LSTM + backward LSTM "
    "(go_backwards, re-reversed), concatenated when merge_outputs",
)
def bidirectional_sequence_lstm(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    ins = list(op.inputs) + [-1] * (BIDIRECTIONAL_LSTM_INPUTS - len(op.inputs))
    aux = {"an auxiliary input": tuple(range(39, 48))}
    fw = _lstm_weights(op, ctx, ins, 1, 5, 9, 12, 16, (35, 36), aux)
    bw = _lstm_weights(op, ctx, ins, 18, 22, 26, 29, 33, (37, 38), aux)
    names = ("kernel", "recurrent_kernel", "bias")
    return _bidirectional(
        op,
        ctx,
        "LSTM",
        _lstm_kwargs(op, fw[1]),
        tuple(zip(names, fw)),
        _lstm_kwargs(op, bw[1]),
        tuple(zip(names, bw)),
    )


def _bidirectional(
    op: Operator,
    ctx: ConvertContext,
    layer: str,
    fw_kwargs: dict,
    fw_weights: tuple,
    bw_kwargs: dict,
    bw_weights: tuple,
) -> list[LayerSpec]:
    """A forward and a backward Keras recurrent layer over the op's input, the backward one's steps
    put back in input order, concatenated when the op merges its outputs."""
    merge = bool(op.options.get("merge_outputs"))
    if len(op.outputs) != (1 if merge else 2):
        raise ConversionError(
            f"{op.opcode} op {op.index}: {len(op.outputs)} outputs with merge_outputs={merge}"
        )
    time_major = bool(op.options.get("time_major"))
    specs: list[LayerSpec] = []
    src = op.inputs[0]
    if time_major:
        specs.append(LayerSpec("Transpose", {"perm": [1, 0, 2]}, (src,), custom=True))
        src = specs[-1]
    steps = _steps_kwargs(op, ctx)
    forward = LayerSpec(layer, {**fw_kwargs, **steps}, (src,), weights=fw_weights)
    backward = LayerSpec(layer, {**bw_kwargs, **steps, "go_backwards": True}, (src,), weights=bw_weights)
    # go_backwards yields the steps last-first; TFLite writes each backward output at its own step.
    aligned = LayerSpec("Reverse", {"axes": [1]}, (backward,), custom=True)
    specs += [forward, backward, aligned]
    if merge:
        specs.append(LayerSpec("Concatenate", {"axis": -1}, (forward, aligned), call_list=True))
    results = specs[-1:] if merge else [forward, aligned]
    for result, out in zip(results, op.outputs):
        if time_major:
            specs.append(LayerSpec("Transpose", {"perm": [1, 0, 2]}, (result,), (out,), custom=True))
        else:
            result.outputs = (out,)
    return specs


def _rnn_weights(op: Operator, ctx: ConvertContext, w: int, r: int, b: int, state: int) -> tuple:
    """SimpleRNN (kernel, recurrent_kernel, bias) from TFLite's [units, in] / [units, units] weights."""
    ins = list(op.inputs) + [-1] * (state + 1 - len(op.inputs))
    for t in (ins[w], ins[r], ins[b]):
        if t < 0 or not ctx.is_const(t):
            raise ConversionError(f"{op.opcode} op {op.index}: weights must be constants")
    _zero_state(op, ctx, ins[state])
    return (
        ("kernel", _float(ctx, ins[w]).T),
        ("recurrent_kernel", _float(ctx, ins[r]).T),
        ("bias", _float(ctx, ins[b])),
    )


@converter("UNIDIRECTIONAL_SEQUENCE_RNN", range(1, 4), note="keras.layers.SimpleRNN")
def unidirectional_sequence_rnn(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    weights = _rnn_weights(op, ctx, 1, 2, 3, 4)
    kwargs = {"units": weights[1][1].shape[0], "activation": _activation(op)}
    return _sequence_layer(op, ctx, "SimpleRNN", kwargs, weights)


@converter(
    "BIDIRECTIONAL_SEQUENCE_RNN",
    range(1, 4),
    note="forward keras.layers.SimpleRNN + backward "
    "SimpleRNN (go_backwards, re-reversed), concatenated when merge_outputs",
)
def bidirectional_sequence_rnn(op: Operator, ctx: ConvertContext) -> list[LayerSpec]:
    # inputs: x, fw (weights, recurrent, bias, state), bw (the same), aux input, fw / bw aux weights
    if any(i >= 0 for i in op.inputs[9:12]):
        raise ConversionError(
            f"BIDIRECTIONAL_SEQUENCE_RNN op {op.index}: an auxiliary input has no "
            "keras.layers.SimpleRNN equivalent"
        )
    fw, bw = _rnn_weights(op, ctx, 1, 2, 3, 4), _rnn_weights(op, ctx, 5, 6, 7, 8)
    act = _activation(op)
    return _bidirectional(
        op,
        ctx,
        "SimpleRNN",
        {"units": fw[1][1].shape[0], "activation": act},
        fw,
        {"units": bw[1][1].shape[0], "activation": act},
        bw,
    )


@converter(
    "RNN", range(1, 4), note="one step from the zero state: keras.layers.Dense (recurrent weights unused)"
)
def rnn(op: Operator, ctx: ConvertContext) -> LayerSpec:
    # The op reads its state variable, which starts at zero in every run (the runtime resets it, and
    # Keras has no state across calls): h = act(x W^T + b + 0 R^T), so the recurrent weights drop out.
    x, w, _, b = op.inputs[:4]
    for t in (w, b):
        if t < 0 or not ctx.is_const(t):
            raise ConversionError(f"RNN op {op.index}: weights must be constants")
    if len(op.inputs) > 4:
        _zero_state(op, ctx, op.inputs[4])
    kernel = _float(ctx, w).T
    return LayerSpec(
        "Dense",
        {"units": kernel.shape[1], "activation": _activation(op)},
        (x,),
        op.outputs,
        weights=(("kernel", kernel), ("bias", _float(ctx, b))),
    )


@converter(
    "SVDF",
    range(1, 5),
    note="one step from the zero state: keras.layers.Dense (only the newest time weight acts)",
)
def svdf(op: Operator, ctx: ConvertContext) -> LayerSpec:
    # The state starts at zero in every run (as for RNN above): after the kernel's shift only its
    # newest slot holds x W_feature^T, so each unit is act(sum over its `rank` filters of
    # (x . W_feature[f]) * W_time[f, -1] + bias): one Dense layer.
    x, feature, time = op.inputs[:3]
    bias = op.inputs[3] if len(op.inputs) > 3 else -1
    for t in (feature, time):
        if t < 0 or not ctx.is_const(t):
            raise ConversionError(f"SVDF op {op.index}: weights must be constants")
    if len(op.inputs) > 4:
        _zero_state(op, ctx, op.inputs[4])
    wf, wt = _float(ctx, feature), _float(ctx, time)  # [filters, input], [filters, memory]
    rank = int(op.options.get("rank", 1))
    if rank < 1 or wf.shape[0] % rank or wt.shape[0] != wf.shape[0] or ctx.rank(x) != 2:
        raise ConversionError(
            f"SVDF op {op.index}: rank {rank} does not split {wf.shape[0]} filters, or the "
            f"input {list(ctx.shape(x))} is not [batch, features]"
        )
    units = wf.shape[0] // rank
    kernel = (wf * wt[:, -1:]).reshape(units, rank, -1).sum(axis=1).T  # [input, units]
    kind = op.options.get("fused_activation_function", "NONE")
    kwargs: dict = {"units": units}
    if kind != "NONE":
        kwargs["activation"] = _activation(op)
    weights: tuple = (("kernel", np.ascontiguousarray(kernel, np.float32)),)
    if bias >= 0:
        weights += (("bias", _float(ctx, bias).reshape(-1)),)
    else:
        kwargs["use_bias"] = False
    return LayerSpec("Dense", kwargs, (x,), op.outputs, weights=weights)

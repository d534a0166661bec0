"""MultiHeadAttention: Keras' attention of rank-3 inputs, as TensorFlow writes it, becomes the layer.

The pattern, read back from the output projection (every tensor inside it enclosed, see
`lift.Graph.enclosed`; the biases the converter keeps are the FULLY_CONNECTED ones):

    q = TRANSPOSE[0, 2, 1, 3](RESHAPE[B, T, H, D](FULLY_CONNECTED(query)))
    k = TRANSPOSE[0, 2, 3, 1](RESHAPE[B, S, H, D](FULLY_CONNECTED(key)))
    v = TRANSPOSE[0, 2, 1, 3](RESHAPE[B, S, H, Dv](FULLY_CONNECTED(value)))
    p = SOFTMAX(MUL(BATCH_MATMUL(q, k), 1 / sqrt(D)))
    out = FULLY_CONNECTED(RESHAPE[B, T, H * Dv](TRANSPOSE[0, 2, 1, 3](BATCH_MATMUL(p, v))))

with constant projection weights, no fused activations, no adjoint flags and Keras' scale. The
RESHAPE / TRANSPOSE steps may be any chain of up to 3 of them that moves the elements the same way
(checked on indices: with one head the converter writes the transposes as reshapes). A causal mask
(`use_causal_mask=True`) is Keras' masked softmax of a constant lower-triangular mask between the
scale and the SOFTMAX: SELECT_V2(mask, scores, <= -1e9). Other masks, other attention axes and biases
added apart stay in the faithful form.
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext
from tfl_rebuild.rebuild.passes.lift import Graph, Lifted, lift, lifted_op
from tfl_rebuild.tflite.ir import Operator

LAYOUT_LIMIT = 1 << 22  # elements: how big a layout the index simulation below checks


def _layout(g: Graph, t: int, source: str) -> tuple[list[Operator], Operator] | None:
    """The RESHAPE / TRANSPOSE ops (at most 3, oldest first) between the op of type `source` and t."""
    ops: list[Operator] = []
    while len(ops) <= 3:
        op = g.made_by(t, "RESHAPE", "TRANSPOSE", source)
        if op is None:
            return None
        if op.opcode == source:
            return ops[::-1], op
        if op.opcode == "TRANSPOSE" and not g.ctx.is_const(op.inputs[1]):
            return None
        ops.append(op)
        t = op.inputs[0]
    return None


def _moves(g: Graph, ops: list[Operator], shape: tuple[int, ...], expected: np.ndarray) -> bool:
    """Whether the ops move the elements of a tensor of `shape` where `expected` (indices) says:
    checked by running them on the indices (the converter writes a transpose of a unit axis as a
    reshape, and merges reshapes)."""
    if int(np.prod(shape)) > LAYOUT_LIMIT or int(np.prod(shape)) != expected.size:
        return False
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    for op in ops:
        if op.opcode == "TRANSPOSE":
            perm = np.asarray(g.ctx.const(op.inputs[1])).reshape(-1).tolist()
            if sorted(perm) != list(range(idx.ndim)):
                return False
            idx = idx.transpose(perm)
        else:
            idx = idx.reshape(g.ctx.shape(op.outputs[0]))
    return idx.shape == expected.shape and bool(np.array_equal(idx, expected))


def _projection(g: Graph, t: int, perm: list[int]) -> tuple[list[Operator], Operator, int, int] | None:
    """The heads of a constant-weight FULLY_CONNECTED of a rank-3 input [B, T, E], split to
    [B, T, H, D] and transposed by `perm` (to t): (ops, the FULLY_CONNECTED, H, D)."""
    found = _layout(g, t, "FULLY_CONNECTED")
    if found is None:
        return None
    layout, dense = found
    if not g.ctx.is_const(dense.inputs[1]) or not dense.options.get("keep_num_dims"):
        return None
    x, final = g.ctx.shape(dense.outputs[0]), g.ctx.shape(t)
    if len(x) != 3 or len(final) != 4 or len(g.ctx.shape(dense.inputs[0])) != 3:
        return None
    inverse = np.argsort(perm)
    split = tuple(int(final[i]) for i in inverse)  # [B, T, H, D]
    if split[:2] != tuple(x[:2]) or split[2] * split[3] != x[2]:
        return None
    if not _moves(g, layout, tuple(x), np.arange(int(np.prod(x))).reshape(split).transpose(perm)):
        return None
    return [dense, *layout], dense, split[2], split[3]


def _causal(g: Graph, select: Operator) -> bool:
    """Whether SELECT_V2(mask, scores, <= -1e9) is Keras' causal masking of scores [B, H, T, S]: the
    mask a constant that is, for every batch and head, query i may see key j where i >= j."""
    if len(select.inputs) != 3 or not g.ctx.is_const(select.inputs[0]) or g.ctx.is_const(select.inputs[1]):
        return False
    fill, shape = g.scalar(select.inputs[2]), tuple(g.ctx.shape(select.inputs[1]))
    if fill is None or fill > -1e9 or len(shape) != 4:  # Keras 3: -0.7 x float32's max; tf.keras -1e9
        return False
    try:
        mask = np.broadcast_to(np.asarray(g.ctx.const(select.inputs[0])).astype(bool), shape)
    except ValueError:
        return False
    t, s = shape[2:]
    return bool((mask == (np.arange(t)[:, None] >= np.arange(s)[None, :])).all())


def _attention(g: Graph, end: Operator) -> Lifted | None:
    if end.opcode != "FULLY_CONNECTED" or not g.ctx.is_const(end.inputs[1]) or len(end.outputs) != 1:
        return None
    if not end.options.get("keep_num_dims") or end.options.get("fused_activation_function", "NONE") != "NONE":
        return None
    found = _layout(g, end.inputs[0], "BATCH_MATMUL")
    if found is None:
        return None
    back, pv = found
    if pv.options.get("adj_x") or pv.options.get("adj_y") or g.ctx.rank(pv.outputs[0]) != 4:
        return None
    softmax = g.made_by(pv.inputs[0], "SOFTMAX")
    value = _projection(g, pv.inputs[1], [0, 2, 1, 3])
    if softmax is None or value is None or float(softmax.options.get("beta", 1.0)) != 1.0:
        return None
    scores, masking = softmax.inputs[0], []
    select = g.made_by(scores, "SELECT_V2")
    if select is not None:
        if not _causal(g, select):
            return None
        scores, masking = select.inputs[1], [select]
    scaled = g.made_by(scores, "MUL")
    if scaled is None:
        return None
    for s, c in ((scaled.inputs[0], scaled.inputs[1]), (scaled.inputs[1], scaled.inputs[0])):
        qk = g.made_by(s, "BATCH_MATMUL")
        scale = g.scalar(c)
        if qk is not None and scale is not None:
            break
    else:
        return None
    if qk.options.get("adj_x") or qk.options.get("adj_y"):
        return None
    query = _projection(g, qk.inputs[0], [0, 2, 1, 3])
    key = _projection(g, qk.inputs[1], [0, 2, 3, 1])
    if query is None or key is None:
        return None
    (q_ops, q_dense, heads, key_dim), (k_ops, k_dense, k_heads, k_dim) = query, key
    v_ops, v_dense, v_heads, value_dim = value
    if (heads, key_dim) != (k_heads, k_dim) or v_heads != heads:
        return None
    if not np.isclose(scale, 1.0 / np.sqrt(key_dim), rtol=1e-6, atol=0.0):
        return None
    b, h, n, dv = g.ctx.shape(pv.outputs[0])
    merged = np.arange(b * h * n * dv).reshape(b, h, n, dv).transpose(0, 2, 1, 3).reshape(b, n, h * dv)
    if (h, dv) != (heads, value_dim) or not _moves(g, back, (b, h, n, dv), merged):
        return None
    chain = [*q_ops, *k_ops, *v_ops, qk, scaled, *masking, softmax, pv, *back, end]
    if len({id(op) for op in chain}) != len(chain) or not g.enclosed(chain):
        return None
    if not all(g.is_float(d.inputs[0]) for d in (q_dense, k_dense, v_dense)):
        return None

    def bias(op: Operator) -> int:
        return op.inputs[2] if len(op.inputs) > 2 else -1

    inputs = (q_dense.inputs[0], v_dense.inputs[0], k_dense.inputs[0])
    weights = tuple(t for d in (q_dense, k_dense, v_dense, end) for t in (d.inputs[1], bias(d)))
    # Named as the attention's scope: the scaled scores' tensor ".../multi_head_attention/Mul".
    options = {
        "num_heads": heads,
        "key_dim": key_dim,
        "value_dim": value_dim,
        "name_tensor": scaled.outputs[0],
    }
    if masking:
        options["causal"] = True
    return lifted_op(end, "MultiHeadAttention", (*inputs, *weights), options, chain)


def lift_attention(ctx: ConvertContext, ops: list[Operator]) -> list[Operator]:
    """Every whole MultiHeadAttention pattern, as one lifted op."""
    return lift(ctx, ops, (_attention,))

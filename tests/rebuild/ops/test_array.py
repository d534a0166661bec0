"""Array ops: GATHER, PACK, UNPACK, SPLIT, SPLIT_V, TILE, BROADCAST_TO, CAST, SHAPE, ARG_MAX,
ARG_MIN, SELECT, SELECT_V2."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from flatbuf import Op, T, build_model

X = [2, 4, 3]


def index_from(x, n: int):
    """Integer indices in [0, n) computed from an input in [-1, 1) (verify feeds random floats)."""
    return tf.cast((x + 1.0) * (n / 2.0), tf.int32)


GATHER = {
    "axis-0": (lambda x: tf.gather(x, [1, 0, 1], axis=0), [X]),
    "axis-1": (lambda x: tf.gather(x, [3, 0, 2, 2], axis=1), [X]),
    "axis-last": (lambda x: tf.gather(x, [2, 0], axis=-1), [X]),
    "2d-indices": (lambda x: tf.gather(x, [[0, 3], [1, 1]], axis=1), [X]),
    "scalar-index": (lambda x: tf.gather(x, 2, axis=1), [X]),
    "table-lookup": (
        lambda x: tf.gather(
            np.random.default_rng(5).normal(size=(40, 3)).astype(np.float32), index_from(x, 40)
        ),
        [[1, 6]],
    ),
    "computed-indices": (lambda x, i: tf.gather(x, index_from(i, 4), axis=1), [X, [3]]),
}


@pytest.mark.parametrize("case", GATHER)
def test_gather(tfl, case):
    fn, specs = GATHER[case]
    tfl.check(tfl.function(fn, *specs), "GATHER")


@pytest.mark.parametrize("axis", [0, 1, -1], ids=["axis-0", "axis-1", "axis-last"])
def test_pack(tfl, axis):
    tfl.check(tfl.function(lambda a, b: tf.stack([a, b * 2.0, a - b], axis=axis), X, X), "PACK")


@pytest.mark.parametrize("axis", [0, 1, -1], ids=["axis-0", "axis-1", "axis-last"])
def test_unpack(tfl, axis):
    tfl.check(tfl.function(lambda x: tf.unstack(x, axis=axis), X), "UNPACK")


@pytest.mark.parametrize(
    "n, axis", [(2, 1), (3, -1), (2, 0), (4, 1)], ids=["2-axis-1", "3-last", "2-batch", "4-axis-1"]
)
def test_split(tfl, n, axis):
    tfl.check(tfl.function(lambda x: tf.split(x, n, axis=axis), X), "SPLIT")


@pytest.mark.parametrize(
    "sizes, axis", [([1, 3], 1), ([2, -1, 1], 1), ([1, 2], -1)], ids=["1-3", "rest", "last-axis"]
)
def test_split_v(tfl, sizes, axis):
    tfl.check(tfl.function(lambda x: tf.split(x, sizes, axis=axis), X), "SPLIT_V")


@pytest.mark.parametrize("multiples", [[1, 2, 3], [2, 1, 1], [3, 2, 2]], ids=["inner", "batch", "all"])
def test_tile(tfl, multiples):
    tfl.check(tfl.function(lambda x: tf.tile(x, multiples), X), "TILE")


def test_tile_nearest_upsampling(tfl):
    # Keras' nearest UpSampling2D converts to RESHAPE + TILE.
    import keras

    x = keras.Input((3, 4, 2), batch_size=1)
    tfl.check(tfl.keras(keras.Model(x, keras.layers.UpSampling2D((2, 3))(x))), "TILE")


BROADCAST = {
    "new-axis": ([4, 3], [2, 4, 3]),
    "size-1-axes": ([1, 4, 1], [2, 4, 3]),
    "rank-4": ([3], [1, 2, 4, 3]),
}


@pytest.mark.parametrize("case", BROADCAST)
def test_broadcast_to(tfl, case):
    src, dst = BROADCAST[case]
    tfl.check(tfl.function(lambda x: tf.broadcast_to(x, dst), src), "BROADCAST_TO")


def test_broadcast_to_computed_shape(tfl):
    # The target shape is computed (SHAPE of a dynamic-batch input); the rebuild's is static.
    tfl.check(
        tfl.function(lambda a, b: tf.broadcast_to(a, tf.shape(b)), [4, 3], [None, 4, 3]), "BROADCAST_TO"
    )


CAST = {
    "float-int32": (lambda x: tf.cast(x * 5.0, tf.int32), X),  # truncation toward zero
    "int32-float": (lambda x: tf.cast(x, tf.float32) * 0.5, (X, tf.int32)),
    "bool-float": (lambda x: tf.cast(x > 0.2, tf.float32), X),
    "float-int64": (lambda x: tf.cast(x * 50.0, tf.int64), X),
}


@pytest.mark.parametrize("case", CAST)
def test_cast(tfl, case):
    fn, spec = CAST[case]
    tfl.check(tfl.function(fn, spec), "CAST")


@pytest.mark.parametrize("src", [tf.int32, tf.float32], ids=["int32", "float32"])
def test_cast_to_bool_converts_to_core_ml(tfl, src):
    """BERT-style attention masks: 0/1 -> bool -> select. coremltools' TF Cast refused a bool
    destination ("Cast: Provided destination type bool not supported") though MIL's cast takes
    one. The mask holds zeros and non-zeros (x * 2 rounded), so both branches are taken."""

    def fn(x):
        mask = tf.cast(tf.round(x * 2.0), src)
        return tf.where(tf.cast(mask, tf.bool), x, -x * 0.5)

    tfl.core_ml(tfl.function(fn, X), "CAST")


@pytest.mark.parametrize("dst", [tf.uint8, tf.int8, tf.int16], ids=["uint8", "int8", "int16"])
@pytest.mark.parametrize("src", [tf.float32, tf.int32], ids=["float32", "int32"])
def test_cast_to_narrow_int(tfl, src, dst):
    """TFLite's CAST saturates a float at the type's range (300.0 -> uint8 255) where keras.ops.cast
    wraps (44), and wraps an int (300 -> 44). coremltools' TF Cast refused these destinations (a uint8
    mask output); Core ML holds them in int32, saturated or wrapped. x * 1e5 is far outside every
    range, so most values saturate or wrap. From float, Core ML runs in float16, which rounds the
    Keras clip's bounds (255.99998 -> 256): Core ML saturates again in int32."""
    precision = "float16" if src == tf.float32 else "float32"  # x * 1e5 in float16 would overflow
    tfl.core_ml(tfl.function(lambda x: tf.cast(tf.cast(x * 1e5, src), dst), X), "CAST", precision)


@pytest.mark.parametrize("out_type", [tf.int32, tf.int64], ids=["int32", "int64"])
def test_shape(tfl, out_type):
    # A static shape folds away; a dynamic batch keeps SHAPE. Its value never depends on the data.
    tfl.check(
        tfl.function(lambda x: tf.shape(x, out_type=out_type), [None, 4, 3]), "SHAPE", input_sensitive=False
    )


ARG = {"ARG_MAX": tf.argmax, "ARG_MIN": tf.argmin}


@pytest.mark.parametrize("out_type", [tf.int32, tf.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("axis", [1, -1, 0], ids=["axis-1", "axis-last", "axis-0"])
@pytest.mark.parametrize("op", ARG)
def test_arg(tfl, op, axis, out_type):
    tfl.check(tfl.function(lambda x: ARG[op](x, axis=axis, output_type=out_type), X), op)


# Same-shape operands make SELECT; SELECT_V2 is for broadcasting.
SELECT_V2 = {
    "broadcast": (lambda a, b: tf.where(a > b, a, b * 2.0), [X, [1, 4, 1]]),
    "constant-x": (lambda a: tf.where(a > 0.3, np.linspace(-1, 1, 3).astype(np.float32), a), [X]),
    "constant-y": (lambda a: tf.where(a > 0.3, a, np.float32(-0.5)), [X]),
    "bool-input": (lambda c, a, b: tf.where(c, a, b), [([1, 4, 3], tf.bool), X, [1, 1, 3]]),
    "constant-condition": (lambda a: tf.where(np.tril(np.ones((4, 3), bool)), a, a * -2.0), [X]),
}


@pytest.mark.parametrize("case", SELECT_V2)
def test_select_v2(tfl, case):
    fn, specs = SELECT_V2[case]
    tfl.check(tfl.function(fn, *specs), "SELECT_V2")


SELECT = {
    "same-shape": (lambda a, b: tf.compat.v1.where(a > b, a, b * 2.0), [X, X]),
    "tf2-same-shape": (lambda a, b: tf.where(a > b, a, b * 2.0), [X, X]),
    "bool-input": (lambda c, a, b: tf.where(c, a, b), [(X, tf.bool), X, X]),
    "rank-one-condition": (lambda c, a, b: tf.compat.v1.where(c[:, 0] > 0, a, b), [[2, 1], X, X]),
}


@pytest.mark.parametrize("case", SELECT)
def test_select(tfl, case):
    fn, specs = SELECT[case]
    tfl.check(tfl.function(fn, *specs), "SELECT")


def test_select_v2_of_constants_folds(tfl):
    """A causal attention mask as ai-edge-torch writes it: SELECT_V2(constant triangle, 0, -inf),
    every operand constant, added to the scores (TensorFlow's converter folds it itself, so the
    model is crafted). It folds to one constant; a constant condition was refused."""
    tri = np.tril(np.ones((4, 4), bool))
    blob = build_model(
        [
            T("x", [1, 2, 4, 4]),
            T("causal", [4, 4], "bool", tri),
            T("zero", [], data=np.array(0.0, np.float32)),
            T("minus_inf", [], data=np.array(-np.inf, np.float32)),
            T("mask", [4, 4]),
            T("masked", [1, 2, 4, 4]),
            T("y", [1, 2, 4, 4]),
        ],
        [
            Op("SELECT_V2", [1, 2, 3], [4], options_type="SelectV2Options"),
            Op("ADD", [0, 4], [5]),
            Op("SOFTMAX", [5], [6], options={"beta": 1.0}),
        ],
        inputs=[0],
        outputs=[6],
    )
    tfl.check(tfl.crafted(blob), "SELECT_V2")


BATCH_GATHER = {
    "batch-1-axis-1": (lambda x: tf.gather(x, [[0, 2], [1, 1]], axis=1, batch_dims=1), [[2, 4, 3]]),
    "batch-1-axis-2": (lambda x: tf.gather(x, [[2, 0], [1, 1]], axis=2, batch_dims=1), [[2, 4, 3]]),
    "batch-2": (lambda x: tf.gather(x, [[[0], [2]], [[1], [3]]], axis=2, batch_dims=2), [[2, 2, 4, 3]]),
    # batch_dims equal to the indices' rank: one slice per row (was read as batch_dims 0)
    "one-per-row": (lambda x: tf.gather(x[0], [3, 0, 2, 2, 1], axis=1, batch_dims=1), [[1, 5, 4]]),
    "computed-indices": (
        lambda x, i: tf.gather(x, index_from(i, 4), axis=1, batch_dims=1),
        [[2, 4, 3], [2, 5]],
    ),
}


@pytest.mark.parametrize("case", BATCH_GATHER)
def test_gather_batch_dims(tfl, case):
    fn, specs = BATCH_GATHER[case]
    path = tfl.function(fn, *specs)
    from tfl_rebuild.tflite.reader import read_model

    assert any(
        o.options.get("batch_dims") for o in read_model(str(path)).main.operators if o.opcode == "GATHER"
    )
    tfl.check(path, "GATHER")


GATHER_ND = {
    "full-index": (lambda x: tf.gather_nd(x, [[0, 1, 2], [1, 3, 0]]), [[2, 4, 3]]),
    "row-index": (lambda x: tf.gather_nd(x, [[0, 1], [1, 2], [1, 1]]), [[2, 4, 3]]),
    "batched-index": (lambda x: tf.gather_nd(x, [[[1], [0]], [[1], [1]]]), [[2, 4, 3]]),
    "table-lookup": (
        lambda i: tf.gather_nd(
            np.random.default_rng(3).normal(size=(5, 6, 2)).astype(np.float32),
            tf.stack([index_from(i[:, 0], 5), index_from(i[:, 1], 6)], axis=-1),
        ),
        [[4, 2]],
    ),
    "computed-indices": (
        lambda x, i: tf.gather_nd(x, tf.stack([index_from(i[:, 0], 2), index_from(i[:, 1], 4)], -1)),
        [[2, 4, 3], [5, 2]],
    ),
}


@pytest.mark.parametrize("case", GATHER_ND)
def test_gather_nd(tfl, case):
    fn, specs = GATHER_ND[case]
    tfl.check(tfl.function(fn, *specs), "GATHER_ND")


PACK_CONST = {
    "const-second": (lambda x: tf.stack([x, tf.constant([[1.0, 2.0, 3.0]])], axis=1)),
    "const-first-last-axis": (lambda x: tf.stack([tf.constant([[1.0, 2.0, 3.0]]), x * 2.0, x], axis=-1)),
    "const-batch-axis": (lambda x: tf.stack([x, tf.constant([[-1.0, 0.5, 4.0]])], axis=0)),
}


@pytest.mark.parametrize("case", PACK_CONST)
def test_pack_with_constants(tfl, case):
    tfl.check(tfl.function(PACK_CONST[case], [1, 3]), "PACK")


@pytest.mark.parametrize(
    "axes", [[1], [2], [1, 2], [0, 1], [-1]], ids=["axis-1", "axis-2", "two-axes", "batch-and-1", "last"]
)
def test_reverse_v2(tfl, axes):
    tfl.check(tfl.function(lambda x: tf.reverse(x, axes), [2, 3, 4]), "REVERSE_V2")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("exclusive", [False, True], ids=["inclusive", "exclusive"])
@pytest.mark.parametrize("axis", [1, 2], ids=["axis-1", "axis-2"])
def test_cumsum(tfl, axis, exclusive, reverse):
    fn = lambda x: tf.cumsum(x, axis=axis, exclusive=exclusive, reverse=reverse)  # noqa: E731
    tfl.check(tfl.function(fn, [2, 3, 4]), "CUMSUM")


FILL = {
    "computed-value": (lambda x: tf.fill([1, 3], tf.reduce_sum(x)), [1, 4]),
    "shape-of-dynamic-batch": (lambda x: tf.fill(tf.shape(x), 2.0) * x, [None, 4]),
}


@pytest.mark.parametrize("case", FILL)
def test_fill(tfl, case):
    fn, shape = FILL[case]
    tfl.check(tfl.function(fn, shape), "FILL")


def test_zeros_like(tfl):
    # Only a dynamic shape keeps the op (a static one folds into a constant).
    tfl.check(tfl.function(lambda x: tf.concat([tf.zeros_like(x), x], 1), [None, 3]), "ZEROS_LIKE")


def test_ones_like_as_broadcast(tfl):
    # tf.ones_like of a dynamic-batch input: BROADCAST_TO(1, SHAPE(x)), folded into a constant.
    tfl.check(tfl.function(lambda x: tf.concat([tf.ones_like(x), x], 1), [None, 3]), "BROADCAST_TO")


def test_range_of_dynamic_length(tfl):
    # The length comes from a dynamic batch axis: folded with the rebuild's fixed batch.
    fn = lambda x: x * tf.reshape(tf.cast(tf.range(tf.shape(x)[0] + 3), tf.float32), [1, 4])  # noqa: E731
    tfl.check(tfl.function(fn, [None, 4]), "RANGE")


# name -> (depth, on, off, axis, output dtype)
ONE_HOT = {
    "last-axis": (5, 1.0, 0.0, -1, tf.float32),
    "axis-1": (4, 2.5, -1.0, 1, tf.float32),
    "axis-0": (3, 1.0, 0.0, 0, tf.float32),
    "int32": (6, 7, 1, -1, tf.int32),
}


@pytest.mark.parametrize("case", ONE_HOT)
def test_one_hot(tfl, case):
    depth, on, off, axis, dtype = ONE_HOT[case]
    # indices reach depth (one past the end): TFLite gives an all-off row there
    fn = lambda x: tf.one_hot(index_from(x, depth + 1), depth, on, off, axis=axis, dtype=dtype)  # noqa: E731
    tfl.check(tfl.function(fn, [2, 3]), "ONE_HOT")


@pytest.mark.parametrize("k, shape", [(1, [1, 8]), (3, [2, 8]), (4, [2, 3, 5])], ids=["k1", "k3", "k4-3d"])
def test_topk_v2(tfl, k, shape):
    tfl.check(tfl.function(lambda x: tf.math.top_k(x, k), shape), "TOPK_V2")


def test_embedding_lookup(tfl):
    from flatbuf import Op, T, build_model

    table = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    blob = build_model(
        [T("ids", [3], "int32"), T("table", [10, 4], data=table), T("y", [3, 4])],
        [Op("EMBEDDING_LOOKUP", [0, 1], [2])],
        inputs=[0],
        outputs=[2],
    )
    tfl.check(tfl.crafted(blob), "EMBEDDING_LOOKUP")


# RANK: TF folds tf.rank of a ranked tensor, so the op is crafted (as a model output, where it
# stays an op; read by another op, passes.fold folds it).
def _rank_model(read: bool) -> bytes:
    from flatbuf import Op, T, build_model

    tensors = [T("x", [2, 3, 4]), T("rank", [], "int32")]
    ops = [Op("RANK", [0], [1], options_type="RankOptions")]
    outputs = [1]
    if read:  # y = x * rank
        tensors += [T("rank_f", [], "float32"), T("y", [2, 3, 4])]
        ops += [Op("CAST", [1], [2]), Op("MUL", [0, 2], [3], options={"fused_activation_function": "NONE"})]
        outputs = [3]
    return build_model(tensors, ops, inputs=[0], outputs=outputs)


def test_rank_output(tfl):
    # the output is the rank whatever the input: nothing to be input-sensitive about
    tfl.check(tfl.crafted(_rank_model(False)), "RANK", input_sensitive=False)


def test_rank_folded(tfl):
    tfl.check(tfl.crafted(_rank_model(True)), "RANK")


def _where_gather_model() -> bytes:
    # WHERE of a constant condition (folded), whose rows GATHER_ND reads from the input.
    from flatbuf import Op, T, build_model

    cond = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]], bool)
    n = int(cond.sum())
    tensors = [
        T("x", [4, 3]),
        T("cond", [4, 3], "bool", data=cond),
        T("coords", [1, 2], "int64", shape_signature=[-1, 2]),
        T("y", [1], shape_signature=[-1]),
    ]
    ops = [Op("WHERE", [1], [2], options_type="WhereOptions"), Op("GATHER_ND", [0, 2], [3])]
    assert n == 5
    return build_model(tensors, ops, inputs=[0], outputs=[3])


def test_where_of_a_constant_folds(tfl):
    tfl.check(tfl.crafted(_where_gather_model()), "WHERE")


def test_where_refused_naming_the_tensor(tfl, tmp_path):
    from click.testing import CliRunner

    from tfl_rebuild.cli import main

    path = tfl.function(lambda x: tf.cast(tf.where(x > 0.0), tf.float32), [4, 3])
    result = CliRunner().invoke(
        main,
        ["keras", str(path), "-o", str(tmp_path / "out")],
        env={"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "WHERE op" in lines[0] and "one row per true element of 'Greater'" in lines[0], lines[0]


BUCKETIZE = {
    "float": (lambda x: tf.raw_ops.Bucketize(input=x, boundaries=[-0.5, 0.0, 0.3]), [2, 4]),
    "int-input": (
        lambda x: tf.raw_ops.Bucketize(input=x, boundaries=[-50.0, -0.5, 0.0, 7.0, 60.0]),
        ([3, 4], tf.int32),
    ),
    "on-the-boundaries": (
        lambda x: tf.raw_ops.Bucketize(input=tf.round(x * 4.0) / 4.0, boundaries=[-0.5, 0.0, 0.25]),
        [2, 6],
    ),
}


@pytest.mark.parametrize("case", BUCKETIZE)
def test_bucketize(tfl, case):
    fn, spec = BUCKETIZE[case]
    tfl.check(tfl.function(fn, spec), "BUCKETIZE")


def test_bucketize_core_ml(tfl):
    tfl.core_ml(tfl.function(*BUCKETIZE["float"]), "BUCKETIZE")


def _refusal(tfl, fn, spec, op):
    from tfl_rebuild.errors import UnsupportedOpError
    from tfl_rebuild.rebuild.ops import lookup
    from tfl_rebuild.rebuild.passes.pipeline import prepare
    from tfl_rebuild.tflite.reader import read_model

    model = read_model(str(tfl.function(fn, spec)))
    ctx, ops = prepare(model)
    found = next(o for o in ops if o.opcode == op)
    with pytest.raises(UnsupportedOpError) as info:  # the registry refuses it (registry.refuse)
        lookup(found, model.main)(found, ctx)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_unique_refused(tfl):
    text = _refusal(tfl, lambda x: tf.unique(x)[0], [6], "UNIQUE")
    assert "UNIQUE op 0:" in text and "one element per distinct value of 'serving_default_x:0'" in text, text


@pytest.mark.parametrize("op", ["RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL", "MULTINOMIAL"])
def test_random_refused(tfl, op):
    draw = {
        "RANDOM_UNIFORM": lambda x: x + tf.random.uniform([2, 4]),
        "RANDOM_STANDARD_NORMAL": lambda x: x + tf.random.normal([2, 4]),
        "MULTINOMIAL": lambda x: tf.cast(tf.random.categorical(x, 3), tf.float32),
    }[op]
    text = _refusal(tfl, draw, [2, 4], op)
    assert f"{op} op" in text and "drawn at random by the runtime's own generator" in text, text


def test_broadcast_of_a_quantized_constant_on_its_grid_folds(tfl):
    """An int8 ViT broadcasts its class token (an int8 constant) with the token's own scale: folded
    into a constant, as in the float model. Unfolded, no converter took the constant: 'used before
    it is computed'."""
    q = {"scale": [0.05], "zero_point": [-4]}
    token = np.random.default_rng(2).integers(-100, 100, (1, 1, 4)).astype(np.int8)
    blob = build_model(
        tensors=[
            T("x", [1, 3, 4], "int8", **q),
            T("token", [1, 1, 4], "int8", data=token, **q),
            T("shape", [3], "int32", data=np.array([1, 3, 4], np.int32)),
            T("tokens", [1, 3, 4], "int8", **q),
            T("y", [1, 3, 4], "int8", scale=[0.1], zero_point=[0]),
        ],
        ops=[
            Op("BROADCAST_TO", [1, 2], [3], version=2),
            Op(
                "ADD",
                [0, 3],
                [4],
                options_type="AddOptions",
                options={"fused_activation_function": "NONE"},
                version=2,
            ),
        ],
        inputs=[0],
        outputs=[4],
    )
    tfl.check(tfl.crafted(blob), "BROADCAST_TO")
